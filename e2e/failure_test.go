package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// Tests of node failure need quick down detection.
var fastDown = []string{"--node-down-after", "3s"}

func byNodeID(h *cluster.Harness, id string) *cluster.Host {
	for _, host := range h.Hosts {
		if host.NodeID() == id {
			return host
		}
	}
	return nil
}

func leader(t *testing.T, via *cluster.Host) string {
	t.Helper()
	r := &messages.ClusterInfoReply{}
	must(t, protojson.Unmarshal([]byte(cli(t, via, "cluster", "info", "-o", "json")), r))
	return r.LeaderId
}

// converged checks that svc runs exactly want tasks, one per slot, and
// that the containers running on every powered host are exactly those
// tasks: nothing lost, nothing twice.
func converged(t *testing.T, h *cluster.Harness, via *cluster.Host, svc string, want int) error {
	ts := running(tasks(t, via, svc, false))
	if len(ts) != want {
		return fmt.Errorf("%d running, want %d", len(ts), want)
	}
	slots := map[uint64]string{}
	for _, tk := range ts {
		if other, dup := slots[tk.Slot]; dup {
			return fmt.Errorf("slot %d runs twice (%s, %s)", tk.Slot, other, tk.Id)
		}
		slots[tk.Slot] = tk.Id
	}
	var inContainerd []string
	for _, host := range h.Hosts {
		if !host.PoweredOn() || !host.Running() {
			continue
		}
		list, err := containersErr(host)
		if err != nil {
			return err
		}
		for _, s := range list {
			if s.Running && s.Labels["warren.service"] == svc {
				inContainerd = append(inContainerd, s.ID)
			}
		}
	}
	sort.Strings(inContainerd)
	if got, want := strings.Join(inContainerd, ","), strings.Join(ids(ts), ","); got != want {
		return fmt.Errorf("containerd runs %d containers of %s, warren %d", len(inContainerd), svc, len(ts))
	}
	return nil
}

