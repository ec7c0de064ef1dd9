package manager

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/warrenorch/warren/messages"
)

type nodeOpt func(*messages.Node)

// mkNode builds a ready, active worker named after its id (hostname
// "host-<id>") with unknown capacity unless an option says otherwise.
func mkNode(id string, opts ...nodeOpt) *messages.Node {
	n := &messages.Node{
		Id:          id,
		Spec:        &messages.NodeSpec{Role: messages.NodeRole_NODE_ROLE_WORKER},
		Description: &messages.NodeDescription{Hostname: "host-" + id, Os: "linux", Arch: "amd64"},
		Status:      &messages.NodeStatus{State: messages.NodeState_NODE_STATE_READY},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func nodeState(s messages.NodeState) nodeOpt { return func(n *messages.Node) { n.Status.State = s } }

func availability(a messages.NodeAvailability) nodeOpt {
	return func(n *messages.Node) { n.Spec.Availability = a }
}

func asManager(n *messages.Node) { n.Spec.Role = messages.NodeRole_NODE_ROLE_MANAGER }

func labels(kv ...string) nodeOpt {
	return func(n *messages.Node) {
		n.Spec.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Spec.Labels[kv[i]] = kv[i+1]
		}
	}
}

func capacity(mem, nanoCPUs int64) nodeOpt {
	return func(n *messages.Node) {
		n.Description.Resources = &messages.Resources{MemoryBytes: mem, NanoCpus: nanoCPUs}
	}
}

func arch(a string) nodeOpt { return func(n *messages.Node) { n.Description.Arch = a } }

type placeOpt func(*messages.Task)

// pendingTask is a task of service svc waiting for placement.
func pendingTask(id, svc string, opts ...placeOpt) *messages.Task {
	t := &messages.Task{
		Id: id, ServiceId: svc, ServiceName: svc,
		Spec:         &messages.ServiceSpec{Name: svc, Image: "demo:v1"},
		DesiredState: messages.TaskState_TASK_STATE_RUNNING,
		Status:       &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING},
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// runningOn is a task of service svc already placed on node.
func runningOn(id, svc, node string, opts ...placeOpt) *messages.Task {
	t := pendingTask(id, svc, opts...)
	t.NodeId = node
	t.Status.State = messages.TaskState_TASK_STATE_RUNNING
	return t
}

func constraints(c ...string) placeOpt { return func(t *messages.Task) { t.Spec.Constraints = c } }

func reserve(mem, nanoCPUs int64) placeOpt {
	return func(t *messages.Task) {
		t.Spec.Resources = &messages.ResourceRequirements{Reservations: &messages.Resources{MemoryBytes: mem, NanoCpus: nanoCPUs}}
	}
}

// batch is n pending tasks of svc with ids <svc>-1 ... <svc>-n.
func batch(svc string, n int, opts ...placeOpt) []*messages.Task {
	var out []*messages.Task
	for i := 1; i <= n; i++ {
		out = append(out, pendingTask(fmt.Sprintf("%s-%d", svc, i), svc, opts...))
	}
	return out
}

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	cpu = int64(1e9)
)

func TestPlace(t *testing.T) {
	cases := []struct {
		name    string
		nodes   []*messages.Node
		running []*messages.Task
		pending []*messages.Task
		// assigned maps task id -> node id; perNode counts assigned tasks
		// per node where the exact choice matters less than the spread.
		assigned map[string]string
		perNode  map[string]int
		refused  map[string]string // task id -> exact refusal message
	}{
		{
			name:    "spreads replicas evenly over ready nodes",
			nodes:   []*messages.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")},
			pending: batch("web", 6),
			assigned: map[string]string{
				"web-1": "n1", "web-2": "n2", "web-3": "n3", "web-4": "n1", "web-5": "n2", "web-6": "n3",
			},
			perNode: map[string]int{"n1": 2, "n2": 2, "n3": 2},
		},
		{
			name:    "evens out a service already running unevenly",
			nodes:   []*messages.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")},
			running: []*messages.Task{runningOn("r1", "web", "n1"), runningOn("r2", "web", "n1"), runningOn("r3", "web", "n2")},
			pending: batch("web", 3),
			perNode: map[string]int{"n2": 1, "n3": 2},
		},
		{
			name:     "prefers fewer tasks of the same service over fewer tasks in all",
			nodes:    []*messages.Node{mkNode("n1"), mkNode("n2")},
			running:  []*messages.Task{runningOn("d1", "db", "n1"), runningOn("d2", "db", "n1"), runningOn("d3", "db", "n1"), runningOn("w1", "web", "n2")},
			pending:  batch("web", 1),
			assigned: map[string]string{"web-1": "n1"},
		},
		{
			name:     "same-service tie: prefers fewer tasks in all",
			nodes:    []*messages.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")},
			running:  []*messages.Task{runningOn("d1", "db", "n1"), runningOn("d2", "db", "n1"), runningOn("d3", "db", "n3")},
			pending:  batch("web", 1),
			assigned: map[string]string{"web-1": "n2"},
		},
		{
			name:     "full tie: lowest node id, so placement is deterministic",
			nodes:    []*messages.Node{mkNode("n3"), mkNode("n1"), mkNode("n2")},
			pending:  batch("web", 1),
			assigned: map[string]string{"web-1": "n1"},
		},
		{
			name: "skips nodes that are not ready",
			nodes: []*messages.Node{
				mkNode("n1", nodeState(messages.NodeState_NODE_STATE_DOWN)),
				mkNode("n2", nodeState(messages.NodeState_NODE_STATE_DISCONNECTED)),
				mkNode("n3", nodeState(messages.NodeState_NODE_STATE_UNKNOWN)),
				mkNode("n4"),
			},
			pending: batch("web", 2),
			perNode: map[string]int{"n4": 2},
		},
		{
			name: "skips paused and drained nodes",
			nodes: []*messages.Node{
				mkNode("n1", availability(messages.NodeAvailability_NODE_AVAILABILITY_PAUSE)),
				mkNode("n2", availability(messages.NodeAvailability_NODE_AVAILABILITY_DRAIN)),
				mkNode("n3"),
			},
			pending: batch("web", 2),
			perNode: map[string]int{"n3": 2},
		},
		{
			name: "constraint on a label",
			nodes: []*messages.Node{
				mkNode("n1", labels("zone", "a")), mkNode("n2", labels("zone", "b")), mkNode("n3", labels("zone", "a")), mkNode("n4"),
			},
			pending: batch("web", 4, constraints("node.labels.zone==a")),
			perNode: map[string]int{"n1": 2, "n3": 2},
		},
		{
			name:    "negative constraint on the hostname",
			nodes:   []*messages.Node{mkNode("x"), mkNode("y")},
			pending: batch("web", 2, constraints("node.hostname!=host-x")),
			perNode: map[string]int{"y": 2},
		},
		{
			name:    "constraint on the role",
			nodes:   []*messages.Node{mkNode("n1"), mkNode("n2", asManager), mkNode("n3")},
			pending: batch("web", 2, constraints("node.role==manager")),
			perNode: map[string]int{"n2": 2},
		},
		{
			name:     "several constraints: every node misses one (id, arch, label with !=)",
			nodes:    []*messages.Node{mkNode("n1", arch("arm64")), mkNode("n2"), mkNode("n3", labels("gpu", "yes"))},
			pending:  batch("web", 1, constraints("node.id!=n2", "node.platform.arch==amd64", "node.platform.os==linux", "node.labels.gpu!=yes")),
			refused:  map[string]string{"web-1": "no suitable node (constraints not met on 3 nodes)"},
			assigned: map[string]string{},
		},
		{
			name:     "constraints: the one node meeting all of them",
			nodes:    []*messages.Node{mkNode("n1", arch("arm64")), mkNode("n2"), mkNode("n3", labels("gpu", "yes")), mkNode("n4")},
			pending:  batch("web", 1, constraints("node.id!=n2", "node.platform.arch==amd64", "node.platform.os==linux", "node.labels.gpu!=yes")),
			assigned: map[string]string{"web-1": "n4"},
		},
		{
			name:     "memory reservation against what other tasks reserved",
			nodes:    []*messages.Node{mkNode("n1", capacity(gib, 4*cpu)), mkNode("n2", capacity(gib, 4*cpu))},
			running:  []*messages.Task{runningOn("d1", "db", "n2", reserve(768*mib, 0))},
			pending:  batch("web", 3, reserve(512*mib, 0)),
			assigned: map[string]string{"web-1": "n1", "web-2": "n1"},
			refused:  map[string]string{"web-3": "no suitable node (insufficient memory on 2 nodes)"},
		},
		{
			name:     "cpu reservation against capacity",
			nodes:    []*messages.Node{mkNode("n1", capacity(gib, 2*cpu)), mkNode("n2", capacity(gib, cpu))},
			pending:  batch("web", 3, reserve(0, cpu)),
			assigned: map[string]string{"web-1": "n1", "web-2": "n2", "web-3": "n1"},
		},
		{
			name:     "cpu reservation larger than any node",
			nodes:    []*messages.Node{mkNode("n1", capacity(gib, 2*cpu))},
			pending:  batch("web", 1, reserve(0, 3*cpu)),
			assigned: map[string]string{},
			refused:  map[string]string{"web-1": "no suitable node (insufficient cpu on 1 node)"},
		},
		{
			name:     "unknown capacity does not refuse a reservation",
			nodes:    []*messages.Node{mkNode("n1")},
			pending:  batch("web", 1, reserve(64*gib, 64*cpu)),
			assigned: map[string]string{"web-1": "n1"},
		},
		{
			name: "refusal lists each reason with its node count",
			nodes: []*messages.Node{
				mkNode("n1", nodeState(messages.NodeState_NODE_STATE_DOWN), labels("zone", "a")),
				mkNode("n2", labels("zone", "b")),
				mkNode("n3"),
			},
			pending:  batch("web", 1, constraints("node.labels.zone==a")),
			assigned: map[string]string{},
			refused:  map[string]string{"web-1": "no suitable node (node not ready on 1 node; constraints not met on 2 nodes)"},
		},
		{
			name: "refusal counts each node once, by the first filter it fails",
			nodes: []*messages.Node{
				mkNode("n1", nodeState(messages.NodeState_NODE_STATE_DOWN), availability(messages.NodeAvailability_NODE_AVAILABILITY_DRAIN)),
				mkNode("n2", availability(messages.NodeAvailability_NODE_AVAILABILITY_PAUSE)),
				mkNode("n3", availability(messages.NodeAvailability_NODE_AVAILABILITY_DRAIN)),
				mkNode("n4", capacity(mib, cpu)),
			},
			pending:  batch("web", 1, reserve(64*mib, 0)),
			assigned: map[string]string{},
			refused: map[string]string{
				"web-1": "no suitable node (node not ready on 1 node; node not active (paused or drained) on 2 nodes; insufficient memory on 1 node)",
			},
		},
		{
			name:     "no nodes at all",
			pending:  batch("web", 2),
			assigned: map[string]string{},
			refused: map[string]string{
				"web-1": "no suitable node (the cluster has no nodes yet)",
				"web-2": "no suitable node (the cluster has no nodes yet)",
			},
		},
		{
			name:     "an unplaceable task does not stop the others",
			nodes:    []*messages.Node{mkNode("n1", labels("zone", "a"))},
			pending:  append(batch("web", 1, constraints("node.labels.zone==b")), batch("db", 1)...),
			assigned: map[string]string{"db-1": "n1"},
			refused:  map[string]string{"web-1": "no suitable node (constraints not met on 1 node)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pl := Place(tc.pending, tc.nodes, tc.running)
			got := map[string]string{}
			perNode := map[string]int{}
			for _, a := range pl.Assigned {
				got[a.Id] = a.NodeId
				perNode[a.NodeId]++
			}
			if tc.assigned != nil && !maps.Equal(got, tc.assigned) {
				t.Errorf("assigned %v, want %v", got, tc.assigned)
			}
			if tc.perNode != nil && !maps.Equal(perNode, tc.perNode) {
				t.Errorf("tasks per node %v, want %v", perNode, tc.perNode)
			}
			if !maps.Equal(pl.Refused, tc.refused) {
				t.Errorf("refused:\n got  %v\n want %v", pl.Refused, tc.refused)
			}
			for _, p := range tc.pending {
				_, isRefused := pl.Refused[p.Id]
				if _, isAssigned := got[p.Id]; isAssigned == isRefused {
					t.Errorf("task %s must be either assigned or refused (assigned %v, refused %v)", p.Id, isAssigned, isRefused)
				}
				if isRefused && p.NodeId != "" {
					t.Errorf("refused task %s was given node %s", p.Id, p.NodeId)
				}
			}
		})
	}
}

// Extra ParseConstraint cases; messages/validate_test.go covers it only
// through ValidateServiceSpec.
func TestParseConstraint(t *testing.T) {
	cases := []struct {
		in             string
		key, op, value string
		wantErr        string
	}{
		{in: "node.labels.zone==a", key: "node.labels.zone", op: "==", value: "a"},
		{in: "node.hostname!=x", key: "node.hostname", op: "!=", value: "x"},
		{in: " node.role == manager ", key: "node.role", op: "==", value: "manager"},
		{in: "node.id==abc", key: "node.id", op: "==", value: "abc"},
		{in: "node.platform.arch==arm64", key: "node.platform.arch", op: "==", value: "arm64"},
		{in: "node.platform.os!=windows", key: "node.platform.os", op: "!=", value: "windows"},
		{in: "node.labels.a.b==c", key: "node.labels.a.b", op: "==", value: "c"},
		{in: "node.labels.zone==a=b", key: "node.labels.zone", op: "==", value: "a=b"},
		{in: "zone=a", wantErr: "expected KEY==VALUE or KEY!=VALUE"},
		{in: "", wantErr: "expected KEY==VALUE or KEY!=VALUE"},
		{in: "==a", wantErr: "expected KEY==VALUE or KEY!=VALUE"},
		{in: "node.role==", wantErr: "expected KEY==VALUE or KEY!=VALUE"},
		{in: "node.role== ", wantErr: "expected KEY==VALUE or KEY!=VALUE"},
		{in: "node.color==red", wantErr: `unknown key "node.color"`},
		{in: "node.labels.==a", wantErr: `unknown key "node.labels."`},
		{in: "engine.labels.x==a", wantErr: "use node.id, node.hostname"},
		{
			in: "node.labels.zone!=a==b", key: "node.labels.zone", op: "!=", value: "a==b",
		},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			key, op, value, err := messages.ParseConstraint(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseConstraint(%q) error %v, want it to contain %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConstraint(%q): %v", tc.in, err)
			}
			if key != tc.key || op != tc.op || value != tc.value {
				t.Fatalf("ParseConstraint(%q) = %q %q %q, want %q %q %q", tc.in, key, op, value, tc.key, tc.op, tc.value)
			}
		})
	}
}

// Place must not count a refused task's reservation: otherwise one
// oversized task would starve the rest of the batch.
func TestPlaceRefusedTaskReservesNothing(t *testing.T) {
	nodes := []*messages.Node{mkNode("n1", capacity(gib, 2*cpu))}
	pending := append(batch("big", 1, reserve(4*gib, 0)), batch("small", 2, reserve(512*mib, 0))...)
	pl := Place(pending, nodes, nil)
	ids := slices.Sorted(maps.Keys(pl.Refused))
	if len(pl.Assigned) != 2 || !slices.Equal(ids, []string{"big-1"}) {
		t.Fatalf("assigned %d, refused %v; want both small tasks placed and only big-1 refused", len(pl.Assigned), ids)
	}
}
