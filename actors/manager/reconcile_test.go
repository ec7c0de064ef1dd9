package manager

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// reconcileClock is the fixed clock of these tests; restart delays are
// measured from task status timestamps relative to it.
var reconcileClock = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func webSpec(image string, replicas uint64) *messages.ServiceSpec {
	return &messages.ServiceSpec{Name: "web", Image: image, Replicas: replicas}
}

func globalSpec(image string) *messages.ServiceSpec {
	return &messages.ServiceSpec{Name: "agent", Image: image, Mode: messages.ServiceMode_SERVICE_MODE_GLOBAL}
}

// restartDelayed is a one-replica web service with its own restart delay.
func restartDelayed(d time.Duration) *messages.ServiceSpec {
	s := webSpec("demo:v1", 1)
	s.RestartPolicy = &messages.RestartPolicy{DelayMs: d.Milliseconds()}
	return s
}

func mkService(spec *messages.ServiceSpec) *messages.Service {
	return &messages.Service{Id: "svc-" + spec.Name, Spec: spec, SpecVersion: 2}
}

type taskOpt func(*messages.Task)

// mkTask builds a stored task as the store would hold it: by default desired
// RUNNING on node n1, running demo:v1 of a 3-replica service, created
// <slot> seconds after the epoch (so lower slots are older).
// The spec's replica count deliberately differs from most services under
// test, so every case also checks that scaling alone replaces nothing.
func mkTask(id string, slot uint64, state messages.TaskState, opts ...taskOpt) *messages.Task {
	t := &messages.Task{
		Id: id, ServiceId: "svc-web", ServiceName: "web", Slot: slot,
		Meta:         &messages.Meta{CreatedUnixNano: int64(slot) * 1e9},
		Spec:         webSpec("demo:v1", 3),
		SpecVersion:  1,
		DesiredState: messages.TaskState_TASK_STATE_RUNNING,
		Status:       &messages.TaskStatus{State: state, TimestampUnixNano: reconcileClock.Add(-time.Hour).UnixNano()},
	}
	if slot > 0 {
		t.NodeId = "n1"
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

func stopped(t *messages.Task) { t.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN }

func created(ns int64) taskOpt { return func(t *messages.Task) { t.Meta.CreatedUnixNano = ns } }

func statusAgo(d time.Duration) taskOpt {
	return func(t *messages.Task) { t.Status.TimestampUnixNano = reconcileClock.Add(-d).UnixNano() }
}

func withSpec(s *messages.ServiceSpec) taskOpt { return func(t *messages.Task) { t.Spec = s } }

// at puts a replicated task on a node.
func at(id string) taskOpt { return func(t *messages.Task) { t.NodeId = id } }

// onNode makes a global task: no slot, bound to a node.
func onNode(id string) taskOpt {
	return func(t *messages.Task) {
		t.Slot, t.NodeId, t.ServiceId, t.ServiceName = 0, id, "svc-agent", "agent"
		t.Spec = globalSpec("agent:v1")
	}
}

func readyNodes(ids ...string) []*messages.Node {
	var out []*messages.Node
	for _, id := range ids {
		out = append(out, &messages.Node{Id: id, Status: &messages.NodeStatus{State: messages.NodeState_NODE_STATE_READY}})
	}
	return out
}

const (
	stRunning  = messages.TaskState_TASK_STATE_RUNNING
	stPending  = messages.TaskState_TASK_STATE_PENDING
	stRejected = messages.TaskState_TASK_STATE_REJECTED
	stOrphaned = messages.TaskState_TASK_STATE_ORPHANED
	stFailed   = messages.TaskState_TASK_STATE_FAILED
	stComplete = messages.TaskState_TASK_STATE_COMPLETE
	stShutdown = messages.TaskState_TASK_STATE_SHUTDOWN
)

func TestReconcile(t *testing.T) {
	cases := []struct {
		name  string
		svc   *messages.Service
		tasks []*messages.Task
		nodes []*messages.Node // global services only: the eligible nodes
		// creates names each new task by "slot=N" (replicated) or
		// "node=ID" (global); order does not matter.
		creates  []string
		shutdown []string // ids of tasks to stop
		remove   []string // ids of finished tasks to delete
		retry    time.Duration
	}{
		{
			name:    "new service creates one pending task per slot",
			svc:     mkService(webSpec("demo:v1", 3)),
			creates: []string{"slot=1", "slot=2", "slot=3"},
		},
		{
			name: "steady state changes nothing",
			svc:  mkService(webSpec("demo:v1", 3)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stPending), mkTask("t3", 3, stRunning),
			},
		},
		{
			name: "scale down shuts down the highest slots",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stRunning), mkTask("t3", 3, stRunning),
				mkTask("t4", 4, stRunning), mkTask("t5", 5, stRunning),
			},
			shutdown: []string{"t3", "t4", "t5"},
		},
		{
			name: "scale to zero shuts down every task",
			svc:  mkService(webSpec("demo:v1", 0)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stPending),
			},
			shutdown: []string{"t1", "t2"},
		},
		{
			name: "scale up adds missing slots only",
			svc:  mkService(webSpec("demo:v1", 5)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t3", 3, stRunning),
			},
			creates: []string{"slot=2", "slot=4", "slot=5"},
		},
		{
			name: "image change replaces each task in its slot",
			svc:  mkService(webSpec("demo:v2", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stRunning),
			},
			creates:  []string{"slot=1", "slot=2"},
			shutdown: []string{"t1", "t2"},
		},
		{
			name: "image change and scale down: surplus slots stop, kept slots are replaced",
			svc:  mkService(webSpec("demo:v2", 1)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stRunning),
			},
			creates:  []string{"slot=1"},
			shutdown: []string{"t1", "t2"},
		},
		{
			name: "env change replaces too (anything but replicas is the template)",
			svc: mkService(func() *messages.ServiceSpec {
				s := webSpec("demo:v1", 1)
				s.Env = map[string]string{"A": "b"}
				return s
			}()),
			tasks:    []*messages.Task{mkTask("t1", 1, stRunning)},
			creates:  []string{"slot=1"},
			shutdown: []string{"t1"},
		},
		{
			name: "rejected task waits out the default restart delay",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stRejected, statusAgo(2*time.Second)),
			},
			retry: 3 * time.Second,
		},
		{
			name: "rejected task is replaced once the default restart delay has passed",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stRejected, statusAgo(6*time.Second)),
			},
			creates:  []string{"slot=2"},
			shutdown: []string{"t2"},
		},
		{
			name: "rejected task waits out the service's own restart delay",
			svc:  mkService(restartDelayed(10 * time.Second)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRejected, statusAgo(6*time.Second), withSpec(restartDelayed(10*time.Second))),
			},
			retry: 4 * time.Second,
		},
		{
			name: "rejected task is replaced after a short service restart delay",
			svc:  mkService(restartDelayed(time.Second)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRejected, statusAgo(2*time.Second), withSpec(restartDelayed(time.Second))),
			},
			creates:  []string{"slot=1"},
			shutdown: []string{"t1"},
		},
		{
			name: "two rejected tasks: retry at the earlier of their delays",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRejected, statusAgo(1*time.Second)), mkTask("t2", 2, stRejected, statusAgo(4*time.Second)),
			},
			retry: time.Second,
		},
		{
			name: "orphaned task (node gone) is replaced after the delay",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stOrphaned, statusAgo(time.Minute)),
			},
			creates:  []string{"slot=2"},
			shutdown: []string{"t2"},
		},
		{
			name: "failed task (worker gave up by restart policy) is not replaced",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning), mkTask("t2", 2, stFailed, statusAgo(time.Hour)),
			},
		},
		{
			name: "completed task (restart condition none) is not replaced",
			svc:  mkService(webSpec("demo:v1", 1)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stComplete, statusAgo(time.Hour)),
			},
		},
		{
			name: "two live tasks in one slot: the older is shut down",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1-new", 1, stRunning, created(200)), mkTask("t1-old", 1, stRunning, created(100)),
				mkTask("t2", 2, stRunning),
			},
			shutdown: []string{"t1-old"},
		},
		{
			name: "two live tasks in a surplus slot: both are shut down",
			svc:  mkService(webSpec("demo:v1", 1)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning),
				mkTask("t2-new", 2, stRunning, created(200)), mkTask("t2-old", 2, stRunning, created(100)),
			},
			shutdown: []string{"t2-new", "t2-old"},
		},
		{
			name: "finished history beyond TaskHistory per slot is removed, oldest first",
			svc:  mkService(webSpec("demo:v1", 2)),
			tasks: []*messages.Task{
				mkTask("t1", 1, stRunning, created(100)),
				mkTask("h1a", 1, stShutdown, stopped, created(1)),
				mkTask("h1b", 1, stFailed, stopped, created(2)),
				mkTask("h1c", 1, stRejected, stopped, created(3)),
				mkTask("h1d", 1, stComplete, stopped, created(4)),
				mkTask("h1e", 1, stShutdown, stopped, created(5)),
				mkTask("t2", 2, stRunning, created(100)),
				mkTask("h2a", 2, stShutdown, stopped, created(1)),
				mkTask("h2b", 2, stShutdown, stopped, created(2)),
				mkTask("h2c", 2, stShutdown, stopped, created(3)),
				// Told to stop but not yet stopped: not history, kept.
				mkTask("h2-stopping", 2, stRunning, stopped, created(0)),
			},
			remove: []string{"h1a", "h1b"},
		},
		{
			name:    "global service: one task per eligible node",
			svc:     mkService(globalSpec("agent:v1")),
			nodes:   readyNodes("n1", "n2", "n3"),
			creates: []string{"node=n1", "node=n2", "node=n3"},
		},
		{
			name:  "global service: missing nodes get a task, a node no longer eligible loses its task",
			svc:   mkService(globalSpec("agent:v1")),
			nodes: readyNodes("n1", "n2", "n3"),
			tasks: []*messages.Task{
				mkTask("g1", 0, stRunning, onNode("n1")), mkTask("g4", 0, stRunning, onNode("n4")),
			},
			creates:  []string{"node=n2", "node=n3"},
			shutdown: []string{"g4"},
		},
		{
			name:  "global service: image change replaces the task on its node",
			svc:   mkService(globalSpec("agent:v2")),
			nodes: readyNodes("n1"),
			tasks: []*messages.Task{
				mkTask("g1", 0, stRunning, onNode("n1")),
			},
			creates:  []string{"node=n1"},
			shutdown: []string{"g1"},
		},
		{
			name:  "global service: tasks of removed nodes are shut down",
			svc:   mkService(globalSpec("agent:v1")),
			nodes: []*messages.Node{},
			tasks: []*messages.Task{mkTask("g1", 0, stRunning, onNode("n1")), mkTask("g2", 0, stRunning, onNode("n2"))},
			shutdown: []string{
				"g1", "g2",
			},
		},
		{
			name:  "global service: finished history is kept per node",
			svc:   mkService(globalSpec("agent:v1")),
			nodes: readyNodes("n1", "n2"),
			tasks: []*messages.Task{
				mkTask("g1", 0, stRunning, onNode("n1"), created(100)),
				mkTask("g2", 0, stRunning, onNode("n2"), created(100)),
				mkTask("h1a", 0, stShutdown, onNode("n1"), stopped, created(1)),
				mkTask("h1b", 0, stShutdown, onNode("n1"), stopped, created(2)),
				mkTask("h1c", 0, stShutdown, onNode("n1"), stopped, created(3)),
				mkTask("h2a", 0, stShutdown, onNode("n2"), stopped, created(4)),
				mkTask("h2b", 0, stShutdown, onNode("n2"), stopped, created(5)),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inputs := map[string]bool{}
			for _, tk := range tc.tasks {
				inputs[tk.Id] = true
			}
			nodes := tc.nodes
			if nodes == nil {
				nodes = readyNodes("n1", "n2", "n3")
			}
			p := Reconcile(tc.svc, tc.tasks, nodes, reconcileClock)

			var creates []string
			ids := map[string]bool{}
			for _, c := range p.Create {
				checkNewTask(t, tc.svc, c)
				if c.Id == "" || ids[c.Id] || inputs[c.Id] {
					t.Errorf("new task id %q is empty or not unique", c.Id)
				}
				ids[c.Id] = true
				if c.Slot > 0 {
					creates = append(creates, fmt.Sprintf("slot=%d", c.Slot))
				} else {
					creates = append(creates, "node="+c.NodeId)
				}
			}
			var stops []string
			for _, s := range p.Shutdown {
				if s.DesiredState != messages.TaskState_TASK_STATE_SHUTDOWN {
					t.Errorf("task %s is in Shutdown with desired state %v", s.Id, s.DesiredState)
				}
				stops = append(stops, s.Id)
			}
			same(t, "created", creates, tc.creates)
			same(t, "shut down", stops, tc.shutdown)
			same(t, "removed", p.Remove, tc.remove)
			if p.RetryAfter != tc.retry {
				t.Errorf("RetryAfter = %v, want %v", p.RetryAfter, tc.retry)
			}
		})
	}
}

