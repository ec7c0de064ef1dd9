package store

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// TaskSubnetPool is the range node task subnets are carved from, one /24 each.
var TaskSubnetPool = netip.MustParsePrefix("10.88.0.0/16")

// VIPPool is the range service virtual IPs come from.
var VIPPool = netip.MustParsePrefix("10.89.0.0/16")

// FSM applies committed commands to State. OnChange, if set, is called after
// every apply and restore, on raft's FSM goroutine; it must not block.
type FSM struct {
	State    *State
	OnChange func(*messages.StateChanged)
}

var _ raft.FSM = (*FSM)(nil)

// Apply implements raft.FSM. It returns a *messages.CommandResult.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return &messages.CommandResult{Index: l.Index}
	}
	cmd := &messages.Command{}
	if err := proto.Unmarshal(l.Data, cmd); err != nil {
		// A command that does not decode was written by an incompatible
		// version; refusing it keeps the state consistent on every manager.
		return &messages.CommandResult{Index: l.Index, Error: errorf(messages.ErrorCode_ERROR_CODE_INVALID, "decode command at index %d: %v", l.Index, err)}
	}
	res, changes := f.State.Apply(l.Index, cmd)
	if f.OnChange != nil && len(changes) > 0 {
		f.OnChange(&messages.StateChanged{Index: l.Index, Changes: changes})
	}
	return res
}

