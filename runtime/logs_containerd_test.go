package runtime

import (
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test binary is the task logger too, as the warren binary is on a
// node (cmd/warren/logs.go).
func init() {
	if len(os.Args) == 3 && os.Args[1] == LoggerArg {
		os.Exit(RunLogger(os.Args[2]))
	}
}

// entriesOf reads a task's whole log.
func entriesOf(t *testing.T, base string) []LogEntry {
	t.Helper()
	var out []LogEntry
	r := LogRead{}
	for {
		ch, err := ReadLog(base, r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ch.Entries...)
		if !ch.More {
			return out
		}
		r.From = ch.Next
	}
}

func waitEntries(t *testing.T, base string, what string, ok func([]LogEntry) bool) []LogEntry {
	t.Helper()
	var es []LogEntry
	deadline := time.Now().Add(30 * time.Second)
	for {
		if es = entriesOf(t, base); ok(es) {
			return es
		}
		if time.Now().After(deadline) {
			gens, _ := LogGens(base)
			last := es[max(len(es)-3, 0):]
			t.Fatalf("timed out waiting for %s: %d entries (%d on stderr) in generations %v, the last %+v", what, len(es), count(es, "stderr", ""), gens, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func count(es []LogEntry, stream, prefix string) int {
	n := 0
	for _, e := range es {
		if e.Stream == stream && strings.HasPrefix(e.Text, prefix) {
			n++
		}
	}
	return n
}

// TestLoggerProcess runs a real task whose output goes through the logger
// process the shim starts: lines arrive with their stream, files rotate at
// the cap, and a restarted task continues the same log.
func TestLoggerProcess(t *testing.T) {
	e := newEnv(t)
	e.importImage()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.rt.SetLogging(LogOptions{Binary: exe, MaxSize: 64 << 10, MaxFiles: 3})
	spec := e.spec("logger")
	spec.Env = []string{"LINES_RATE=0", "LINES_COUNT=2000"}
	ctx := e.ctx()
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	es := waitEntries(t, spec.LogPath, "the last numbered line", func(es []LogEntry) bool {
		return count(es, "stderr", "line 002000") == 1 && count(es, "stdout", "line 001999") == 1
	})
	// Caps of 3 x 64 KiB keep all 2000 lines (176 KB) over 3 files.
	if out, errs := count(es, "stdout", "line "), count(es, "stderr", "line "); out != 1800 || errs != 200 {
		t.Errorf("%d lines on stdout and %d on stderr, want 1800 and 200", out, errs)
	}
	gens, _ := LogGens(spec.LogPath)
	if len(gens) != 3 {
		t.Errorf("generations %v: 176 KB at 64 KiB per file makes 3", gens)
	}
	for _, g := range gens {
		if sz := fileSize(LogFileName(spec.LogPath, g)); sz > 64<<10 {
			t.Errorf("file %d is %d bytes, over the cap", g, sz)
		}
	}
	if err := e.rt.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, spec.LogPath, "the restarted task's lines", func(es []LogEntry) bool {
		for _, e := range es {
			if e.Text == "line 002000 task= stderr" && e.Time.After(stopped) {
				return true
			}
		}
		return false
	})
	if after, _ := LogGens(spec.LogPath); after[len(after)-1] <= gens[len(gens)-1] {
		t.Errorf("generations %v after the restart, %v before: the restart's lines rotate on from the last file", after, gens)
	}
}

// TestLoggerPipes runs the logger as the shim does: stdout on fd 3, stderr
// on fd 4, readiness on fd 5.
func TestLoggerPipes(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "t.log")
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	readyR, readyW, _ := os.Pipe()
	cmd := exec.Command(exe, LoggerArg, url.Values{"path": {base}}.Encode())
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outR.Close()
	errR.Close()
	readyW.Close()
	if _, err := readyR.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("ready: %v, want EOF", err)
	}
	outW.WriteString("to stdout\n")
	errW.WriteString("to stderr\n")
	outW.Close()
	errW.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("logger: %v", err)
	}
	es := entriesOf(t, base)
	if count(es, "stdout", "to stdout") != 1 || count(es, "stderr", "to stderr") != 1 {
		t.Fatalf("entries %+v: want one line on each stream", es)
	}
}
