package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
)

// logLine is one line of `service logs -o json`.
type logLine struct {
	Time     time.Time `json:"time"`
	Task     string    `json:"task"`
	TaskName string    `json:"task_name"`
	Node     string    `json:"node"`
	NodeName string    `json:"node_name"`
	Stream   string    `json:"stream"`
	Log      string    `json:"log"`
}

// logFollower is a running `warren service logs -f -o json`: its lines and
// its stderr (notices) as they arrive.
type logFollower struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []logLine
	notes []string
	done  chan struct{}
}

func followLogs(t *testing.T, host *cluster.Host, args ...string) *logFollower {
	t.Helper()
	cmd := exec.Command(warrenBin, append(args, "-f", "-o", "json")...)
	cmd.Env = append(os.Environ(), "WARREN_CONFIG_DIR="+host.ConfigDir)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	f := &logFollower{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(f.stop)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			f.mu.Lock()
			f.notes = append(f.notes, sc.Text())
			f.mu.Unlock()
		}
	}()
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l logLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = logLine{Log: "not json: " + sc.Text()}
			}
			f.mu.Lock()
			f.lines = append(f.lines, l)
			f.mu.Unlock()
		}
	}()
	return f
}

func (f *logFollower) stop() {
	if f.cmd.Process != nil {
		f.cmd.Process.Kill() //nolint:errcheck
		f.cmd.Wait()         //nolint:errcheck
	}
}

// snapshot returns the lines from index from on, and the notes.
func (f *logFollower) snapshot(from int) ([]logLine, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lines[min(from, len(f.lines)):]), slices.Clone(f.notes)
}

func (f *logFollower) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lines)
}

// numbered is the number of a testapp "line N task=..." line, or 0.
func numbered(l logLine) int {
	rest, ok := strings.CutPrefix(l.Log, "line ")
	if !ok {
		return 0
	}
	num, _, _ := strings.Cut(rest, " ")
	n, _ := strconv.Atoi(num)
	return n
}

