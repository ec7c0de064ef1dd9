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

// NewTask builds a pending task for slot (replicated) or node (global).
func NewTask(svc *messages.Service, slot uint64, nodeID string) *messages.Task {
	t := &messages.Task{
		Id: messages.NewID(), ServiceId: svc.Id, ServiceName: svc.Spec.Name, Slot: slot, NodeId: nodeID,
		Spec: svc.Spec, SpecVersion: svc.SpecVersion, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
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
		for s := uint64(1); s <= svc.Spec.Replicas; s++ {
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
	replace := func(old *messages.Task, slot uint64, reason string, keepOld bool) {
		if !keepOld {
			shutdown(old)
		}
		nt := NewTask(svc, slotNum(svc, slot), want[slot])
		nt.Replaces, nt.Reason = old.Id, reason
		p.Create = append(p.Create, nt)
	}
	for slot, ts := range bySlot {
		if _, ok := want[slot]; !ok {
			for _, t := range ts {
				shutdown(t)
			}
			continue
		}
		// The newest task of a slot is the one that counts. Older ones are
		// leftovers, except while a start-first replacement is not running
		// yet: then the old one serves until it does.
		sort.Slice(ts, func(i, j int) bool { return ts[i].Meta.GetCreatedUnixNano() > ts[j].Meta.GetCreatedUnixNano() })
		cur := ts[0]
		curRunning := cur.GetStatus().GetState() == messages.TaskState_TASK_STATE_RUNNING
		for _, t := range ts[1:] {
			if lost := nodeLost(t, byID); startFirst(svc.Spec) && !curRunning && nodeLost(cur, byID) == "" && (lost == "" || lost == "node drained") {
				continue
			}
			shutdown(t)
		}
		lost := ""
		if !global {
			lost = nodeLost(cur, byID)
		}
		switch {
		case !messages.TemplateEqual(cur.Spec, svc.Spec):
			replace(cur, slot, "spec changed", startFirst(svc.Spec))
		case lost != "":
			// A drained node's task may serve until its replacement runs;
			// a down or removed node's task serves nobody.
			replace(cur, slot, lost, lost == "node drained" && startFirst(svc.Spec))
		case needsReplacement(cur):
			wait := restartDelay(svc.Spec) - now.Sub(time.Unix(0, cur.GetStatus().GetTimestampUnixNano()))
			if wait > 0 {
				if p.RetryAfter == 0 || wait < p.RetryAfter {
					p.RetryAfter = wait
				}
				delete(want, slot) // the slot is taken until the delay ends
				continue
			}
			replace(cur, slot, strings.ToLower(strings.TrimPrefix(cur.GetStatus().GetState().String(), "TASK_STATE_")), false)
		}
		delete(want, slot)
	}
	slots := make([]uint64, 0, len(want))
	for s := range want {
		slots = append(slots, s)
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i] < slots[j] })
	for _, s := range slots {
		p.Create = append(p.Create, NewTask(svc, slotNum(svc, s), want[s]))
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
