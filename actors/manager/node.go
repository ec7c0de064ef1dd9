package manager

import (
	"bytes"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// nodeActor is the leader's view of one node: it pushes the node its full
// assignment set whenever one of its tasks changes (and periodically, so a
// lost push heals), takes its heartbeats and status reports, and marks it
// down when heartbeats stop. A new leader gives every node a fresh grace
// period instead of trusting timers from before the election.
type nodeActor struct {
	cfg        LeaderConfig
	id         string
	sub        *eventstream.Subscription
	cancel     []scheduler.CancelFunc
	lastBeat   time.Time
	pushQueued bool
	writing    bool
	// pushed is what the last push carried, less the task statuses the
	// node itself reported: echoing those back costs the node work while
	// its containers start, and tells it nothing.
	pushed []byte
	sent   uint64 // index of the last push
}

func newNodeActor(cfg LeaderConfig, id string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &nodeActor{cfg: cfg, id: id} }, events.WithLifecycle)
}

// relevant: every node programs every service's endpoints and every mesh
// peer, so any service, node or task change may matter to it.
func (a *nodeActor) relevant(sc *messages.StateChanged) bool {
	return len(sc.Changes) > 0
}

func (a *nodeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.lastBeat = time.Now()
		a.sub = subscribeState(ctx, a.relevant)
		s := scheduler.NewTimerScheduler(ctx)
		a.cancel = append(a.cancel,
			s.SendRepeatedly(a.cfg.ResyncEvery, a.cfg.ResyncEvery, ctx.Self(), &tick{kind: "resync"}),
			s.SendRepeatedly(time.Second, time.Second, ctx.Self(), &tick{kind: "down"}))
		a.push(ctx, true)
	case *actor.Stopping, *actor.Restarting:
		unsubscribe(ctx, a.sub)
		for _, c := range a.cancel {
			c()
		}
		a.cancel = nil
	case *messages.StateChanged:
		if !a.pushQueued {
			a.pushQueued = true
			ctx.Send(ctx.Self(), &reconcileNow{})
		}
	case *reconcileNow:
		a.pushQueued = false
		a.push(ctx, false)
	case *pushAtLeast:
		if a.sent < m.index {
			a.push(ctx, true)
		}
	case *tick:
		switch m.kind {
		case "resync":
			a.push(ctx, true)
		case "down":
			a.checkDown(ctx)
		}
	case *messages.Heartbeat:
		a.lastBeat = time.Now()
		if ctx.Sender() != nil {
			ctx.Respond(&messages.Heartbeat{NodeId: a.id, UnixNano: a.lastBeat.UnixNano()})
		}
		if n := a.cfg.Store.State.Node(a.id); n != nil && n.GetStatus().GetState() != messages.NodeState_NODE_STATE_READY {
			a.setState(ctx, n, messages.NodeState_NODE_STATE_READY, "heartbeat resumed")
		}
	case *messages.TaskStatusReport:
		a.lastBeat = time.Now()
		// A node reports only for tasks assigned to it.
		var mine []*messages.TaskStatusUpdate
		n := a.cfg.Store.State.Node(a.id)
		for _, u := range m.Updates {
			t := a.cfg.Store.State.Task(u.TaskId)
			if t == nil || t.NodeId != a.id {
				continue
			}
			if err := checkStatus(n, u.Status); err != nil {
				a.cfg.Log.Warn("refused a task status from its node", zap.String("node", a.id), zap.String("task", u.TaskId), zap.Error(err))
				continue
			}
			mine = append(mine, u)
		}
		if len(mine) > 0 {
			ctx.Request(storePID(ctx), &messages.Propose{Command: &messages.Command{Op: &messages.Command_UpdateTaskStatuses{UpdateTaskStatuses: &messages.UpdateTaskStatuses{Updates: mine}}}})
		}
	case *messages.CommandResult:
		if m.Error != nil {
			a.cfg.Log.Warn("node actor write", zap.String("node", a.id), zap.String("error", m.Error.Message))
		}
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	}
}

