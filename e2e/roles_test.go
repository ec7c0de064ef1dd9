package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

func managerCount(t *testing.T, via *cluster.Host) int {
	t.Helper()
	r := &messages.ClusterInfoReply{}
	out, _, err := via.CLI("--manager", via.IP+":4280", "cluster", "info", "-o", "json")
	if err != nil {
		return -1
	}
	must(t, protojson.Unmarshal([]byte(out), r))
	if len(r.RaftVoters) != len(r.ManagerAddrs) {
		return -len(r.RaftVoters) // managers by role and by raft disagree (yet)
	}
	return len(r.ManagerAddrs)
}

// TestPromoteDemote: workers become managers and back in place, their
// containers untouched; demotions that would lose quorum are refused; and a
// cluster that lost its majority for good recovers with --force-new-cluster.
func TestPromoteDemote(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 3, Bin: warrenBin})
	m0, w1, w2 := h.Hosts[0], h.Hosts[1], h.Hosts[2]
	must(t, m0.StartAndWait(90*time.Second, fastDown...))
	wtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q"))
	for _, w := range []*cluster.Host{w1, w2} {
		w.SetJoin(wtok, m0.JoinAddr())
		must(t, w.Start(fastDown...))
	}
	waitNodes(t, m0, 3, 1)
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "3")
	before := map[string]uint32{}
	for _, tk := range waitRunning(t, m0, "web", 3) {
		before[tk.Id] = tk.Status.Pid
	}

	if _, stderr, err := m0.CLI("node", "demote", m0.Name); err == nil || !strings.Contains(stderr, "last manager") {
		t.Fatalf("demoting the last manager: %v %q", err, stderr)
	}

	cli(t, m0, "node", "promote", w1.Name, w2.Name)
	waitNodes(t, m0, 3, 3)
	eventually(t, 60*time.Second, "3 raft voters", func() error {
		if n := managerCount(t, m0); n != 3 {
			return fmt.Errorf("%d managers", n)
		}
		return nil
	})
	// A promoted node joins raft, then serves the CLI and takes writes.
	eventually(t, 60*time.Second, "the promoted node follows a leader", func() error {
		r := &messages.ClusterInfoReply{}
		out, _, err := w1.CLI("--manager", w1.IP+":4280", "cluster", "info", "-o", "json")
		if err != nil {
			return err
		}
		must(t, protojson.Unmarshal([]byte(out), r))
		if r.LeaderId == "" || r.Index == 0 {
			return fmt.Errorf("leader %q index %d", r.LeaderId, r.Index)
		}
		return nil
	})
	cli(t, w1, "--manager", w1.IP+":4280", "service", "scale", "web=3")
	// Nothing restarted for the role change: same containers, same pids.
	for _, tk := range waitRunning(t, m0, "web", 3) {
		if p, ok := before[tk.Id]; !ok || p != tk.Status.Pid {
			t.Fatalf("task %s changed across promotion (pid %d -> %d)", tk.Id, p, tk.Status.Pid)
		}
	}

	t.Run("a demotion that would lose quorum is refused", func(t *testing.T) {
		must(t, w2.PowerOff())
		eventually(t, 30*time.Second, "w2 down", func() error {
			for _, n := range nodes(t, m0) {
				if n.Id == w2.NodeID() && n.GetStatus().GetState() == messages.NodeState_NODE_STATE_DOWN {
					return nil
				}
			}
			return fmt.Errorf("w2 not down yet")
		})
		_, stderr, err := m0.CLI("node", "demote", w1.Name)
		if err == nil || !strings.Contains(stderr, "loses quorum") {
			t.Fatalf("demote with a manager down: %v %q", err, stderr)
		}
		must(t, w2.Boot())
		must(t, w2.Start(fastDown...))
		waitNodes(t, m0, 3, 3)
	})

	t.Run("demote back to a worker", func(t *testing.T) {
		cli(t, m0, "node", "demote", w2.Name)
		eventually(t, 60*time.Second, "2 managers", func() error {
			if n := managerCount(t, m0); n != 2 {
				return fmt.Errorf("%d managers", n)
			}
			return nil
		})
		waitNodes(t, m0, 3, 2)
		eventually(t, 60*time.Second, "raft data dropped", func() error {
			if _, err := w2.Exec("test", "-e", w2.DataDir+"/raft"); err == nil {
				return fmt.Errorf("raft dir still there")
			}
			return nil
		})
	})

	t.Run("majority lost for good: force a new cluster from a survivor", func(t *testing.T) {
		must(t, w1.PowerOff()) // 2 voters left (m0, w1): w1 gone = no quorum
		eventually(t, 30*time.Second, "writes refused without quorum", func() error {
			_, stderr, err := m0.CLI("--manager", m0.IP+":4280", "service", "scale", "web=4")
			if err == nil || !strings.Contains(stderr, "majority") {
				return fmt.Errorf("write still accepted: %v %q", err, stderr)
			}
			return nil
		})
		must(t, m0.Kill(syscall.SIGTERM, 20*time.Second))
		must(t, m0.StartAndWait(90*time.Second, append(fastDown, "--force-new-cluster")...))
		cli(t, m0, "--manager", m0.IP+":4280", "service", "scale", "web=4")
		eventually(t, 120*time.Second, "the recovered cluster runs its service", func() error {
			if n := len(running(tasks(t, m0, "web", false))); n != 4 {
				return fmt.Errorf("%d running", n)
			}
			return nil
		})
	})
}
