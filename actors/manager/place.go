package manager

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	"github.com/warrenorch/warren/messages"
)

// A filter refuses a node for a task and says why, so an unplaceable task
// can explain itself ("no suitable node (node not ready on 1; constraint
// node.labels.zone==a not met on 2)"), as swarmkit's pipeline does.
type filter struct {
	name string
	ok   func(t *messages.Task, n *messages.Node, used *messages.Resources) bool
}

var filters = []filter{
	{"node not ready", func(_ *messages.Task, n *messages.Node, _ *messages.Resources) bool {
		return n.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY
	}},
	{"node not active (paused or drained)", func(_ *messages.Task, n *messages.Node, _ *messages.Resources) bool {
		return n.GetSpec().GetAvailability() == messages.NodeAvailability_NODE_AVAILABILITY_ACTIVE
	}},
	{"constraints not met", func(t *messages.Task, n *messages.Node, _ *messages.Resources) bool {
		for _, c := range t.Spec.GetConstraints() {
			if !constraintHolds(c, n) {
				return false
			}
		}
		return true
	}},
	{"insufficient memory", func(t *messages.Task, n *messages.Node, used *messages.Resources) bool {
		want := t.Spec.GetResources().GetReservations().GetMemoryBytes()
		capacity := n.Description.GetResources().GetMemoryBytes()
		return want == 0 || capacity == 0 || used.MemoryBytes+want <= capacity
	}},
	{"insufficient cpu", func(t *messages.Task, n *messages.Node, used *messages.Resources) bool {
		want := t.Spec.GetResources().GetReservations().GetNanoCpus()
		capacity := n.Description.GetResources().GetNanoCpus()
		return want == 0 || capacity == 0 || used.NanoCpus+want <= capacity
	}},
}

func constraintHolds(c string, n *messages.Node) bool {
	key, op, want, err := messages.ParseConstraint(c)
	if err != nil {
		return false
	}
	var have string
	switch {
	case key == "node.id":
		have = n.Id
	case key == "node.hostname":
		have = n.Description.GetHostname()
	case key == "node.role":
		have = strings.TrimPrefix(strings.ToLower(n.Spec.GetRole().String()), "node_role_")
	case key == "node.platform.arch":
		have = n.Description.GetArch()
	case key == "node.platform.os":
		have = n.Description.GetOs()
	default:
		have = n.Spec.GetLabels()[strings.TrimPrefix(key, "node.labels.")]
	}
	return (have == want) == (op == "==")
}

// Placement is the scheduler's decision for a batch of pending tasks.
type Placement struct {
	Assigned []*messages.Task  // tasks with NodeId set
	Refused  map[string]string // task id -> why no node fits
}

// Place assigns pending tasks to nodes: filters first, then spread: the node
// running the fewest tasks of the same service, then the fewest tasks in
// all. running is every task with desired state RUNNING (for spread and
// reserved resources). Pure function, so the table tests pin its choices.
func Place(pending []*messages.Task, nodes []*messages.Node, running []*messages.Task) Placement {
	out := Placement{Refused: map[string]string{}}
	total := map[string]int{}
	perSvc := map[string]map[string]int{}
	used := map[string]*messages.Resources{}
	count := func(t *messages.Task) {
		total[t.NodeId]++
		if perSvc[t.ServiceId] == nil {
			perSvc[t.ServiceId] = map[string]int{}
		}
		perSvc[t.ServiceId][t.NodeId]++
		u := used[t.NodeId]
		if u == nil {
			u = &messages.Resources{}
			used[t.NodeId] = u
		}
		u.MemoryBytes += t.Spec.GetResources().GetReservations().GetMemoryBytes()
		u.NanoCpus += t.Spec.GetResources().GetReservations().GetNanoCpus()
	}
	for _, t := range running {
		if t.NodeId != "" {
			count(t)
		}
	}
	for _, t := range pending {
		var fits []*messages.Node
		refusals := map[string]int{}
		for _, n := range nodes {
			u := used[n.Id]
			if u == nil {
				u = &messages.Resources{}
			}
			ok := true
			for _, f := range filters {
				if !f.ok(t, n, u) {
					refusals[f.name]++
					ok = false
					break
				}
			}
			if ok {
				fits = append(fits, n)
			}
		}
		if len(fits) == 0 {
			out.Refused[t.Id] = explain(len(nodes), refusals)
			continue
		}
		sort.SliceStable(fits, func(i, j int) bool {
			a, b := fits[i].Id, fits[j].Id
			if sa, sb := perSvc[t.ServiceId][a], perSvc[t.ServiceId][b]; sa != sb {
				return sa < sb
			}
			if total[a] != total[b] {
				return total[a] < total[b]
			}
			return a < b
		})
		t.NodeId = fits[0].Id
		count(t)
		out.Assigned = append(out.Assigned, t)
	}
	return out
}

func explain(nodes int, refusals map[string]int) string {
	if nodes == 0 {
		return "no suitable node (the cluster has no nodes yet)"
	}
	var parts []string
	for _, f := range filters {
		if c := refusals[f.name]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s on %d node%s", f.name, c, plural(c)))
		}
	}
	return "no suitable node (" + strings.Join(parts, "; ") + ")"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Platform of this build, for node descriptions.
func Platform() (os, arch string) { return runtime.GOOS, runtime.GOARCH }