// TestFailures runs issue 5's fault scenarios on one 3-manager, 2-worker
// cluster, one after the other, each healed before the next.
func TestFailures(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 5, Bin: warrenBin})
	m0 := h.Hosts[0]
	must(t, m0.StartAndWait(90*time.Second, fastDown...))
	mtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "manager", "-q"))
	wtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q"))
	for i, host := range h.Hosts[1:] {
		tok := wtok
		if i < 2 {
			tok = mtok
		}
		host.SetJoin(tok, m0.JoinAddr())
		must(t, host.Start(fastDown...))
	}
	waitNodes(t, m0, 5, 3)
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "6")
	waitRunning(t, m0, "web", 6)

	t.Run("leader killed during a scale from 6 to 30", func(t *testing.T) {
		old := byNodeID(h, leader(t, m0))
		var via *cluster.Host
		for _, m := range h.Hosts[:3] {
			if m != old {
				via = m
				break
			}
		}
		cli(t, via, "service", "scale", "web=30")
		must(t, old.Kill(syscall.SIGKILL, 10*time.Second))
		eventually(t, 30*time.Second, "a new leader", func() error {
			if l := leader(t, via); l == "" || l == old.NodeID() {
				return fmt.Errorf("leader %q", l)
			}
			return nil
		})
		// The dead leader's node goes down; its tasks are replaced.
		eventually(t, 180*time.Second, "30 running, converged", func() error { return converged(t, h, via, "web", 30) })
		// It comes back with the same command line and stops what was
		// replaced: still 30, none twice.
		must(t, old.StartAndWait(90*time.Second, fastDown...))
		waitNodes(t, via, 5, 3)
		eventually(t, 120*time.Second, "converged after the old leader returns", func() error { return converged(t, h, via, "web", 30) })
		if ev := cli(t, via, "events", "--type", "task.rescheduled"); !strings.Contains(ev, "node down") {
			t.Errorf("no task.rescheduled event for the down node")
		}
		cli(t, via, "service", "scale", "web=6")
		eventually(t, 120*time.Second, "back to 6", func() error { return converged(t, h, via, "web", 6) })
	})

	t.Run("worker partitioned from all managers keeps its tasks and restarts a crash", func(t *testing.T) {
		// The worker with the most tasks: after the failover above, spread
		// may leave one worker empty.
		var w *cluster.Host
		var mine []*messages.Task
		for _, cand := range h.Hosts[3:] {
			var its []*messages.Task
			for _, tk := range running(tasks(t, m0, "web", false)) {
				if tk.NodeId == cand.NodeID() {
					its = append(its, tk)
				}
			}
			if w == nil || len(its) > len(mine) {
				w, mine = cand, its
			}
		}
		if len(mine) == 0 {
			t.Fatal("no task on the worker to watch")
		}
		victim := mine[0]
		must(t, h.Isolate(w))
		defer h.Heal() //nolint:errcheck // also healed below; this covers failures
		start := time.Now()
		_, err := w.Exec("kill", "-9", strconv.Itoa(int(victim.Status.Pid)))
		must(t, err)
		t.Logf("%s: %s", time.Since(start).Round(time.Second), "// Restarted locally by its restart poli")
		// Restarted locally by its restart policy, no manager involved.
		eventually(t, 30*time.Second, "local restart during the partition", func() error {
			list, err := containersErr(w)
			if err != nil {
				return err
			}
			for _, s := range list {
				if s.ID == victim.Id && s.Running && s.Pid != victim.Status.Pid {
					return nil
				}
			}
			return fmt.Errorf("task %s not running again on the worker", victim.Id)
		})
		t.Logf("%s: %s", time.Since(start).Round(time.Second), "// The worker itself reboots while cut o")
		// The worker itself reboots while cut off: it starts its cached
		// tasks without asking anyone.
		must(t, w.PowerOff())
		must(t, w.Boot())
		must(t, w.Start(fastDown...))
		eventually(t, 60*time.Second, "cached tasks started after a reboot with no manager", func() error {
			running := 0
			list, err := containersErr(w)
			if err != nil {
				return err
			}
			for _, s := range list {
				if s.Running {
					running++
				}
			}
			if running < len(mine) {
				return fmt.Errorf("%d of %d cached tasks running", running, len(mine))
			}
			return nil
		})
		t.Logf("%s: %s", time.Since(start).Round(time.Second), "// Meanwhile the managers replaced its t")
		// Meanwhile the managers replaced its tasks elsewhere.
		eventually(t, 60*time.Second, "replacements running", func() error {
			n := 0
			for _, tk := range running(tasks(t, m0, "web", false)) {
				if tk.NodeId != w.NodeID() {
					n++
				}
			}
			if n != 6 {
				return fmt.Errorf("%d running off the worker", n)
			}
			return nil
		})
		partition := 2 * time.Minute
		if os.Getenv("WARREN_SOAK") != "" { // go tool task soak
			partition = 30 * time.Minute
		}
		if d := partition - time.Since(start); d > 0 {
			time.Sleep(d)
		}
		t.Logf("%s: %s", time.Since(start).Round(time.Second), "must(t, h.Heal())\n\t\teventually(t, 120*ti")
		must(t, h.Heal())
		eventually(t, 120*time.Second, "converged after healing", func() error { return converged(t, h, m0, "web", 6) })
	})

	t.Run("powered-off worker: tasks run elsewhere, none twice when it returns", func(t *testing.T) {
		w := h.Hosts[4]
		cli(t, m0, "service", "scale", "web=10")
		eventually(t, 120*time.Second, "10 running", func() error { return converged(t, h, m0, "web", 10) })
		must(t, w.PowerOff())
		eventually(t, 120*time.Second, "all 10 off the dead worker", func() error {
			for _, tk := range running(tasks(t, m0, "web", false)) {
				if tk.NodeId == w.NodeID() {
					return fmt.Errorf("task %s still counted on the dead worker", tk.Id)
				}
			}
			return converged(t, h, m0, "web", 10)
		})
		must(t, w.Boot())
		must(t, w.Start(fastDown...))
		waitNodes(t, m0, 5, 3)
		eventually(t, 120*time.Second, "converged after power-on", func() error { return converged(t, h, m0, "web", 10) })
	})

	t.Run("a manager in the minority refuses writes, then catches up", func(t *testing.T) {
		l := byNodeID(h, leader(t, m0))
		var minority *cluster.Host
		for _, m := range h.Hosts[:3] {
			if m != l {
				minority = m
				break
			}
		}
		var rest []*cluster.Host
		for _, host := range h.Hosts {
			if host != minority {
				rest = append(rest, host)
			}
		}
		must(t, h.Partition([]*cluster.Host{minority}, rest))
		defer h.Heal() //nolint:errcheck // also healed below; this covers failures
		at := func(h *cluster.Host) []string { return []string{"--manager", h.IP + ":4280"} }
		eventually(t, 30*time.Second, "the minority manager sees no leader", func() error {
			r := &messages.ClusterInfoReply{}
			must(t, protojson.Unmarshal([]byte(cli(t, minority, append(at(minority), "cluster", "info", "-o", "json")...)), r))
			if r.LeaderId != "" {
				return fmt.Errorf("still follows %s", r.LeaderId)
			}
			return nil
		})
		_, stderr, err := minority.CLI(append(at(minority), "service", "scale", "web=4")...)
		if err == nil || !strings.Contains(stderr, "majority") {
			t.Fatalf("write on a minority manager: %v %q", err, stderr)
		}
		// Reads still answer there; the majority goes on.
		cli(t, minority, append(at(minority), "service", "ls")...)
		cli(t, l, append(at(l), "service", "scale", "web=8")...)
		must(t, h.Heal())
		eventually(t, 60*time.Second, "the minority manager caught up", func() error {
			v := &messages.Service{}
			out, _, err := minority.CLI(append(at(minority), "service", "inspect", "web", "-o", "json")...)
			if err != nil {
				return err
			}
			if err := protojson.Unmarshal([]byte(out), v); err != nil {
				return err
			}
			if v.GetSpec().GetReplicas() != 8 {
				return fmt.Errorf("replicas %d", v.GetSpec().GetReplicas())
			}
			return nil
		})
		eventually(t, 120*time.Second, "converged", func() error { return converged(t, h, m0, "web", 8) })
	})
}