// push sends the node every task it must know about: those it must run and
// those it must still stop. Anything else it runs is not ours and goes.
// Unless always, a push that would change nothing for the node is skipped;
// the periodic resync sends in full regardless.
func (a *nodeActor) push(ctx actor.Context, always bool) {
	st := a.cfg.Store.State
	n := st.Node(a.id)
	if n == nil || n.Description.GetAddr() == "" {
		return
	}
	as := &messages.Assignments{NodeId: a.id, Index: st.Index(), Managers: managerActorAddrs(st), Node: n,
		Services: ServiceNetworks(st), Peers: MeshPeers(st)}
	for _, t := range st.Tasks(store.TaskFilter{NodeID: a.id}) {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING || !terminal(t.GetStatus().GetState()) {
			as.Tasks = append(as.Tasks, t)
		}
	}
	sig := pushSig(as)
	if !always && bytes.Equal(sig, a.pushed) {
		return
	}
	// gRPC drops a frame over the limit without a word to the sender: say
	// so here, where someone can act on it, instead.
	if size := proto.Size(as); size > remoting.MaxMessageBytes-64<<10 {
		a.cfg.Log.Error("assignment set too large to send: the node keeps its last one", zap.String("node", a.id),
			zap.Int("bytes", size), zap.Int("limit", remoting.MaxMessageBytes), zap.Int("tasks", len(as.Tasks)), zap.Int("services", len(as.Services)))
		return
	}
	a.pushed, a.sent = sig, as.Index
	ctx.Send(actor.NewPID(n.Description.Addr, NameAgent), as)
}

// pushSig is what a push means to its node: everything but the raft index
// and the tasks' own statuses.
func pushSig(as *messages.Assignments) []byte {
	rest := &messages.Assignments{NodeId: as.NodeId, Managers: as.Managers, Node: as.Node, Services: as.Services, Peers: as.Peers}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rest)
	if err != nil {
		return nil // never equal to a real signature: push
	}
	for _, t := range as.Tasks {
		b = fmt.Appendf(b, "|%s/%d/%d/%d/%s", t.Id, t.Epoch, t.DesiredState, t.SpecVersion, t.NodeId)
	}
	return b
}

func (a *nodeActor) checkDown(ctx actor.Context) {
	if a.writing || time.Since(a.lastBeat) < a.cfg.NodeDownAfter {
		return
	}
	n := a.cfg.Store.State.Node(a.id)
	if n == nil || n.GetStatus().GetState() != messages.NodeState_NODE_STATE_READY {
		return
	}
	a.setState(ctx, n, messages.NodeState_NODE_STATE_DOWN, fmt.Sprintf("no heartbeat for %s", time.Since(a.lastBeat).Round(time.Second)))
}

func (a *nodeActor) setState(ctx actor.Context, n *messages.Node, s messages.NodeState, why string) {
	n.Status = &messages.NodeStatus{State: s, Message: why, LastHeartbeatUnixNano: a.lastBeat.UnixNano()}
	a.writing = true
	f := ctx.RequestFuture(storePID(ctx), &messages.Propose{Command: &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n, ExpectedVersion: n.Meta.GetVersion()}}}}, proposeTimeout+time.Second)
	ctx.ReenterAfter(f, func(any, error) { a.writing = false })
}

// Healthy reports whether a task should receive traffic: running, with an
// address, and healthy if it has a health check.
func Healthy(t *messages.Task) bool {
	st := t.GetStatus()
	if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING || st.GetState() != messages.TaskState_TASK_STATE_RUNNING || st.GetIp() == "" {
		return false
	}
	if t.Spec.GetHealthCheck().GetKind() != messages.HealthCheck_KIND_NONE {
		return st.GetHealth() == messages.HealthState_HEALTH_STATE_HEALTHY
	}
	return true
}

// ServiceNetworks is every service's VIP, ports and healthy endpoints, as
// every node programs them. Derived from replicated state only, and pushed
// in full, so no lost message can leave a node with stale backends.
func ServiceNetworks(st *store.State) []*messages.ServiceNetwork {
	var out []*messages.ServiceNetwork
	for _, v := range st.Services() {
		sn := &messages.ServiceNetwork{Name: v.Spec.GetName(), Vip: v.Vip, Ports: v.Spec.GetPorts()}
		for _, t := range st.Tasks(store.TaskFilter{ServiceID: v.Id}) {
			// An address outside its node's subnet never becomes a backend,
			// whatever the state holds (checkStatus keeps new ones out).
			if Healthy(t) && TaskAddrOK(st.Node(t.NodeId).GetSubnet(), t.Status.Ip) == nil {
				sn.Endpoints = append(sn.Endpoints, &messages.NetEndpoint{Ip: t.Status.Ip, Weight: 1})
			}
		}
		out = append(out, sn)
	}
	return out
}

// MeshPeers is every node's WireGuard identity and task subnet.
func MeshPeers(st *store.State) []*messages.MeshPeer {
	var out []*messages.MeshPeer
	for _, n := range st.Nodes() {
		if k := n.Description.GetWgPublicKey(); k != "" && n.Subnet != "" {
			out = append(out, &messages.MeshPeer{NodeId: n.Id, PublicKey: k, Endpoint: n.Description.GetWgEndpoint(), Subnet: n.Subnet, Format: messages.MeshPeerFormat})
		}
	}
	return out
}
