package e2e

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/e2e/cluster"
)

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1)*p + 0.5)
	return s[i]
}

// TestBenchCluster measures issue 5's figures on real multi-host clusters:
// leader failover (kill -9 of the leader to the next committed write, 10
// trials), join-to-ready, and the time to reschedule a dead node's tasks as
// a function of the heartbeat timeout.
func TestBenchCluster(t *testing.T) {
	if os.Getenv("WARREN_BENCH") == "" {
		t.Skip("benchmarks run with WARREN_BENCH=1 (go tool task bench)")
	}
	type row struct{ name, value, note string }
	var rows []row

	// Failover and join on one 3-manager cluster.
	h := cluster.New(t, cluster.Options{Hosts: 4, Bin: warrenBin})
	m0 := h.Hosts[0]
	must(t, m0.StartAndWait(90*time.Second))
	mtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "manager", "-q"))
	wtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q"))
	var joins []time.Duration
	for _, m := range h.Hosts[1:3] {
		start := time.Now()
		m.SetJoin(mtok, m0.JoinAddr())
		must(t, m.Start())
		waitNodes(t, m0, m.Index+1, m.Index+1)
		joins = append(joins, time.Since(start))
	}
	w := h.Hosts[3]
	start := time.Now()
	w.SetJoin(wtok, m0.JoinAddr())
	must(t, w.Start())
	waitNodes(t, m0, 4, 3)
	joins = append(joins, time.Since(start))
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "probe", "--image", "demo:v1", "--replicas", "0")

	const trials = 10
	var failovers []time.Duration
	for i := 0; i < trials; i++ {
		var via *cluster.Host
		for _, m := range h.Hosts[:3] {
			if m.Running() && m.NodeID() != leader(t, m0alive(h)) {
				via = m
				break
			}
		}
		old := byNodeID(h, leader(t, via))
		cl, err := client.Dial(client.Options{ConfigDir: via.ConfigDir, Managers: []string{via.IP + ":4280"}, Timeout: 10 * time.Second})
		must(t, err)
		// A write before the kill proves the path works.
		_, err = cl.ScaleService("probe", 0)
		must(t, err)
		t0 := time.Now()
		_ = syscall.Kill(old.WarrenPid, syscall.SIGKILL)
		for n := uint64(1); ; n++ {
			if _, err := cl.ScaleService("probe", n%2); err == nil {
				break
			}
			if time.Since(t0) > time.Minute {
				t.Fatalf("trial %d: no write accepted within a minute", i)
			}
		}
		failovers = append(failovers, time.Since(t0))
		cl.Close()
		must(t, old.Kill(syscall.SIGKILL, 10*time.Second)) // reap it
		must(t, old.StartAndWait(90*time.Second))
		waitNodes(t, via, 4, 3)
	}
	rows = append(rows,
		row{"leader failover: kill -9 of the leader to a committed write, p50", percentile(failovers, 0.5).Round(time.Millisecond).String(), fmt.Sprintf("%d trials; target p99 < 2s (Swarm ~10s)", trials)},
		row{"leader failover, p99", percentile(failovers, 0.99).Round(time.Millisecond).String(), fmt.Sprintf("max %s", percentile(failovers, 1).Round(time.Millisecond))},
		row{"cluster join to node ready (managers, worker)", fmt.Sprint(roundAll(joins)), "process start to `ready` in node ls"})

	// Reschedule time versus the heartbeat timeout.
	for _, hb := range []time.Duration{2 * time.Second, 5 * time.Second} {
		hr := cluster.New(t, cluster.Options{Hosts: 3, Bin: warrenBin})
		args := []string{"--node-down-after", hb.String()}
		mgr := hr.Hosts[0]
		must(t, mgr.StartAndWait(90*time.Second, args...))
		tok := strings.TrimSpace(cli(t, mgr, "cluster", "join-token", "worker", "-q"))
		for _, wk := range hr.Hosts[1:] {
			wk.SetJoin(tok, mgr.JoinAddr())
			must(t, wk.Start(args...))
		}
		waitNodes(t, mgr, 3, 1)
		cli(t, mgr, "image", "import", demoV1)
		cli(t, mgr, "service", "create", "web", "--image", "demo:v1", "--replicas", "9", "--constraint", "node.role==worker")
		waitRunning(t, mgr, "web", 9)
		dead := hr.Hosts[1]
		t0 := time.Now()
		must(t, dead.PowerOff())
		for {
			n := 0
			for _, tk := range running(tasks(t, mgr, "web", false)) {
				if tk.NodeId != dead.NodeID() {
					n++
				}
			}
			if n == 9 {
				break
			}
			if time.Since(t0) > 3*time.Minute {
				t.Fatal("tasks not rescheduled")
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(t0)
		rows = append(rows, row{fmt.Sprintf("reschedule a dead node's tasks (heartbeat timeout %s)", hb), took.Round(time.Millisecond).String(),
			fmt.Sprintf("power-off to all 9 running elsewhere; minus timeout: %s", (took - hb).Round(time.Millisecond))})
		hr.Close()
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCLUSTER BENCHMARK\tVALUE\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.name, r.value, r.note)
	}
	tw.Flush()
}

func roundAll(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return out
}

// m0alive returns a running manager to ask who leads.
func m0alive(h *cluster.Harness) *cluster.Host {
	for _, m := range h.Hosts[:3] {
		if m.Running() {
			return m
		}
	}
	return h.Hosts[0]
}
