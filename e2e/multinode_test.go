package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// formCluster boots hosts[0] as the founder, joins managers-1 more managers
// and the rest as workers, and waits until every node is ready. Every node
// gets the extra flags.
func formCluster(t *testing.T, h *cluster.Harness, managers int, extra ...string) {
	t.Helper()
	m0 := h.Hosts[0]
	must(t, m0.StartAndWait(90*time.Second, extra...))
	mtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "manager", "-q"))
	wtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q"))
	for i, host := range h.Hosts[1:] {
		tok := wtok
		if i+1 < managers {
			tok = mtok
		}
		host.SetJoin(tok, m0.JoinAddr())
		must(t, host.Start(extra...))
	}
	waitNodes(t, m0, len(h.Hosts), managers)
}

func nodes(t *testing.T, n *cluster.Host) []*messages.Node {
	t.Helper()
	out, _, err := n.CLI("node", "ls", "-o", "json")
	must(t, err)
	r := &messages.ListNodesReply{}
	must(t, protojson.Unmarshal([]byte(out), r))
	return r.Nodes
}

func waitNodes(t *testing.T, n *cluster.Host, want, managers int) {
	t.Helper()
	eventually(t, 120*time.Second, fmt.Sprintf("%d nodes ready (%d managers)", want, managers), func() error {
		ready, mgrs := 0, 0
		for _, nd := range nodes(t, n) {
			if nd.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY {
				ready++
				if nd.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER {
					mgrs++
				}
			}
		}
		if ready != want || mgrs != managers {
			return fmt.Errorf("%d ready, %d managers", ready, mgrs)
		}
		return nil
	})
}

// TestClusterForms: 3 managers and 2 workers form a cluster over join
// tokens and mutual TLS, and a service of 6 replicas spreads over all 5.
func TestClusterForms(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 5, Bin: warrenBin})
	formCluster(t, h, 3)
	m0 := h.Hosts[0]

	info := &messages.ClusterInfoReply{}
	must(t, protojson.Unmarshal([]byte(cli(t, m0, "cluster", "info", "-o", "json")), info))
	if len(info.ManagerAddrs) != 3 {
		t.Fatalf("managers %v, want 3", info.ManagerAddrs)
	}

	// The image reaches every node through the managers.
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "6")
	web := waitRunning(t, m0, "web", 6)
	per := map[string]int{}
	for _, tk := range web {
		per[tk.NodeId]++
	}
	if len(per) != 5 {
		t.Fatalf("6 replicas on %d nodes, want all 5: %v", len(per), per)
	}
	// Every task answers, wherever it runs.
	for _, tk := range web {
		var host *cluster.Host
		for _, hh := range h.Hosts {
			if hh.NodeID() == tk.NodeId {
				host = hh
			}
		}
		body, err := host.HTTPGet("http://"+tk.Status.Ip+"/", 5*time.Second)
		must(t, err)
		if !strings.Contains(body, "task="+tk.Id) {
			t.Fatalf("task %s answered %q", tk.Id, body)
		}
	}

	t.Run("any manager answers; writes are forwarded to the leader", func(t *testing.T) {
		for _, m := range h.Hosts[1:3] {
			cli(t, m, "service", "scale", "web=7")
			waitRunning(t, m, "web", 7)
			cli(t, m, "service", "scale", "web=6")
			waitRunning(t, m, "web", 6)
		}
	})

	t.Run("drain moves tasks off a node, start-first; pause takes no new ones", func(t *testing.T) {
		w := h.Hosts[4]
		cli(t, m0, "service", "create", "sf", "--image", "demo:v1", "--replicas", "5", "--update-order", "start-first")
		waitRunning(t, m0, "sf", 5)
		cli(t, m0, "node", "update", "--availability", "drain", w.Name)
		eventually(t, 90*time.Second, "nothing left on the drained node", func() error {
			for _, svc := range []string{"web", "sf"} {
				for _, tk := range running(tasks(t, m0, svc, false)) {
					if tk.NodeId == w.NodeID() {
						return fmt.Errorf("%s task %s still on %s", svc, tk.Id, w.Name)
					}
				}
			}
			if len(running(tasks(t, m0, "sf", false))) != 5 || len(running(tasks(t, m0, "web", false))) != 6 {
				return fmt.Errorf("replicas not all running")
			}
			return nil
		})
		if ev := cli(t, m0, "events", "--type", "task.rescheduled"); !strings.Contains(ev, "node drained") {
			t.Fatal("no task.rescheduled event for the drain")
		}
		p := h.Hosts[3]
		cli(t, m0, "node", "update", "--availability", "pause", p.Name)
		cli(t, m0, "service", "scale", "sf=9")
		for _, tk := range waitRunning(t, m0, "sf", 9) {
			if tk.NodeId == w.NodeID() || (tk.NodeId == p.NodeID() && tk.Slot > 5) {
				t.Fatalf("task %s (slot %d) placed on a drained or paused node", tk.Id, tk.Slot)
			}
		}
		cli(t, m0, "node", "update", "--availability", "active", w.Name)
		cli(t, m0, "node", "update", "--availability", "active", p.Name)
		cli(t, m0, "service", "rm", "sf")
	})

	t.Run("bad tokens are refused", func(t *testing.T) {
		wtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q"))
		rotated := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "--rotate", "-q"))
		if rotated == wtok {
			t.Fatal("rotation kept the token")
		}
		fp := wtok[len("WRN-1-") : len("WRN-1-")+64]
		cases := []struct{ token, want string }{
			{wtok, "invalid or rotated join token"},
			{"WRN-1-" + fp + "-00000000000000000000000000000000", "invalid or rotated join token"},
			{"WRN-1-" + strings.Repeat("ab", 32) + "-" + wtok[len(wtok)-32:], "CA does not match"},
			{"garbage", "invalid join token"},
		}
		spare := h.Hosts[4]
		for _, c := range cases {
			out, err := spare.Exec(append(spare.JoinArgs(c.token, m0.JoinAddr()), "--data-dir", h.Dir+"/spare", "--port", "4390", "--raft-port", "4391", "--join-port", "4392")...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("join with %q: %v: %s (want %q)", c.token[:min(len(c.token), 20)], err, out, c.want)
			}
		}
	})
}