// TestLogs: `service logs` on a two-node cluster (acceptance of issue 14's
// logs item): follow sees every replica, a killed replica's restart, a
// partitioned node named while the other keeps streaming; --since and
// --tail give exactly the expected lines; `task logs` reads a removed
// task.
func TestLogs(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 2, Bin: warrenBin})
	formCluster(t, h, 1, "--node-down-after", "3s")
	m0, w1 := h.Hosts[0], h.Hosts[1]
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "talk", "--image", "demo:v1", "--replicas", "3", "--env", "LINES_RATE=5")
	talk := waitRunning(t, m0, "talk", 3)
	per := map[string]int{}
	for _, tk := range talk {
		per[tk.NodeId]++
	}
	if len(per) != 2 {
		t.Fatalf("3 replicas on %d nodes, want both: %v", len(per), per)
	}

	f := followLogs(t, m0, "service", "logs", "talk")
	t.Run("follow shows every replica, stdout and stderr", func(t *testing.T) {
		eventually(t, 60*time.Second, "numbered lines from all 3 replicas on both streams", func() error {
			lines, notes := f.snapshot(0)
			seen, streams := map[string]bool{}, map[string]bool{}
			for _, l := range lines {
				if numbered(l) > 0 {
					seen[l.Task] = true
					streams[l.Stream] = true
				}
				if !strings.HasPrefix(l.TaskName, "talk.") || l.NodeName == "" {
					return fmt.Errorf("a line without its task's or node's name: %+v", l)
				}
			}
			for _, tk := range talk {
				if !seen[tk.Id] {
					return fmt.Errorf("nothing yet from %s (on %s); %d lines, notes %q", tk.Id, tk.NodeId, len(lines), notes)
				}
			}
			if !streams["stdout"] || !streams["stderr"] {
				return fmt.Errorf("streams seen: %v", streams)
			}
			return nil
		})
	})

	t.Run("a killed replica keeps appearing after its restart", func(t *testing.T) {
		victim := talk[0]
		host := byNodeID(h, victim.NodeId)
		mark := f.count()
		_, err := host.Exec("kill", "-9", strconv.Itoa(int(victim.Status.Pid)))
		must(t, err)
		eventually(t, 60*time.Second, "the restarted replica's first lines", func() error {
			lines, _ := f.snapshot(mark)
			for _, l := range lines {
				if l.Task == victim.Id && numbered(l) == 1 {
					return nil
				}
			}
			return fmt.Errorf("%d lines since the kill, none is line 1 of %s", len(lines), victim.Id)
		})
	})

	t.Run("a partitioned node is named while the other keeps streaming", func(t *testing.T) {
		must(t, h.Partition([]*cluster.Host{m0}, []*cluster.Host{w1}))
		defer func() { must(t, h.Heal()) }()
		var warned int
		eventually(t, 60*time.Second, "the partitioned node named unreachable", func() error {
			_, notes := f.snapshot(0)
			for _, n := range notes {
				if strings.Contains(n, "unreachable: logs from it are missing") && strings.Contains(n, w1.NodeID()) {
					warned = f.count()
					return nil
				}
			}
			return fmt.Errorf("notes %q", notes)
		})
		eventually(t, 30*time.Second, "lines from the manager's node after the warning", func() error {
			lines, _ := f.snapshot(warned)
			n := 0
			for _, l := range lines {
				if l.Node == m0.NodeID() && numbered(l) > 0 {
					n++
				}
			}
			if n < 10 {
				return fmt.Errorf("%d lines from %s since the warning", n, m0.Name)
			}
			return nil
		})
	})
	f.stop()
	cli(t, m0, "service", "rm", "talk")

	// 50 lines at 20 a second from one replica, then quiet.
	cli(t, m0, "service", "create", "count", "--image", "demo:v1", "--replicas", "1", "--env", "LINES_RATE=20", "--env", "LINES_COUNT=50")
	task := waitRunning(t, m0, "count", 1)[0]
	var all []logLine
	eventually(t, 60*time.Second, "all 50 lines", func() error {
		out, _, err := m0.CLI("service", "logs", "count", "-o", "json")
		if err != nil {
			return err
		}
		all = decodeLogLines(t, out)
		if len(all) == 0 || numbered(all[len(all)-1]) != 50 {
			return fmt.Errorf("%d lines so far", len(all))
		}
		return nil
	})
	byNumber := map[int]logLine{}
	for _, l := range all {
		byNumber[numbered(l)] = l
	}
	want := func(from, to int) []int {
		var s []int
		for i := from; i <= to; i++ {
			s = append(s, i)
		}
		return s
	}
	numbers := func(out string) []int {
		var s []int
		for _, l := range decodeLogLines(t, out) {
			s = append(s, numbered(l))
		}
		return s
	}
	for _, tc := range []struct {
		name string
		args []string
		want []int
	}{
		{"tail", []string{"--tail", "5"}, want(46, 50)},
		{"since a line's time", []string{"--since", byNumber[20].Time.Format(time.RFC3339Nano)}, want(20, 50)},
		{"since and until", []string{"--since", byNumber[11].Time.Format(time.RFC3339Nano), "--until", byNumber[30].Time.Format(time.RFC3339Nano)}, want(11, 30)},
		{"tail and since", []string{"--tail", "3", "--since", byNumber[45].Time.Format(time.RFC3339Nano)}, want(48, 50)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := numbers(cli(t, m0, append([]string{"service", "logs", "count", "-o", "json"}, tc.args...)...))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("service logs %v: lines %v, want %v", tc.args, got, tc.want)
			}
		})
	}

	t.Run("task logs reads a removed task", func(t *testing.T) {
		cli(t, m0, "service", "rm", "count")
		eventually(t, 60*time.Second, "the task gone from the cluster's state", func() error {
			if _, _, err := m0.CLI("service", "ps", "count"); err == nil {
				return fmt.Errorf("service count still listed")
			}
			return nil
		})
		out := cli(t, m0, "task", "logs", task.Id, "--raw")
		if !strings.Contains(out, "line 000049 task="+task.Id) {
			t.Fatalf("task logs of the removed task:\n%s", out)
		}
	})
}

func decodeLogLines(t *testing.T, out string) []logLine {
	t.Helper()
	var ls []logLine
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		if s == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("not a JSON line: %q", s)
		}
		if numbered(l) > 0 {
			ls = append(ls, l)
		}
	}
	return ls
}