// checkNewTask checks what every created task must carry, whatever the case.
func checkNewTask(t *testing.T, svc *messages.Service, c *messages.Task) {
	t.Helper()
	if c.ServiceId != svc.Id || c.ServiceName != svc.Spec.Name || c.SpecVersion != svc.SpecVersion || !proto.Equal(c.Spec, svc.Spec) {
		t.Errorf("new task %s does not carry the service's current spec: %v", c.Id, c)
	}
	if c.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
		t.Errorf("new task %s desired state %v, want RUNNING", c.Id, c.DesiredState)
	}
	global := svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL
	switch {
	case global && (c.Slot != 0 || c.NodeId == "" || c.Epoch != 1 || c.Status.GetState() != messages.TaskState_TASK_STATE_ASSIGNED):
		t.Errorf("new global task must be assigned to its node with epoch 1 and no slot: %v", c)
	case !global && (c.Slot == 0 || c.NodeId != "" || c.Status.GetState() != messages.TaskState_TASK_STATE_PENDING):
		t.Errorf("new replicated task must be pending placement with a slot: %v", c)
	}
}

// same compares two lists as sets (both sorted first) and names the field.
func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

// A rejected task inside its restart delay must still be replaced once the
// delay has passed: run the same input at two instants.
func TestReconcileRestartDelayOverTime(t *testing.T) {
	input := func() (*messages.Service, []*messages.Task) {
		return mkService(webSpec("demo:v1", 1)), []*messages.Task{mkTask("t1", 1, stRejected, statusAgo(0))}
	}
	t.Run("before the delay", func(t *testing.T) {
		svc, tasks := input()
		p := Reconcile(svc, tasks, readyNodes("n1"), reconcileClock.Add(time.Second))
		if len(p.Create) != 0 || len(p.Shutdown) != 0 || p.RetryAfter != 4*time.Second {
			t.Fatalf("1s after rejection: %d created, %d shut down, retry %v; want nothing and a retry in 4s", len(p.Create), len(p.Shutdown), p.RetryAfter)
		}
	})
	t.Run("after the delay", func(t *testing.T) {
		svc, tasks := input()
		p := Reconcile(svc, tasks, readyNodes("n1"), reconcileClock.Add(5*time.Second))
		if len(p.Create) != 1 || p.Create[0].Slot != 1 || len(p.Shutdown) != 1 || p.Shutdown[0].Id != "t1" || p.RetryAfter != 0 {
			t.Fatalf("5s after rejection: plan %+v; want t1 replaced in slot 1 and no retry", p)
		}
	})
}