// Snapshot implements raft.FSM.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	data, err := proto.Marshal(f.State.Snapshot())
	if err != nil {
		return nil, fmt.Errorf("marshal state snapshot: %w", err)
	}
	return &fsmSnapshot{data: data}, nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read state snapshot: %w", err)
	}
	snap := &messages.StateSnapshot{}
	if err := proto.Unmarshal(data, snap); err != nil {
		return fmt.Errorf("decode state snapshot: %w", err)
	}
	f.State.restore(snap)
	if f.OnChange != nil {
		f.OnChange(&messages.StateChanged{Index: snap.Index, Restored: true})
	}
	return nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func errorf(code messages.ErrorCode, format string, a ...any) *messages.Error {
	return &messages.Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

func meta(old *messages.Meta, index uint64, now int64) *messages.Meta {
	m := &messages.Meta{Version: index, CreatedUnixNano: now, UpdatedUnixNano: now}
	if old != nil && old.CreatedUnixNano != 0 {
		m.CreatedUnixNano = old.CreatedUnixNano
	}
	return m
}

// Apply applies one command at index and returns its result and the changes
// it made. It is deterministic: the same command on the same state gives the
// same result on every manager (times come from the command, not the clock).
func (s *State) Apply(index uint64, cmd *messages.Command) (*messages.CommandResult, []*messages.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := cmd.Op.(*messages.Command_AppendAudit); ok {
		return s.appendAudit(index, a.AppendAudit, cmd.UnixNano), nil // not a cluster change: see appendAudit
	}
	if index > s.index {
		s.index = index
	}
	now := cmd.UnixNano
	res := &messages.CommandResult{Index: index}
	var changes []*messages.Change
	fail := func(e *messages.Error) (*messages.CommandResult, []*messages.Change) {
		res.Error = e
		return res, nil
	}
	switch op := cmd.Op.(type) {
	case *messages.Command_SetClusterInfo:
		s.cluster = clone(op.SetClusterInfo.Info)

	case *messages.Command_CreateService:
		v := clone(op.CreateService.Service)
		if v.GetId() == "" || v.GetSpec().GetName() == "" {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_INVALID, "service needs an id and a name"))
		}
		if _, ok := s.byName[v.Spec.Name]; ok {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "service %q already exists: pick another name, or use `warren service update %s`", v.Spec.Name, v.Spec.Name))
		}
		if _, ok := s.services[v.Id]; ok {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "service id %s already exists", v.Id))
		}
		v.Meta = meta(nil, index, now)
		v.SpecVersion = 1
		vip, err := s.allocVIP()
		if err != nil {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "%v", err))
		}
		v.Vip = vip
		s.putService(v)
		res.Ids = []string{v.Id}
		changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_CREATE, Object: &messages.Change_Service{Service: clone(v)}})

	case *messages.Command_UpdateService:
		u := op.UpdateService
		old, ok := s.services[u.ServiceId]
		if !ok {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "service %s not found", u.ServiceId))
		}
		if u.ExpectedVersion != 0 && u.ExpectedVersion != old.Meta.GetVersion() {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_CONFLICT, "service %s changed since version %d (now %d): read it again and retry", old.Spec.GetName(), u.ExpectedVersion, old.Meta.GetVersion()))
		}
		if u.Spec.GetName() != old.Spec.GetName() {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_INVALID, "a service cannot be renamed (%q to %q): create a new one", old.Spec.GetName(), u.Spec.GetName()))
		}
		v := clone(old)
		// previous_spec is what a rollback returns to: the last spec that
		// ran other containers. Scaling, or changing how updates roll,
		// keeps it (and keeps a deployment in flight rolling between the
		// same two templates).
		if !messages.TemplateEqual(old.Spec, u.Spec) {
			v.PreviousSpec = old.Spec
		}
		v.Spec = clone(u.Spec)
		v.SpecVersion++
		v.Meta = meta(old.Meta, index, now)
		if d := u.Deployment; d != nil {
			// The spec change and the deployment's first state are one
			// commit, so a crash can never leave one without the other.
			v.Deployment = clone(d)
			v.Deployment.FromVersion, v.Deployment.ToVersion = old.SpecVersion, v.SpecVersion
			v.Deployment.Index = index
			v.Deployment.StartedUnixNano, v.Deployment.StateSinceUnixNano, v.Deployment.FinishedUnixNano = now, now, 0
			v.TrafficWeights = u.TrafficWeights
		}
		s.putService(v)
		res.Ids = []string{v.Id}
		changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: &messages.Change_Service{Service: clone(v)}})

	case *messages.Command_SetDeployment:
		u := op.SetDeployment
		old, ok := s.services[u.ServiceId]
		if !ok {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "service %s not found", u.ServiceId))
		}
		if u.Deployment == nil || old.Deployment == nil || u.Deployment.Id != old.Deployment.Id {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_CONFLICT, "service %s has no deployment %s: it was superseded", old.Spec.GetName(), u.Deployment.GetId()))
		}
		if u.ExpectedIndex != old.Deployment.Index {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_CONFLICT, "the deployment of service %s moved on since index %d (now %d, %s): read it again and retry",
				old.Spec.GetName(), u.ExpectedIndex, old.Deployment.Index, old.Deployment.State))
		}
		v := clone(old)
		d := clone(u.Deployment)
		d.FromVersion, d.ToVersion, d.StartedUnixNano = old.Deployment.FromVersion, old.Deployment.ToVersion, old.Deployment.StartedUnixNano
		d.Index = index
		d.StateSinceUnixNano = old.Deployment.StateSinceUnixNano
		if d.State != old.Deployment.State {
			d.StateSinceUnixNano = now
		}
		if messages.DeploymentFinished(d.State) && d.FinishedUnixNano == 0 {
			d.FinishedUnixNano = now
		}
		v.Deployment = d
		v.TrafficWeights = u.TrafficWeights
		if u.RestorePrevious && old.PreviousSpec != nil {
			v.Spec, v.PreviousSpec = clone(old.PreviousSpec), clone(old.Spec)
			v.SpecVersion++
		}
		v.Meta = meta(old.Meta, index, now)
		s.putService(v)
		res.Ids = []string{v.Id}
		changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: &messages.Change_Service{Service: clone(v)}})

	case *messages.Command_DeleteService:
		id := op.DeleteService.ServiceId
		old, ok := s.services[id]
		if !ok {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "service %s not found", id))
		}
		s.delService(id)
		res.Ids = []string{id}
		changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_DELETE, Object: &messages.Change_Service{Service: clone(old)}})
		// Its tasks stay until their workers confirm they stopped; marking
		// them here makes the stop part of the same commit as the delete.
		for tid := range s.bySvc[id] {
			t := clone(s.tasks[tid])
			if t.DesiredState == messages.TaskState_TASK_STATE_SHUTDOWN {
				continue
			}
			t.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN
			t.Meta = meta(t.Meta, index, now)
			s.putTask(t)
			changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: &messages.Change_Task{Task: clone(t)}})
		}

	case *messages.Command_UpsertNode:
		n := clone(op.UpsertNode.Node)
		if n.GetId() == "" {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_INVALID, "node needs an id"))
		}
		if s.removed[n.Id] {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "node %s was removed from the cluster: to join again, clear its data dir and run `warren cluster join` with a token", n.Id))
		}
		old, exists := s.nodes[n.Id]
		if exists && op.UpsertNode.ExpectedVersion != 0 && op.UpsertNode.ExpectedVersion != old.Meta.GetVersion() {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_CONFLICT, "node %s changed since version %d: read it again and retry", n.Id, op.UpsertNode.ExpectedVersion))
		}
		changeOp := messages.ChangeOp_CHANGE_OP_CREATE
		if exists {
			changeOp = messages.ChangeOp_CHANGE_OP_UPDATE
			n.Subnet = old.Subnet // allocated once, for the node's life
			n.Meta = meta(old.Meta, index, now)
		} else {
			n.Meta = meta(nil, index, now)
			sub, err := s.allocSubnet()
			if err != nil {
				return fail(errorf(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "%v", err))
			}
			n.Subnet = sub
		}
		s.nodes[n.Id] = n
		res.Ids = []string{n.Id}
		changes = append(changes, &messages.Change{Op: changeOp, Object: &messages.Change_Node{Node: clone(n)}})

	case *messages.Command_RemoveNode:
		old, ok := s.nodes[op.RemoveNode.NodeId]
		if !ok {
			return fail(errorf(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "node %s not found", op.RemoveNode.NodeId))
		}
		delete(s.nodes, old.Id)
		s.removed[old.Id] = true
		res.Ids = []string{old.Id}
		changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_DELETE, Object: &messages.Change_Node{Node: clone(old)}})

	case *messages.Command_CreateTasks:
		for _, t := range op.CreateTasks.Tasks {
			if t.GetId() == "" {
				return fail(errorf(messages.ErrorCode_ERROR_CODE_INVALID, "task needs an id"))
			}
			if _, ok := s.tasks[t.Id]; ok {
				return fail(errorf(messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "task %s already exists", t.Id))
			}
		}
		for _, t := range op.CreateTasks.Tasks {
			t = clone(t)
			t.Meta = meta(nil, index, now)
			if t.Status == nil {
				t.Status = &messages.TaskStatus{}
			}
			t.Status.TimestampUnixNano = now
			s.putTask(t)
			res.Ids = append(res.Ids, t.Id)
			changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_CREATE, Object: &messages.Change_Task{Task: clone(t)}})
		}

	case *messages.Command_UpdateTasks:
		for _, u := range op.UpdateTasks.Tasks {
			old, ok := s.tasks[u.GetId()]
			if !ok {
				continue // removed meanwhile: nothing to update
			}
			if v := u.GetMeta().GetVersion(); v != 0 && v != old.Meta.GetVersion() {
				// Written meanwhile (the scheduler placing it while its
				// service stops it, say): the writer decides again from
				// the new state rather than undo the other write.
				continue
			}
			t := clone(old)
			t.NodeId = u.NodeId
			t.DesiredState = u.DesiredState
			t.Epoch = u.Epoch
			if u.Spec != nil {
				t.Spec = clone(u.Spec)
				t.SpecVersion = u.SpecVersion
			}
			if u.Status != nil && u.Status.State == messages.TaskState_TASK_STATE_ASSIGNED {
				t.Status = clone(u.Status)
			}
			t.Meta = meta(old.Meta, index, now)
			s.putTask(t)
			res.Ids = append(res.Ids, t.Id)
			changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: &messages.Change_Task{Task: clone(t)}})
		}

	case *messages.Command_UpdateTaskStatuses:
		for _, u := range op.UpdateTaskStatuses.Updates {
			old, ok := s.tasks[u.GetTaskId()]
			if !ok || u.Epoch < old.Epoch {
				continue // fenced: a report from an older assignment
			}
			if proto.Equal(old.Status, u.Status) {
				continue
			}
			t := clone(old)
			t.Status = clone(u.Status)
			t.Meta = meta(old.Meta, index, now)
			s.putTask(t)
			res.Ids = append(res.Ids, t.Id)
			changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: &messages.Change_Task{Task: clone(t)}})
		}

	case *messages.Command_RemoveTasks:
		for _, id := range op.RemoveTasks.TaskIds {
			old, ok := s.tasks[id]
			if !ok {
				continue
			}
			s.delTask(id)
			res.Ids = append(res.Ids, id)
			changes = append(changes, &messages.Change{Op: messages.ChangeOp_CHANGE_OP_DELETE, Object: &messages.Change_Task{Task: clone(old)}})
		}

	default:
		return fail(errorf(messages.ErrorCode_ERROR_CODE_INVALID, "unknown command %T: is this manager older than the cluster? upgrade it", cmd.Op))
	}
	return res, changes
}

// allocSubnet returns the lowest free /24 of TaskSubnetPool (10.88.N.0/24 with
// N from 1), so allocation is deterministic across managers.
func (s *State) allocSubnet() (string, error) {
	used := map[string]bool{}
	for _, n := range s.nodes {
		used[n.Subnet] = true
	}
	base := TaskSubnetPool.Addr().As4()
	for i := 1; i < 256; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], byte(i), 0}), 24).String()
		if !used[p] {
			return p, nil
		}
	}
	return "", fmt.Errorf("no free task subnet left in %s (255 nodes): remove nodes that left with `warren node rm`", TaskSubnetPool)
}

// allocVIP returns the lowest free address of VIPPool (from .0.2), so
// allocation is deterministic across managers; a deleted service's VIP is
// free again.
func (s *State) allocVIP() (string, error) {
	used := map[string]bool{}
	for _, v := range s.services {
		used[v.Vip] = true
	}
	a := VIPPool.Addr().Next().Next()
	for ; VIPPool.Contains(a); a = a.Next() {
		if b := a.As4(); b[3] == 0 || b[3] == 255 {
			continue
		}
		if !used[a.String()] {
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("the service VIP pool %s is exhausted (%d services): delete services you no longer need", VIPPool, len(s.services))
}
