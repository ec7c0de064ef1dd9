package manager

import (
	"fmt"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// TestServiceActorScale: scaling a replicated service up and down
// converges on exactly one placed task per slot 1..N, and a scale keeps
// the tasks of the slots that stay.
func TestServiceActorScale(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	if r, err := c.cli.ask(m, &messages.CreateServiceRequest{Spec: workerSpec("web", 2)}, 10*time.Second); err != nil || r.(*messages.ServiceReply).Error != nil {
		t.Fatalf("create: %v %v", err, r)
	}
	within(t, 10*time.Second, "web at 2", func() bool { return converged(m, "web", 2) })
	for _, n := range []uint64{5, 1, 0, 3, 3} {
		t.Run(fmt.Sprintf("to %d", n), func(t *testing.T) {
			kept := map[uint64]string{}
			for slot, ts := range liveTasks(m, "web") {
				if slot <= n {
					kept[slot] = ts[0].Id
				}
			}
			r, err := c.cli.ask(m, &messages.ScaleServiceRequest{Name: "web", Replicas: n}, 10*time.Second)
			if err != nil || r.(*messages.ServiceReply).Error != nil {
				t.Fatalf("scale: %v %v", err, r)
			}
			within(t, 10*time.Second, fmt.Sprintf("web at %d", n), func() bool { return converged(m, "web", int(n)) })
			c.settle(t)
			if !converged(m, "web", int(n)) {
				t.Fatalf("web moved off %d tasks: %s", n, taskSig(m, "web"))
			}
			for slot, id := range kept {
				if got := liveTasks(m, "web")[slot][0].Id; got != id {
					t.Fatalf("slot %d's task %s was replaced by %s", slot, id, got)
				}
			}
		})
	}
}

// TestServiceActorReplacesOnce: a task no worker can run (rejected) is
// replaced once, however often the same failure is reported; a failed task
// is the worker's to restart (its restart policy) and is not replaced.
func TestServiceActorReplacesOnce(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1"}})
	m, w := c.mgrs[0], c.workers["wrk-1"]
	st := m.store().State
	tests := []struct {
		state       messages.TaskState
		wantReplace bool
	}{
		{messages.TaskState_TASK_STATE_REJECTED, true},
		{messages.TaskState_TASK_STATE_FAILED, false},
	}
	for i, tt := range tests {
		t.Run(tt.state.String(), func(t *testing.T) {
			name := fmt.Sprintf("svc%d", i)
			spec := workerSpec(name, 2)
			spec.RestartPolicy = &messages.RestartPolicy{DelayMs: 50}
			if r, err := c.cli.ask(m, &messages.CreateServiceRequest{Spec: spec}, 10*time.Second); err != nil || r.(*messages.ServiceReply).Error != nil {
				t.Fatalf("create: %v %v", err, r)
			}
			within(t, 10*time.Second, name+" placed", func() bool { return converged(m, name, 2) })
			victim := liveTasks(m, name)[1][0]
			status := &messages.TaskStatus{State: tt.state, Err: "cannot start (test)", TimestampUnixNano: time.Now().UnixNano()}
			// The same report three times, as a worker resends it when it
			// hears nothing back, and once more with a later time.
			for range 3 {
				w.report(m, victim, status)
			}
			later := &messages.TaskStatus{State: tt.state, Err: "cannot start (test)", TimestampUnixNano: time.Now().Add(time.Second).UnixNano()}
			w.report(m, victim, later)
			w.heartbeat(t, m)
			within(t, 5*time.Second, "the report applied", func() bool { return st.Task(victim.Id).GetStatus().GetState() == tt.state })
			if tt.wantReplace {
				within(t, 10*time.Second, "a replacement", func() bool {
					return converged(m, name, 2) && liveTasks(m, name)[1][0].Id != victim.Id
				})
			}
			time.Sleep(200 * time.Millisecond) // past the restart delay: a second replacement would be under way
			c.settle(t)
			var replacements []string
			for _, tk := range st.Tasks(store.TaskFilter{ServiceID: st.ServiceByName(name).Id}) {
				if tk.Replaces == victim.Id {
					replacements = append(replacements, tk.Id)
				}
			}
			want := 0
			if tt.wantReplace {
				want = 1
			}
			if len(replacements) != want {
				t.Fatalf("%d replacements of the %v task (want %d): %s", len(replacements), tt.state, want, taskSig(m, name))
			}
			if !converged(m, name, 2) {
				t.Fatalf("%s is not at one task per slot: %s", name, taskSig(m, name))
			}
		})
	}
}
