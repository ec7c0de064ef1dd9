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
	cli(t, n, "service", "create", "flood", "--image", "demo:v1", "--replicas", strconv.Itoa(tasks), "--env", "LINES_RATE=0")
	waitRunning(t, n, "flood", tasks)
	time.Sleep(3 * time.Second) // past the start-up burst

	// The follower prints JSON lines to a pipe this test drains and counts.
	cmd := exec.Command(warrenBin, "service", "logs", "flood", "-f", "--tail", "0", "-o", "json")
	cmd.Env = append(os.Environ(), "WARREN_CONFIG_DIR="+n.ConfigDir)
	out, err := cmd.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	rssStart := vmRSS(t, n.WarrenPid)
	loggersStart := loggerRSS(t, n)
	written0 := writtenLines(t, n)
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
	var rssMax int64
	for time.Since(start) < window {
		time.Sleep(time.Second)
		rssMax = max(rssMax, vmRSS(t, n.WarrenPid))
	}
	written1 := writtenLines(t, n)
	rssEnd := vmRSS(t, n.WarrenPid)
	loggersEnd := loggerRSS(t, n)
	cmd.Process.Kill() //nolint:errcheck
	got := <-delivered
	cmd.Wait() //nolint:errcheck
	elapsed := time.Since(start).Seconds()
	if got == 0 {
		t.Fatalf("the follower delivered nothing: %s", stderr.String())
	}
	wrote := float64(written1-written0) / elapsed
	dlv := float64(got) / elapsed
	disk, _ := dirSize(filepath.Join(n.DataDir, "logs"))

	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "LOGS BENCHMARK\t%d tasks printing as fast as they can, one follower, %s\n", tasks, window)
	fmt.Fprintf(tw, "lines/s written (all tasks)\t%.0f\n", wrote)
	fmt.Fprintf(tw, "lines/s delivered to `service logs -f`\t%.0f\n", dlv)
	fmt.Fprintf(tw, "delivered / written\t%.2f\n", dlv/wrote)
	fmt.Fprintf(tw, "warren RSS start / max / end\t%s / %s / %s\n", mb(rssStart), mb(rssMax), mb(rssEnd))
	fmt.Fprintf(tw, "loggers' RSS (%d processes) start / end\t%s / %s\n", tasks, mb(loggersStart), mb(loggersEnd))
	fmt.Fprintf(tw, "log files on disk at the end (cap %d x %s per task)\t%s\n", runtime.DefaultLogMaxFiles, mb(runtime.DefaultLogMaxSize), mb(disk))
	tw.Flush()
	fmt.Print(b.String())
	t.Log("\n" + b.String())
}

// writtenLines sums, over the flood's tasks, the highest line number each
// printed: the lines written so far (a restarted task would count from 1
// again; none restarts here).
func writtenLines(t *testing.T, n *cluster.Host) int64 {
	t.Helper()
	out := cli(t, n, "service", "logs", "flood", "--tail", "20", "-o", "json")
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

// loggerRSS sums the RSS of the host's task loggers (warren in its logger
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
		st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
		if err != nil {
			continue // gone meanwhile
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
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
