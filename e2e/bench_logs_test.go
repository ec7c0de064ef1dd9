package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/runtime"
)

// TestBenchLogs measures `service logs --follow` (issue 14): 10 tasks
// print numbered lines as fast as their pipes take them; over the same
// window it counts the lines the tasks wrote (their line numbers) and the
// lines a follower delivered, and samples the node's RSS while it streams.
// Nothing is asserted: the table is the result.
func TestBenchLogs(t *testing.T) {
	if os.Getenv("WARREN_BENCH") == "" {
		t.Skip("benchmarks run with WARREN_BENCH=1 (go tool task bench)")
	}
	const tasks, window = 10, 30 * time.Second
	h := cluster.New(t, cluster.Options{Hosts: 1, Bin: warrenBin})
	n := h.Hosts[0]
	must(t, n.StartAndWait(90*time.Second, "--log-level", "info"))
	cli(t, n, "image", "import", demoV1)
	type result struct {
		name                    string
		wrote, dlv              float64
		rss0, rssMax, rss1      int64
		loggers0, loggers1, dsk int64
	}
	measure := func(svc, rate string) result {
		cli(t, n, "service", "create", svc, "--image", "demo:v1", "--replicas", strconv.Itoa(tasks), "--env", "LINES_RATE="+rate)
		waitRunning(t, n, svc, tasks)
		time.Sleep(3 * time.Second) // past the start-up burst
		// The follower prints JSON lines to a pipe this test drains and counts.
		cmd := exec.Command(warrenBin, "service", "logs", svc, "-f", "--tail", "0", "-o", "json")
		cmd.Env = append(os.Environ(), "WARREN_CONFIG_DIR="+n.ConfigDir)
		out, err := cmd.StdoutPipe()
		must(t, err)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		r := result{name: svc, rss0: vmRSS(t, n.WarrenPid), loggers0: loggerRSS(t, n)}
		written0 := writtenLines(t, n, svc)
		start := time.Now()
		must(t, cmd.Start())
		delivered := make(chan int64, 1)
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			var c int64
			for sc.Scan() {
				c++
			}
			delivered <- c
		}()
		for time.Since(start) < window {
			time.Sleep(time.Second)
			r.rssMax = max(r.rssMax, vmRSS(t, n.WarrenPid))
		}
		written1 := writtenLines(t, n, svc)
		r.rss1, r.loggers1 = vmRSS(t, n.WarrenPid), loggerRSS(t, n)
		cmd.Process.Kill() //nolint:errcheck
		got := <-delivered
		cmd.Wait() //nolint:errcheck
		elapsed := time.Since(start).Seconds()
		if got == 0 {
			t.Fatalf("the follower delivered nothing: %s", stderr.String())
		}
		r.wrote, r.dlv = float64(written1-written0)/elapsed, float64(got)/elapsed
		r.dsk, _ = dirSize(filepath.Join(n.DataDir, "logs"))
		cli(t, n, "service", "rm", svc)
		return r
	}
	results := []result{measure("flood", "0"), measure("steady", "1000")}

	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "LOGS BENCHMARK\t%d tasks, one `service logs -f -o json` follower, %s each\t\n", tasks, window)
	fmt.Fprintf(tw, "\tas fast as they can\t1000 lines/s each\n")
	row := func(name string, f func(r result) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, f(results[0]), f(results[1]))
	}
	row("lines/s written (all tasks)", func(r result) string { return fmt.Sprintf("%.0f", r.wrote) })
	row("lines/s delivered", func(r result) string { return fmt.Sprintf("%.0f", r.dlv) })
	row("delivered / written", func(r result) string { return fmt.Sprintf("%.2f", r.dlv/r.wrote) })
	row("warren RSS start / max / end", func(r result) string { return mb(r.rss0) + " / " + mb(r.rssMax) + " / " + mb(r.rss1) })
	row(fmt.Sprintf("loggers' PSS (%d processes) start / end", tasks), func(r result) string { return mb(r.loggers0) + " / " + mb(r.loggers1) })
	row(fmt.Sprintf("log files on the node (cap %d x %s per task; the first run's kept)", runtime.DefaultLogMaxFiles, mb(runtime.DefaultLogMaxSize)), func(r result) string { return mb(r.dsk) })
	tw.Flush()
	fmt.Print(b.String())
	t.Log("\n" + b.String())
}

// writtenLines sums, over the service's tasks, the highest line number each
// printed: the lines written so far (a restarted task would count from 1
// again; none restarts here).
func writtenLines(t *testing.T, n *cluster.Host, svc string) int64 {
	t.Helper()
	out := cli(t, n, "service", "logs", svc, "--tail", "20", "-o", "json")
	top := map[string]int{}
	for _, l := range decodeLogLines(t, out) {
		top[l.Task] = max(top[l.Task], numbered(l))
	}
	var sum int64
	for _, v := range top {
		sum += int64(v)
	}
	return sum
}

// loggerRSS sums the proportional set size of the host's task loggers (warren in its logger
// mode, one per task, children of the shims).
func loggerRSS(t *testing.T, n *cluster.Host) int64 {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var sum int64
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), runtime.LoggerArg) || !strings.Contains(string(b), strings.ReplaceAll(n.DataDir, "/", "%2F")) {
			continue
		}
		// Pss: the binary's pages are shared by every logger, RSS would
		// count them once per process.
		st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "smaps_rollup"))
		if err != nil {
			continue // gone meanwhile
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				sum += kb << 10
			}
		}
	}
	return sum
}

func dirSize(dir string) (int64, error) {
	var sum int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			sum += info.Size()
		}
		return nil
	})
	return sum, err
}