func nodeIn(id string, st messages.NodeState, av messages.NodeAvailability) *messages.Node {
	return &messages.Node{Id: id, Status: &messages.NodeStatus{State: st}, Spec: &messages.NodeSpec{Availability: av}}
}

// TestReconcileNodeLoss pins what happens to tasks whose node goes away.
func TestReconcileNodeLoss(t *testing.T) {
	ready, down := messages.NodeState_NODE_STATE_READY, messages.NodeState_NODE_STATE_DOWN
	active, drain, pause := messages.NodeAvailability_NODE_AVAILABILITY_ACTIVE, messages.NodeAvailability_NODE_AVAILABILITY_DRAIN, messages.NodeAvailability_NODE_AVAILABILITY_PAUSE
	startFirstSpec := webSpec("demo:v1", 1)
	startFirstSpec.UpdateConfig = &messages.UpdateConfig{Order: messages.UpdateOrder_UPDATE_ORDER_START_FIRST}
	cases := []struct {
		name       string
		svc        *messages.Service
		nodes      []*messages.Node
		tasks      []*messages.Task
		shutdown   []string
		replaces   map[string]string // new task's replaces -> reason
		newOnNodes int               // created tasks with a node already set (global)
	}{
		{"task on a down node is replaced at once",
			mkService(webSpec("demo:v1", 1)), []*messages.Node{nodeIn("n1", down, active), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("t1", 1, stRunning)}, []string{"t1"}, map[string]string{"t1": "node down"}, 0},
		{"task on a removed node is replaced",
			mkService(webSpec("demo:v1", 1)), []*messages.Node{nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("t1", 1, stRunning)}, []string{"t1"}, map[string]string{"t1": "node removed"}, 0},
		{"drained node, stop-first: stopped, then replaced",
			mkService(webSpec("demo:v1", 1)), []*messages.Node{nodeIn("n1", ready, drain), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("t1", 1, stRunning)}, []string{"t1"}, map[string]string{"t1": "node drained"}, 0},
		{"drained node, start-first: the old task serves until the new one runs",
			mkService(startFirstSpec), []*messages.Node{nodeIn("n1", ready, drain), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("t1", 1, stRunning, withSpec(startFirstSpec))}, nil, map[string]string{"t1": "node drained"}, 0},
		{"start-first replacement still starting keeps the old one",
			mkService(startFirstSpec), []*messages.Node{nodeIn("n1", ready, drain), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("t1", 1, stRunning, withSpec(startFirstSpec)), mkTask("t2", 1, messages.TaskState_TASK_STATE_STARTING, at("n2"), withSpec(startFirstSpec), created(5e9))}, nil, nil, 0},
		{"start-first replacement running: the old one stops",
			mkService(startFirstSpec), []*messages.Node{nodeIn("n1", ready, drain), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("t1", 1, stRunning, withSpec(startFirstSpec)), mkTask("t2", 1, stRunning, at("n2"), withSpec(startFirstSpec), created(5e9))}, []string{"t1"}, nil, 0},
		{"paused node keeps its task",
			mkService(webSpec("demo:v1", 1)), []*messages.Node{nodeIn("n1", ready, pause)},
			[]*messages.Task{mkTask("t1", 1, stRunning)}, nil, nil, 0},
		{"global task on a down node is kept, none added there",
			mkService(globalSpec("agent:v1")), []*messages.Node{nodeIn("n1", down, active), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("g1", 0, stRunning, onNode("n1")), mkTask("g2", 0, stRunning, onNode("n2"))}, nil, nil, 0},
		{"global task on a drained node is stopped",
			mkService(globalSpec("agent:v1")), []*messages.Node{nodeIn("n1", ready, drain), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("g1", 0, stRunning, onNode("n1")), mkTask("g2", 0, stRunning, onNode("n2"))}, []string{"g1"}, nil, 0},
		{"global service reaches a new node",
			mkService(globalSpec("agent:v1")), []*messages.Node{nodeIn("n1", ready, active), nodeIn("n2", ready, active)},
			[]*messages.Task{mkTask("g1", 0, stRunning, onNode("n1"))}, nil, nil, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, tk := range tc.tasks {
				if tc.svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
					tk.Spec = tc.svc.Spec
				}
			}
			p := Reconcile(tc.svc, tc.tasks, tc.nodes, reconcileClock)
			var shut []string
			for _, tk := range p.Shutdown {
				shut = append(shut, tk.Id)
			}
			slices.Sort(shut)
			if !slices.Equal(shut, tc.shutdown) {
				t.Errorf("shut down %v, want %v", shut, tc.shutdown)
			}
			got := map[string]string{}
			onNode := 0
			for _, nt := range p.Create {
				if nt.Replaces != "" {
					got[nt.Replaces] = nt.Reason
				}
				if nt.NodeId != "" {
					onNode++
				}
			}
			if len(tc.replaces) == 0 && len(got) != 0 || len(tc.replaces) > 0 && fmt.Sprint(got) != fmt.Sprint(tc.replaces) {
				t.Errorf("replacements %v, want %v", got, tc.replaces)
			}
			if onNode != tc.newOnNodes {
				t.Errorf("%d new tasks with a node, want %d", onNode, tc.newOnNodes)
			}
		})
	}
}
