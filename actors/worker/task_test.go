package worker

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime/fakeruntime"
)

// TestRestartPolicy: each exit meets the spec's restart condition and
// attempt limit; what the task ends as is reported to the manager.
func TestRestartPolicy(t *testing.T) {
	const (
		any       = messages.RestartCondition_RESTART_CONDITION_ANY
		onFailure = messages.RestartCondition_RESTART_CONDITION_ON_FAILURE
		none      = messages.RestartCondition_RESTART_CONDITION_NONE
		failed    = messages.TaskState_TASK_STATE_FAILED
		complete  = messages.TaskState_TASK_STATE_COMPLETE
		running   = messages.TaskState_TASK_STATE_RUNNING
	)
	tests := []struct {
		name      string
		policy    *messages.RestartPolicy
		failStart int      // the first starts that fail (counted as exits)
		exits     []uint32 // exit codes of the successive processes
		starts    int      // successful starts in all
		final     messages.TaskState
		message   string // in the final status
	}{
		{"any restarts a clean exit", &messages.RestartPolicy{Condition: any, DelayMs: 10}, 0, []uint32{0, 3}, 3, running, ""},
		{"on-failure restarts a failure", &messages.RestartPolicy{Condition: onFailure, DelayMs: 10}, 0, []uint32{1}, 2, running, ""},
		{"on-failure keeps a clean exit", &messages.RestartPolicy{Condition: onFailure, DelayMs: 10}, 0, []uint32{0}, 1, complete, "exited with code 0"},
		{"none keeps a failure", &messages.RestartPolicy{Condition: none}, 0, []uint32{2}, 1, failed, "exited with code 2"},
		{"max attempts", &messages.RestartPolicy{Condition: any, DelayMs: 10, MaxAttempts: 2}, 0, []uint32{1, 1, 1}, 3, failed, "restart policy gave up after 2 attempts"},
		{"attempts outside the window are forgotten", &messages.RestartPolicy{Condition: any, DelayMs: 10, MaxAttempts: 1, WindowMs: 1}, 0, []uint32{1, 1, 1}, 4, running, ""},
		{"a start that fails is a failure", &messages.RestartPolicy{Condition: onFailure, DelayMs: 10}, 2, nil, 1, running, ""},
		{"a start that fails, no restart", &messages.RestartPolicy{Condition: none}, 1, nil, 0, failed, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, fakeruntime.Config{}, true)
			r.startAgent(true)
			const id = "task-restart-01"
			if tt.failStart > 0 {
				r.rt.Fail(fakeruntime.OpStart, id, tt.failStart, errors.New("boom"))
			}
			r.assign(1, runningTask(id, 1, tt.policy))
			for i, code := range tt.exits {
				r.waitStarts(id, i+1)
				r.reported(id, "running", inState(running))
				if err := r.rt.Exit(id, code); err != nil {
					t.Fatal(err)
				}
			}
			if tt.final == running {
				r.waitStarts(id, tt.starts)
				st := r.reported(id, "running again", inState(running))
				if want := uint32(tt.starts - 1 + tt.failStart); st.RestartCount != want {
					t.Fatalf("restart count %d, want %d", st.RestartCount, want)
				}
				return
			}
			st := r.reported(id, tt.final.String(), inState(tt.final))
			if !strings.Contains(st.Message, tt.message) {
				t.Fatalf("final status %q, want it to say %q", st.Message, tt.message)
			}
			never(t, 200*time.Millisecond, "a container the policy gave up on was started again", func() bool {
				return r.succeeded(fakeruntime.OpStart, id) > tt.starts
			})
			if n := r.succeeded(fakeruntime.OpStart, id); n != tt.starts {
				t.Fatalf("%d starts, want %d", n, tt.starts)
			}
		})
	}
}

// TestRestartBackoff: the delay before each restart starts at DelayMs and
// doubles up to MaxDelayMs.
func TestRestartBackoff(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	r.startAgent(true)
	const id = "task-backoff-01"
	r.assign(1, runningTask(id, 1, &messages.RestartPolicy{Condition: messages.RestartCondition_RESTART_CONDITION_ANY, DelayMs: 40, MaxDelayMs: 160}))
	for i, want := range []time.Duration{40, 80, 160, 160} {
		want *= time.Millisecond
		r.waitStarts(id, i+1)
		exit := time.Now()
		if err := r.rt.Exit(id, 1); err != nil {
			t.Fatal(err)
		}
		r.waitStarts(id, i+2)
		var started time.Time
		for _, c := range r.rt.Calls() {
			if c.Op == fakeruntime.OpStart && c.Err == nil {
				started = c.At
			}
		}
		if d := started.Sub(exit); d < want || d > want+time.Second {
			t.Fatalf("restart %d came %s after the exit, want %s", i+1, d, want)
		}
	}
}

