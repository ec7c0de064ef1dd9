package worker

import (
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime/fakeruntime"
)

// TestStopDuringSlowStart: a task removed while its container is still
// being created (a slow image pull) is stopped as soon as the create
// returns and leaves nothing behind; the task actor does not start it.
func TestStopDuringSlowStart(t *testing.T) {
	r := newRig(t, fakeruntime.Config{CreateLatency: time.Second}, true)
	r.startAgent(true)
	const id = "task-slowstart1"
	r.assign(1, runningTask(id, 1, nil))
	eventually(t, 5*time.Second, "preparing reported", func() bool {
		st := r.mgr.taskStatus(id)
		return st != nil && st.State == messages.TaskState_TASK_STATE_PREPARING
	})
	removed := time.Now()
	r.assign(2) // no longer assigned here
	r.reported(id, "shut down", inState(messages.TaskState_TASK_STATE_SHUTDOWN))
	if d := time.Since(removed); d > 800*time.Millisecond {
		t.Fatalf("shutdown took %s: the removal waited behind the create", d)
	}
	eventually(t, 5*time.Second, "no container left", func() bool {
		st, _ := r.rt.Status(bg, id)
		return !st.Exists && r.rt.Count(fakeruntime.OpCreate, id) == 1
	})
	// The teardown waited for the create to return: a delete beside it
	// could come before a create that still succeeds.
	create, del := -1, -1
	for i, c := range r.rt.Calls() {
		switch {
		case c.ID == id && c.Op == fakeruntime.OpCreate:
			create = i
		case c.ID == id && c.Op == fakeruntime.OpDelete:
			del = i
		}
	}
	if del < create {
		t.Fatalf("delete (call %d) before the create returned (call %d)", del, create)
	}
	if n := r.rt.Count(fakeruntime.OpStart, id); n != 0 {
		t.Fatalf("%d starts of a removed task", n)
	}
}
