package manager

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/warrenorch/warren/messages"
)

// Plan is what a service actor proposes to converge a service.
type Plan struct {
	Create   []*messages.Task // new tasks, pending placement
	Shutdown []*messages.Task // tasks to stop (desired state SHUTDOWN)
	Remove   []string         // finished tasks beyond the history limit
	// RetryAfter, if non-zero, asks to reconcile again then (a rejected
	// task waits out its restart delay before it is replaced).
	RetryAfter time.Duration
}

// TaskHistory is how many finished tasks a slot keeps for `service ps -a`.
const TaskHistory = 3

func terminal(s messages.TaskState) bool {
	switch s {
	case messages.TaskState_TASK_STATE_COMPLETE, messages.TaskState_TASK_STATE_SHUTDOWN, messages.TaskState_TASK_STATE_FAILED,
		messages.TaskState_TASK_STATE_REJECTED, messages.TaskState_TASK_STATE_ORPHANED:
		return true
	}
	return false
}

// needsReplacement: the worker restarts containers itself by the restart
// policy; the manager replaces a task only when no worker can run it any
// more: rejected (could not start at all) or orphaned (its node is gone).
func needsReplacement(t *messages.Task) bool {
	switch t.GetStatus().GetState() {
	case messages.TaskState_TASK_STATE_REJECTED, messages.TaskState_TASK_STATE_ORPHANED:
		return true
	}
	return false
}

func restartDelay(s *messages.ServiceSpec) time.Duration {
	if d := s.GetRestartPolicy().GetDelayMs(); d > 0 {
		return time.Duration(d) * time.Millisecond
	}
	return 5 * time.Second
}

// NewTask builds a pending task for slot (replicated) or node (global),
// running the service's spec.
func NewTask(svc *messages.Service, slot uint64, nodeID string) *messages.Task {
	return newTaskFor(svc, side{spec: svc.Spec, version: svc.SpecVersion}, slot, nodeID)
}

// newTaskFor builds a pending task for one side of a slot.
func newTaskFor(svc *messages.Service, sd side, slot uint64, nodeID string) *messages.Task {
	t := &messages.Task{
		Id: messages.NewID(), ServiceId: svc.Id, ServiceName: svc.Spec.Name, Slot: slot, NodeId: nodeID,
		Spec: sd.spec, SpecVersion: sd.version, Side: sd.name, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
		Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING, Message: "waiting for placement"},
	}
	if nodeID != "" { // global tasks are placed by construction
		t.Epoch = 1
		t.Status = &messages.TaskStatus{State: messages.TaskState_TASK_STATE_ASSIGNED, Message: "assigned to node " + nodeID}
	}
	return t
}

// nodeLost says why a task's node can no longer run it ("" if it can):
// the node was removed, is down, or is being drained.
func nodeLost(t *messages.Task, byID map[string]*messages.Node) string {
	if t.NodeId == "" {
		return ""
	}
	n := byID[t.NodeId]
	switch {
	case n == nil:
		return "node removed"
	case n.GetStatus().GetState() == messages.NodeState_NODE_STATE_DOWN:
		return "node down"
	case n.GetSpec().GetAvailability() == messages.NodeAvailability_NODE_AVAILABILITY_DRAIN:
		return "node drained"
	}
	return ""
}

func startFirst(s *messages.ServiceSpec) bool {
	return s.GetUpdateConfig().GetOrder() == messages.UpdateOrder_UPDATE_ORDER_START_FIRST
}