// TestDrainBeforeStop: a task the manager shuts down is drained first: no
// signal reaches it until the leader confirms no node routes to it.
func TestDrainBeforeStop(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	r.startAgent(true)
	const id = "task-drain-0001"
	task := runningTask(id, 1, nil)
	r.assign(1, task)
	r.waitStarts(id, 1)
	r.reported(id, "running", inState(messages.TaskState_TASK_STATE_RUNNING))
	// The agent asks for a drain only while heartbeats succeed.
	eventually(t, 5*time.Second, "a heartbeat", func() bool { _, n, _ := r.mgr.counts(); return n > 0 })

	r.mgr.mu.Lock()
	r.mgr.holdDrain = true
	r.mgr.mu.Unlock()
	r.assign(2, shutdownTask(task))
	never(t, 300*time.Millisecond, "the task was signalled before its drain was confirmed", func() bool {
		return len(r.rt.Signals(id)) > 0 || r.rt.Count(fakeruntime.OpStop, id) > 0 || r.rt.Count(fakeruntime.OpKill, id) > 0
	})
	if _, _, n := r.mgr.counts(); n != 1 {
		t.Fatalf("%d drains asked of the manager, want 1", n)
	}
	released := time.Now()
	r.mgr.release(r.sys)
	r.reported(id, "shut down", inState(messages.TaskState_TASK_STATE_SHUTDOWN))
	if r.rt.Count(fakeruntime.OpStop, id) != 1 {
		t.Fatalf("%d stops, want 1", r.rt.Count(fakeruntime.OpStop, id))
	}
	for _, c := range r.rt.Calls() {
		if c.ID == id && (c.Op == fakeruntime.OpStop || c.Op == fakeruntime.OpKill || c.Op == fakeruntime.OpDelete) && c.At.Before(released) {
			t.Fatalf("%s at %s, before the drain was confirmed at %s", c.Op, c.At, released)
		}
	}
	if st, _ := r.rt.Status(bg, id); st.Exists {
		t.Fatal("the container is still there after shutdown")
	}
	r.net.mu.Lock()
	defer r.net.mu.Unlock()
	if r.net.attached[id] || len(r.net.detached) != 1 {
		t.Fatalf("network sandbox not released: attached %v detached %v", r.net.attached, r.net.detached)
	}
}

// TestCreateRefused: a create the runtime refuses (an image nowhere to be
// found) rejects the task with the runtime's explanation.
func TestCreateRefused(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	r.startAgent(true)
	const id = "task-refused-01"
	task := runningTask(id, 1, nil)
	task.Spec.Image = "nowhere:v9"
	r.assign(1, task)
	st := r.reported(id, "rejected", inState(messages.TaskState_TASK_STATE_REJECTED))
	if !strings.Contains(st.Err, "not on this node") {
		t.Fatalf("rejection %q does not explain itself", st.Err)
	}
	if n := r.rt.Count(fakeruntime.OpStart, id); n != 0 {
		t.Fatalf("%d starts of a rejected task", n)
	}
}

// TestHealthCheck: probes run off the mailbox; a passing check makes the
// task healthy, `retries` failures in a row unhealthy, and then the
// container is drained and stopped so its restart policy acts.
func TestHealthCheck(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	var healthy atomic.Bool
	healthy.Store(true)
	r.rt.SetExec(func(string, []string) (uint32, string, error) {
		if healthy.Load() {
			return 0, "ok", nil
		}
		return 1, "not ready", nil
	})
	r.startAgent(true)
	const id = "task-health-001"
	task := runningTask(id, 1, restartAny)
	task.Spec.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_EXEC, ExecCommand: []string{"check"}, IntervalMs: 50, TimeoutMs: 500, Retries: 2}
	r.assign(1, task)
	r.waitStarts(id, 1)
	r.reported(id, "healthy", func(s *messages.TaskStatus) bool { return s.Health == messages.HealthState_HEALTH_STATE_HEALTHY })
	eventually(t, 5*time.Second, "a heartbeat", func() bool { _, n, _ := r.mgr.counts(); return n > 0 })
	r.mgr.mu.Lock()
	r.mgr.holdDrain = true
	r.mgr.mu.Unlock()
	healthy.Store(false)
	st := r.reported(id, "unhealthy", func(s *messages.TaskStatus) bool { return s.Health == messages.HealthState_HEALTH_STATE_UNHEALTHY })
	if !strings.Contains(st.Err, "not ready") {
		t.Fatalf("unhealthy status %q does not say why", st.Err)
	}
	healthy.Store(true)
	never(t, 200*time.Millisecond, "the unhealthy container was signalled before its drain was confirmed", func() bool {
		return len(r.rt.Signals(id)) > 0
	})
	r.mgr.release(r.sys)
	r.waitStarts(id, 2) // SIGTERMed after the drain, then restarted
	r.reported(id, "healthy again", func(s *messages.TaskStatus) bool {
		return s.Health == messages.HealthState_HEALTH_STATE_HEALTHY && s.RestartCount == 1
	})
}
