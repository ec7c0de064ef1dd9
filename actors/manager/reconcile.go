package manager

import (
	"sort"
	"strconv"
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

// Reconcile compares a service with its tasks and returns what to change. It
// is a pure function of its inputs; now is passed in for the restart delay.
// For a global service, nodes are the ones it must run on.
func Reconcile(svc *messages.Service, tasks []*messages.Task, nodes []*messages.Node, now time.Time) Plan {
	var p Plan
	bySlot := map[uint64][]*messages.Task{}
	key := func(t *messages.Task) uint64 { return t.Slot }
	if svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		idx := map[string]uint64{}
		for i, n := range nodes {
			idx[n.Id] = uint64(i + 1)
		}
		key = func(t *messages.Task) uint64 {
			if k, ok := idx[t.NodeId]; ok {
				return k
			}
			return 0 // node not eligible any more
		}
	}
	var finished []*messages.Task
	for _, t := range tasks {
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			if terminal(t.GetStatus().GetState()) {
				finished = append(finished, t)
			}
			continue
		}
		bySlot[key(t)] = append(bySlot[key(t)], t)
	}
	want := map[uint64]string{} // slot -> node ("" = scheduler places)
	if svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		for i, n := range nodes {
			want[uint64(i+1)] = n.Id
		}
	} else {
		for s := uint64(1); s <= svc.Spec.Replicas; s++ {
			want[s] = ""
		}
	}
	shutdown := func(t *messages.Task) {
		t.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN
		p.Shutdown = append(p.Shutdown, t)
	}
	for slot, ts := range bySlot {
		if _, ok := want[slot]; !ok {
			for _, t := range ts {
				shutdown(t)
			}
			continue
		}
		// Keep the newest task of a slot; more than one is a leftover.
		sort.Slice(ts, func(i, j int) bool { return ts[i].Meta.GetCreatedUnixNano() > ts[j].Meta.GetCreatedUnixNano() })
		for _, t := range ts[1:] {
			shutdown(t)
		}
		cur := ts[0]
		switch {
		case !messages.TemplateEqual(cur.Spec, svc.Spec):
			// Stop-first replacement; the deployment actor of a later
			// issue paces this with parallelism and health gates.
			shutdown(cur)
			p.Create = append(p.Create, NewTask(svc, slotNum(svc, slot), want[slot]))
		case needsReplacement(cur):
			wait := restartDelay(svc.Spec) - now.Sub(time.Unix(0, cur.GetStatus().GetTimestampUnixNano()))
			if wait > 0 {
				if p.RetryAfter == 0 || wait < p.RetryAfter {
					p.RetryAfter = wait
				}
				delete(want, slot) // the slot is taken until the delay ends
				continue
			}
			shutdown(cur)
			p.Create = append(p.Create, NewTask(svc, slotNum(svc, slot), want[slot]))
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
		if svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
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
