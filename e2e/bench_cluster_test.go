package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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
// leader failover as a user sees it (issue 10: power-off of the leader's
// host to the real CLI's first committed write and first read, from
// another host; 10 trials) with the old inside figure (kill -9 of the
// leader's warren to an in-process client's write) as its baseline in the
// same run, join-to-ready, and the time to reschedule a dead node's tasks
// as a function of the heartbeat timeout.
func TestBenchCluster(t *testing.T) {
	if os.Getenv("WARREN_BENCH") == "" {
		t.Skip("benchmarks run with WARREN_BENCH=1 (go tool task bench)")
	}
	type row struct{ name, value, baseline, note string }
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

	// Leader failover, as a user sees it and as the old figure measured it,
	// interleaved in the same run: each trial powers off the leader's host
	// and times the real CLI, then kill -9s the (new) leader's warren and
	// times an in-process client (the baseline).
	const trials = 10
	var cliWrites, cliReads, inside, hungWrites, hungReads []time.Duration
	for i := 0; i < trials; i++ {
		w, r := cliFailover(t, h, i, false)
		cliWrites, cliReads = append(cliWrites, w), append(cliReads, r)
		inside = append(inside, insideFailover(t, h, i))
	}
	// The case behind issue 10's 10 s: the host still completes TCP
	// handshakes on 4280 as it goes down.
	for i := 0; i < trials; i++ {
		w, r := cliFailover(t, h, trials+i, true)
		hungWrites, hungReads = append(hungWrites, w), append(hungReads, r)
	}
	ms := func(ds []time.Duration, p float64) string { return percentile(ds, p).Round(time.Millisecond).String() }
	rows = append(rows,
		row{"leader failover through the CLI: power-off of the leader's host to a committed write (service scale), p50", ms(cliWrites, 0.5), ms(inside, 0.5),
			fmt.Sprintf("%d trials; CLI on another manager, dead leader first in its config; target p99 < 2s (Swarm ~10s)", trials)},
		row{"leader failover through the CLI, write, p99", ms(cliWrites, 0.99), ms(inside, 0.99),
			fmt.Sprintf("max %s (baseline max %s); baseline: kill -9 of the leader's warren to a write from an in-process client", ms(cliWrites, 1), ms(inside, 1))},
		row{"leader failover through the CLI: power-off to the first read (cluster info), p50", ms(cliReads, 0.5), "-", "started with the write, in its own CLI process"},
		row{"leader failover through the CLI, read, p99", ms(cliReads, 0.99), "-", fmt.Sprintf("max %s", ms(cliReads, 1))},
		row{"leader failover through the CLI, the dead host still accepting TCP on 4280: write, p50 / p99", ms(hungWrites, 0.5) + " / " + ms(hungWrites, 0.99), "-",
			fmt.Sprintf("%d trials; the old TCP probe picked that manager: ~10 s if it stopped accepting soon after (issue 10), the whole --timeout if not", trials)},
		row{"leader failover through the CLI, the dead host still accepting TCP: read, p50 / p99", ms(hungReads, 0.5) + " / " + ms(hungReads, 0.99), "-", fmt.Sprintf("max %s", ms(hungReads, 1))},
		row{"cluster join to node ready (managers, worker)", fmt.Sprint(roundAll(joins)), "-", "process start to `ready` in node ls"})

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
		rows = append(rows, row{fmt.Sprintf("reschedule a dead node's tasks (heartbeat timeout %s)", hb), took.Round(time.Millisecond).String(), "-",
			fmt.Sprintf("power-off to all 9 running elsewhere; minus timeout: %s", (took - hb).Round(time.Millisecond))})
		hr.Close()
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCLUSTER BENCHMARK\tVALUE\tBASELINE\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.name, r.value, r.baseline, r.note)
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

// cliFailover is one trial of failover as the user of issue 10 saw it: the
// leader's host loses power (its whole pid namespace), and the real CLI on
// another manager, with a copied admin config listing the dead leader
// first, runs `service scale` and `cluster info` at once, each retried
// until it succeeds. It returns the time from the power-off to each
// success, and boots the host again. With hang, the dead host's 4280
// still completes TCP handshakes and says nothing (hangOn) until both
// commands succeeded.
func cliFailover(t *testing.T, h *cluster.Harness, trial int, hang bool) (write, read time.Duration) {
	t.Helper()
	lead, others := leaderAndOthers(t, h, 3)
	via := others[0]
	cfg := filepath.Join(h.Dir, fmt.Sprintf("user-cli-bench-%d", trial))
	userConfig(t, lead, cfg, managerAddrs(append([]*cluster.Host{lead}, others...)...)...)
	// A write before the power-off proves the path works.
	if out, _, err := hostCLI(via, cfg, nil, "service", "scale", "probe=0"); err != nil {
		t.Fatalf("trial %d: write before the power-off: %v\n%s", trial, err, out)
	}
	until := func(t0 time.Time, args ...string) (time.Duration, error) {
		for {
			out, _, err := hostCLI(via, cfg, nil, args...)
			if err == nil {
				return time.Since(t0), nil
			}
			if time.Since(t0) > time.Minute {
				return 0, fmt.Errorf("%s: no success within a minute: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	}
	t0 := time.Now()
	must(t, lead.PowerOff())
	stop := func() {}
	if hang {
		stop = hangOn(t, lead)
	}
	var werr, rerr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); write, werr = until(t0, "service", "scale", "probe=1") }()
	go func() { defer wg.Done(); read, rerr = until(t0, "cluster", "info") }()
	wg.Wait()
	if err := errors.Join(werr, rerr); err != nil {
		t.Fatalf("trial %d: %v", trial, err)
	}
	stop()
	rebootManager(t, lead, via, 4, 3)
	return write, read
}

// insideFailover is the old figure, kept as the baseline: SIGKILL of the
// leader's warren (its host stays up) to the first write an in-process
// client through a follower gets accepted.
func insideFailover(t *testing.T, h *cluster.Harness, trial int) time.Duration {
	t.Helper()
	old, others := leaderAndOthers(t, h, 3)
	via := others[0]
	cl, err := client.Dial(client.Options{ConfigDir: via.ConfigDir, Managers: []string{via.IP + ":4280"}, Timeout: 10 * time.Second})
	must(t, err)
	defer cl.Close()
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
			t.Fatalf("trial %d: no write accepted within a minute", trial)
		}
	}
	took := time.Since(t0)
	must(t, old.Kill(syscall.SIGKILL, 10*time.Second)) // reap it
	must(t, old.StartAndWait(90*time.Second))
	waitNodes(t, via, 4, 3)
	return took
}
