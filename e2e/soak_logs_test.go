package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
)

// TestSoakLogs runs events and logs for 20 minutes (issue 14): 4 replicas
// print 100 lines a second in all, with log caps small enough to rotate
// (1 MB x 3 files per task), a scale up and down every 30 s makes events,
// and one `service logs -f` and one `events -f` follow throughout. Every
// minute it samples each node's warren RSS and the disk its logs and event
// history use; the table shows both curves. Both followers must still be
// delivering at the end. Runs with `go tool task soak`; WARREN_SOAK_FOR
// shortens it for a quick check.
func TestSoakLogs(t *testing.T) {
	if os.Getenv("WARREN_SOAK") == "" {
		t.Skip("soak runs with WARREN_SOAK=1 (go tool task soak)")
	}
	run := 20 * time.Minute
	if v := os.Getenv("WARREN_SOAK_FOR"); v != "" {
		d, err := time.ParseDuration(v)
		must(t, err)
		run = d
	}
	h := cluster.New(t, cluster.Options{Hosts: 2, Bin: warrenBin})
	formCluster(t, h, 1, "--log-level", "info", "--log-max-size", "1m", "--log-max-files", "3")
	m0 := h.Hosts[0]
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "chatty", "--image", "demo:v1", "--replicas", "4", "--env", "LINES_RATE=25")
	cli(t, m0, "service", "create", "churn", "--image", "demo:v1", "--replicas", "1")
	waitRunning(t, m0, "chatty", 4)

	var logLines, events atomic.Int64
	follow := func(counter *atomic.Int64, args ...string) *exec.Cmd {
		cmd := exec.Command(warrenBin, args...)
		cmd.Env = append(os.Environ(), "WARREN_CONFIG_DIR="+m0.ConfigDir)
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				counter.Add(1)
			}
		}()
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck
		return cmd
	}
	follow(&logLines, "service", "logs", "chatty", "-f", "--tail", "0", "-o", "json")
	follow(&events, "events", "-f", "-o", "json")

	type sample struct {
		at            time.Duration
		rss, disk     []int64
		lines, events int64
	}
	take := func(at time.Duration) sample {
		s := sample{at: at, lines: logLines.Load(), events: events.Load()}
		for _, n := range h.Hosts {
			s.rss = append(s.rss, vmRSS(t, n.WarrenPid))
			logs, _ := dirSize(filepath.Join(n.DataDir, "logs"))
			ev, _ := os.Stat(filepath.Join(n.DataDir, "events.db"))
			if ev != nil {
				logs += ev.Size()
			}
			s.disk = append(s.disk, logs)
		}
		return s
	}
	start := time.Now()
	samples := []sample{take(0)}
	next := time.Minute
	for i := 0; time.Since(start) < run; i++ {
		time.Sleep(30 * time.Second)
		cli(t, m0, "service", "scale", fmt.Sprintf("churn=%d", 1+i%2))
		if time.Since(start) >= next || time.Since(start) >= run {
			samples = append(samples, take(time.Since(start).Round(time.Second)))
			next += time.Minute
		}
	}
	last, prev := samples[len(samples)-1], samples[len(samples)-2]
	if last.lines == prev.lines || last.events == prev.events {
		t.Errorf("a follower stopped delivering: log lines %d -> %d, events %d -> %d", prev.lines, last.lines, prev.events, last.events)
	}

	mb := func(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "LOGS+EVENTS SOAK\t100 lines/s over 4 tasks, caps 1 MB x 3 per task, %s\n", run)
	fmt.Fprintf(tw, "at\twarren RSS MB (n0, n1)\tlogs+events disk MB (n0, n1)\tlog lines followed\tevents followed\n")
	for _, s := range samples {
		fmt.Fprintf(tw, "%s\t%s, %s\t%s, %s\t%d\t%d\n", s.at, mb(s.rss[0]), mb(s.rss[1]), mb(s.disk[0]), mb(s.disk[1]), s.lines, s.events)
	}
	tw.Flush()
	fmt.Print(b.String())
	t.Log("\n" + b.String())
}
