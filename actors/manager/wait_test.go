package manager

import (
	"testing"

	"github.com/warrenorch/warren/messages"
)

func TestServiceProgress(t *testing.T) {
	// ready: running the service's current spec (version 2) with an address.
	ready := func(t *messages.Task) { t.SpecVersion, t.Status.Ip = 2, "10.88.1.2" }
	old := func(t *messages.Task) { t.Status.Ip = "10.88.1.3" } // spec version 1
	failed := func(msg string, at int64) taskOpt {
		return func(t *messages.Task) { t.Status.Message, t.Status.TimestampUnixNano = msg, at }
	}
	checked := func(h messages.HealthState) taskOpt {
		return func(t *messages.Task) {
			t.Spec = webSpec("demo:v1", 3)
			t.Spec.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_TCP}
			t.Status.Health = h
		}
	}
	cases := []struct {
		name  string
		svc   *messages.Service
		tasks []*messages.Task
		nodes []*messages.Node
		want  Progress
		done  bool
	}{
		{name: "all ready", svc: mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, ready), mkTask("b", 2, stRunning, ready)},
			want:  Progress{Desired: 2, Ready: 2}, done: true},
		{name: "tasks not created yet", svc: mkService(webSpec("demo:v1", 2)),
			want: Progress{Desired: 2}},
		{name: "one still starting", svc: mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, ready), mkTask("b", 2, messages.TaskState_TASK_STATE_STARTING, ready)},
			want:  Progress{Desired: 2, Ready: 1}},
		{name: "scaled: tasks of an older version with the same template count", svc: mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, old), mkTask("b", 2, stRunning, ready)},
			want:  Progress{Desired: 2, Ready: 2}, done: true},
		{name: "running the previous spec does not count", svc: mkService(webSpec("demo:v2", 1)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, old)},
			want:  Progress{Desired: 1}},
		{name: "scaled down, one still stopping", svc: mkService(webSpec("demo:v1", 1)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, ready), mkTask("b", 2, stRunning, ready, stopped)},
			want:  Progress{Desired: 1, Ready: 1, Stopping: 1}},
		{name: "scaled down, the extra one stopped", svc: mkService(webSpec("demo:v1", 1)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, ready), mkTask("b", 2, messages.TaskState_TASK_STATE_SHUTDOWN, ready, stopped)},
			want:  Progress{Desired: 1, Ready: 1}, done: true},
		{name: "unhealthy is not ready", svc: mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{mkTask("a", 1, stRunning, ready, checked(messages.HealthState_HEALTH_STATE_HEALTHY)),
				mkTask("b", 2, stRunning, ready, checked(messages.HealthState_HEALTH_STATE_STARTING))},
			want: Progress{Desired: 2, Ready: 1}},
		{name: "newest failure is reported", svc: mkService(webSpec("demo:v1", 1)),
			tasks: []*messages.Task{mkTask("a", 1, stRejected, failed("older", 1), stopped), mkTask("b", 1, stRejected, failed("newer", 2), stopped),
				mkTask("c", 1, messages.TaskState_TASK_STATE_PREPARING, ready)},
			want: Progress{Desired: 1, LastError: "newer"}},
		{name: "global wants one per eligible node", svc: mkService(globalSpec("agent:v1")),
			tasks: []*messages.Task{mkTask("a", 0, stRunning, onNode("n1"), ready)},
			nodes: []*messages.Node{mkNode("n1"), mkNode("n2"), mkNode("n3", nodeState(messages.NodeState_NODE_STATE_DOWN)),
				mkNode("n4", availability(messages.NodeAvailability_NODE_AVAILABILITY_DRAIN))},
			want: Progress{Desired: 2, Ready: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ServiceProgress(c.svc, c.tasks, c.nodes)
			if got != c.want || got.Converged() != c.done {
				t.Fatalf("progress = %+v (converged %v), want %+v (converged %v)", got, got.Converged(), c.want, c.done)
			}
		})
	}
}