// Reconcile compares a service with its tasks and returns what to change. It
// is a pure function of its inputs: the service, its tasks, every node of
// the cluster, and now (for restart delays).
//
// Replicated tasks are replaced when no worker can run them any more
// (rejected, or their node is down, drained or removed) or when the spec's
// template changed. With update order start-first the old task keeps
// running until its replacement runs; otherwise it is stopped first. A
// global service runs one task per eligible node; its tasks on a down or
// paused node are kept (they come back with the node).
func Reconcile(svc *messages.Service, tasks []*messages.Task, nodes []*messages.Node, now time.Time) Plan {
	var p Plan
	global := svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL
	byID := map[string]*messages.Node{}
	for _, n := range nodes {
		byID[n.Id] = n
	}
	want := map[uint64]string{} // slot -> node ("" = scheduler places)
	key := func(t *messages.Task) uint64 { return t.Slot }
	if global {
		idx := map[string]uint64{}
		for i, n := range nodes {
			idx[n.Id] = uint64(i + 1)
		}
		for _, n := range eligible(svc, nodes) {
			want[idx[n.Id]] = n.Id
		}
		key = func(t *messages.Task) uint64 {
			n := byID[t.NodeId]
			if n == nil || n.GetSpec().GetAvailability() == messages.NodeAvailability_NODE_AVAILABILITY_DRAIN || !constraintsHold(svc.Spec, n) {
				return 0 // gone from this node for good
			}
			want[idx[n.Id]] = n.Id // keep it on a down or paused node
			return idx[n.Id]
		}
	} else {
		for s := uint64(1); s <= svc.Spec.Replicas+canarySlots(svc); s++ {
			want[s] = ""
		}
	}
	bySlot := map[uint64][]*messages.Task{}
	var finished []*messages.Task
	for _, t := range tasks {
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			if terminal(t.GetStatus().GetState()) {
				finished = append(finished, t)
			}
			continue
		}
		k := key(t)
		bySlot[k] = append(bySlot[k], t)
	}
	shutdown := func(t *messages.Task) {
		t.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN
		p.Shutdown = append(p.Shutdown, t)
	}
	create := func(sd side, slot uint64, old *messages.Task, reason string) {
		nt := newTaskFor(svc, sd, slotNum(svc, slot), want[slot])
		if old != nil {
			nt.Replaces, nt.Reason = old.Id, reason
		}
		p.Create = append(p.Create, nt)
	}
	slots := make([]uint64, 0, len(want)+len(bySlot))
	for s := range want {
		slots = append(slots, s)
	}
	for s := range bySlot {
		if _, ok := want[s]; !ok {
			slots = append(slots, s)
		}
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i] < slots[j] })
	for _, slot := range slots {
		ts := bySlot[slot]
		node, wanted := want[slot]
		if !wanted {
			for _, t := range ts {
				shutdown(t)
			}
			continue
		}
		// Each side the slot wants is served by its newest task running
		// that side's template; every other task of the slot is a
		// leftover. A leftover keeps serving while a start-first
		// replacement is not running yet.
		sort.Slice(ts, func(i, j int) bool { return ts[i].Meta.GetCreatedUnixNano() > ts[j].Meta.GetCreatedUnixNano() })
		sides := wantedSides(svc, slot, node)
		curs := make([]*messages.Task, len(sides))
		used := map[*messages.Task]bool{}
		for i, sd := range sides {
			for _, t := range ts {
				if !used[t] && messages.TemplateEqual(t.Spec, sd.spec) {
					curs[i], used[t] = t, true
					break
				}
			}
		}
		var leftovers []*messages.Task
		for _, t := range ts {
			if !used[t] {
				leftovers = append(leftovers, t)
			}
		}
		pending := false // a side whose task is not running yet
		for i, sd := range sides {
			cur := curs[i]
			if cur == nil {
				var old *messages.Task
				if len(leftovers) > 0 {
					old = leftovers[0]
				}
				create(sd, slot, old, "spec changed")
				pending = true
				continue
			}
			lost := ""
			if !global {
				lost = nodeLost(cur, byID)
			}
			switch {
			case lost != "":
				// A drained node's task may serve until its replacement runs;
				// a down or removed node's task serves nobody.
				if !(lost == "node drained" && startFirst(svc.Spec)) {
					shutdown(cur)
				}
				create(sd, slot, cur, lost)
				pending = true
			case needsReplacement(cur):
				wait := restartDelay(svc.Spec) - now.Sub(time.Unix(0, cur.GetStatus().GetTimestampUnixNano()))
				if wait > 0 {
					if p.RetryAfter == 0 || wait < p.RetryAfter {
						p.RetryAfter = wait
					}
					continue // the slot is taken until the delay ends
				}
				shutdown(cur)
				create(sd, slot, cur, strings.ToLower(strings.TrimPrefix(cur.GetStatus().GetState().String(), "TASK_STATE_")))
			case cur.GetStatus().GetState() != messages.TaskState_TASK_STATE_RUNNING:
				pending = true
			}
		}
		for _, t := range leftovers {
			if lost := nodeLost(t, byID); startFirst(svc.Spec) && pending && (lost == "" || lost == "node drained") {
				continue
			}
			shutdown(t)
		}
	}
	// Bound the history of finished tasks per slot (per node for a global
	// service, whose tasks all have slot 0).
	hist := map[string][]*messages.Task{}
	for _, t := range finished {
		k := strconv.FormatUint(t.Slot, 10)
		if global {
			k = t.NodeId
		}
		hist[k] = append(hist[k], t)
	}
	for _, ts := range hist {
		if len(ts) <= TaskHistory {
			continue
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i].Meta.GetCreatedUnixNano() > ts[j].Meta.GetCreatedUnixNano() })
		for _, t := range ts[TaskHistory:] {
			p.Remove = append(p.Remove, t.Id)
		}
	}
	return p
}

func slotNum(svc *messages.Service, slot uint64) uint64 {
	if svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		return 0
	}
	return slot
}
