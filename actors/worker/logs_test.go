package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

var logT0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// writeTaskLog writes lines n..m of a task as its logger would, line i at
// logT0+i seconds.
func writeTaskLog(t *testing.T, dir, svc, task string, from, to int) {
	t.Helper()
	base := TaskLogPath(dir, svc, task)
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(runtime.LogFileName(base, 1), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i <= to; i++ {
		fmt.Fprintf(f, `{"log":"%s %d\n","stream":"stdout","time":"%s"}`+"\n", task, i, logT0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano))
	}
}

func lineTexts(ls []*messages.LogLine) []string {
	var s []string
	for _, l := range ls {
		s = append(s, l.Text)
	}
	return s
}

func TestReadNodeLogs(t *testing.T) {
	dir := t.TempDir()
	writeTaskLog(t, dir, "svc1", "a", 1, 3)
	writeTaskLog(t, dir, "svc1", "b", 1, 2)
	writeTaskLog(t, dir, "svc2", "c", 1, 2)
	tests := []struct {
		name string
		req  *messages.ReadNodeLogs
		want []string
	}{
		{"a service's tasks", &messages.ReadNodeLogs{ServiceId: "svc1"}, []string{"a 1", "a 2", "a 3", "b 1", "b 2"}},
		{"one task of any service", &messages.ReadNodeLogs{TaskIds: []string{"c"}}, []string{"c 1", "c 2"}},
		{"tail per task", &messages.ReadNodeLogs{ServiceId: "svc1", Tail: 1}, []string{"a 3", "b 2"}},
		{"since", &messages.ReadNodeLogs{ServiceId: "svc1", SinceUnixNano: logT0.Add(2 * time.Second).UnixNano()}, []string{"a 2", "a 3", "b 2"}},
		{"until", &messages.ReadNodeLogs{ServiceId: "svc1", UntilUnixNano: logT0.Add(time.Second).UnixNano()}, []string{"a 1", "b 1"}},
		{"from cursors", &messages.ReadNodeLogs{ServiceId: "svc1", Cursors: []*messages.LogCursor{{NodeId: "n1", TaskId: "a", Gen: 1, Offset: 1 << 20}}}, []string{"b 1", "b 2"}},
		{"unknown service", &messages.ReadNodeLogs{ServiceId: "nope"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := readNodeLogs(dir, "n1", tc.req)
			if got := lineTexts(r.Lines); !slices.Equal(got, tc.want) {
				t.Fatalf("lines %q, want %q", got, tc.want)
			}
		})
	}
}

// A follow request with nothing new waits for the next line, and picks up
// a task that appears meanwhile (a new replica).
func TestReadNodeLogsWaits(t *testing.T) {
	dir := t.TempDir()
	writeTaskLog(t, dir, "svc1", "a", 1, 2)
	first := readNodeLogs(dir, "n1", &messages.ReadNodeLogs{ServiceId: "svc1"})
	go func() {
		time.Sleep(300 * time.Millisecond)
		writeTaskLog(t, dir, "svc1", "new", 1, 1)
	}()
	t0 := time.Now()
	r := readNodeLogs(dir, "n1", &messages.ReadNodeLogs{ServiceId: "svc1", Cursors: first.Cursors, WaitMs: 5000})
	if got := lineTexts(r.Lines); !slices.Equal(got, []string{"new 1"}) {
		t.Fatalf("lines %q, want the new task's", got)
	}
	if d := time.Since(t0); d < 200*time.Millisecond || d > 3*time.Second {
		t.Fatalf("answered after %s: want when the line came", d)
	}
	t0 = time.Now()
	r = readNodeLogs(dir, "n1", &messages.ReadNodeLogs{ServiceId: "svc1", Cursors: r.Cursors, WaitMs: 300})
	if len(r.Lines) != 0 || time.Since(t0) < 300*time.Millisecond {
		t.Fatalf("with nothing new: %d lines after %s, want none after the wait", len(r.Lines), time.Since(t0))
	}
}

func TestSweepLogs(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	age := func(task string, d time.Duration) {
		p := runtime.LogFileName(TaskLogPath(dir, "svc1", task), 1)
		if err := os.Chtimes(p, now.Add(-d), now.Add(-d)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tk := range []string{"live", "old", "recent1", "recent2", "recent3"} {
		writeTaskLog(t, dir, "svc1", tk, 1, 1)
	}
	age("live", 48*time.Hour)
	age("old", 48*time.Hour)
	age("recent1", 3*time.Minute)
	age("recent2", 2*time.Minute)
	age("recent3", time.Minute)
	os.WriteFile(filepath.Join(dir, "legacy.log"), []byte("raw\n"), 0o600)
	n, err := sweepLogs(LogsConfig{Dir: dir, Runtime: liveOnly{"live"}, Retention: 24 * time.Hour, RetainTasks: 2}, now)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, tk := range []string{"live", "old", "recent1", "recent2", "recent3"} {
		if gens, _ := runtime.LogGens(TaskLogPath(dir, "svc1", tk)); len(gens) > 0 {
			kept = append(kept, tk)
		}
	}
	if n != 2 || !slices.Equal(kept, []string{"live", "recent2", "recent3"}) {
		t.Fatalf("removed %d, kept %v: want the live task's and the 2 most recent ended tasks' logs", n, kept)
	}
	if _, err := os.Stat(filepath.Join(dir, "legacy.log")); !os.IsNotExist(err) {
		t.Fatalf("a single-file log of an ended task is kept: %v", err)
	}
}

// liveOnly is a runtime whose containers are the named tasks.
type liveOnly []string

func (l liveOnly) List(context.Context) ([]runtime.Status, error) {
	var out []runtime.Status
	for _, id := range l {
		out = append(out, runtime.Status{ID: id, Exists: true})
	}
	return out, nil
}
