package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// clock hands out times one second apart from t0.
func clock(t0 time.Time) func() time.Time {
	n := 0
	return func() time.Time { n++; return t0.Add(time.Duration(n) * time.Second) }
}

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// writeLog runs copyLines over input as the logger process would.
func writeLog(t *testing.T, base string, maxSize int64, maxFiles int, stream, input string, now func() time.Time) {
	t.Helper()
	w, err := openRotator(base, maxSize, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	copyLines(strings.NewReader(input), stream, w, now)
}

func readAll(t *testing.T, base string, r LogRead) []LogEntry {
	t.Helper()
	var out []LogEntry
	for i := 0; i < 1000; i++ {
		ch, err := ReadLog(base, r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ch.Entries...)
		r.From = ch.Next
		if !ch.More || ch.Done {
			return out
		}
	}
	t.Fatal("ReadLog never finished")
	return nil
}

func texts(es []LogEntry) []string {
	var s []string
	for _, e := range es {
		s = append(s, e.Text)
	}
	return s
}

func numbered(from, to int) []string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, fmt.Sprintf("line %03d", i))
	}
	return s
}

func TestLogLinesAreDockerJSON(t *testing.T) {
	long := strings.Repeat("x", maxLogLine+10)
	tests := []struct {
		name   string
		input  string
		stream string
		want   []LogEntry
	}{
		{"two lines", "a\nb\n", "stdout", []LogEntry{{Stream: "stdout", Text: "a"}, {Stream: "stdout", Text: "b"}}},
		{"stderr", "oops\n", "stderr", []LogEntry{{Stream: "stderr", Text: "oops"}}},
		{"no final newline", "a\nb", "stdout", []LogEntry{{Stream: "stdout", Text: "a"}, {Stream: "stdout", Text: "b", Partial: true}}},
		{"long line is split", long + "\n", "stdout", []LogEntry{{Stream: "stdout", Text: long[:maxLogLine], Partial: true}, {Stream: "stdout", Text: long[maxLogLine:]}}},
		{"quotes and unicode", "say \"hé\" <b>\n", "stdout", []LogEntry{{Stream: "stdout", Text: "say \"hé\" <b>"}}},
		{"escapes", "tab\there\\ \x01 \r\n", "stdout", []LogEntry{{Stream: "stdout", Text: "tab\there\\ \x01 \r"}}},
		{"invalid utf-8", "a\xffb\n", "stdout", []LogEntry{{Stream: "stdout", Text: "a\ufffdb"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "t.log")
			writeLog(t, base, 1<<20, 2, tc.stream, tc.input, clock(t0))
			got := readAll(t, base, LogRead{})
			if len(got) != len(tc.want) {
				t.Fatalf("got %d entries %q, want %d", len(got), texts(got), len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Stream != w.Stream || g.Text != w.Text || g.Partial != w.Partial || !g.Time.Equal(t0.Add(time.Duration(i+1)*time.Second)) {
					t.Errorf("entry %d = %+v, want %+v", i, g, w)
				}
			}
			raw, _ := os.ReadFile(LogFileName(base, 1))
			first := strings.SplitN(string(raw), "\n", 2)[0]
			if !strings.HasPrefix(first, `{"log":"`) || !strings.Contains(first, `"stream":"`+tc.stream+`","time":"2026-12-03T10:00:01Z"}`) {
				t.Errorf("line is not in json-file shape: %s", first)
			}
		})
	}
}

func TestLogRotation(t *testing.T) {
	input := strings.Join(numbered(1, 100), "\n") + "\n"
	// One line is 67 bytes: 10 lines per file at 700 bytes.
	tests := []struct {
		name     string
		maxSize  int64
		maxFiles int
		wantGens []uint64
		wantFrom int // first line kept
	}{
		{"no rotation", 1 << 20, 3, []uint64{1}, 1},
		{"keeps max files", 700, 3, []uint64{8, 9, 10}, 71},
		{"one file", 700, 1, []uint64{10}, 91},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "t.log")
			writeLog(t, base, tc.maxSize, tc.maxFiles, "stdout", input, clock(t0))
			gens, _ := LogGens(base)
			if !slices.Equal(gens, tc.wantGens) {
				t.Fatalf("generations %v, want %v", gens, tc.wantGens)
			}
			for _, g := range gens {
				if sz := fileSize(LogFileName(base, g)); sz > tc.maxSize {
					t.Errorf("file %d is %d bytes, over the cap %d", g, sz, tc.maxSize)
				}
			}
			got := texts(readAll(t, base, LogRead{MaxBytes: 200}))
			if want := numbered(tc.wantFrom, 100); !slices.Equal(got, want) {
				t.Fatalf("read back %d lines %q..., want %d from %q", len(got), got[:min(2, len(got))], len(want), want[0])
			}
		})
	}
}

func TestLogRestartContinuesLastFile(t *testing.T) {
	base := filepath.Join(t.TempDir(), "t.log")
	now := clock(t0)
	writeLog(t, base, 700, 3, "stdout", strings.Join(numbered(1, 15), "\n")+"\n", now)
	writeLog(t, base, 700, 3, "stderr", strings.Join(numbered(16, 20), "\n")+"\n", now)
	if gens, _ := LogGens(base); !slices.Equal(gens, []uint64{1, 2}) {
		t.Fatalf("generations %v, want [1 2]: a restarted logger continues the last file", gens)
	}
	got := readAll(t, base, LogRead{})
	if !slices.Equal(texts(got), numbered(1, 20)) || got[19].Stream != "stderr" {
		t.Fatalf("read back %q", texts(got))
	}
}

func TestLogReadWindow(t *testing.T) {
	base := filepath.Join(t.TempDir(), "t.log")
	writeLog(t, base, 700, 10, "stdout", strings.Join(numbered(1, 50), "\n")+"\n", clock(t0))
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	tests := []struct {
		name string
		tail int
		r    LogRead
		want []string
	}{
		{"all", 0, LogRead{}, numbered(1, 50)},
		{"since", 0, LogRead{Since: sec(45)}, numbered(45, 50)},
		{"until", 0, LogRead{Until: sec(5)}, numbered(1, 5)},
		{"since and until", 0, LogRead{Since: sec(20), Until: sec(22)}, numbered(20, 22)},
		{"tail within a file", 3, LogRead{}, numbered(48, 50)},
		{"tail across files", 15, LogRead{}, numbered(36, 50)},
		{"tail longer than the log", 80, LogRead{}, numbered(1, 50)},
		{"tail and since", 10, LogRead{Since: sec(45)}, numbered(45, 50)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			r.MaxBytes = 300
			if tc.tail > 0 {
				pos, err := LogTail(base, tc.tail)
				if err != nil {
					t.Fatal(err)
				}
				r.From = pos
			}
			if got := texts(readAll(t, base, r)); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLogReadSkipsRotatedPosition(t *testing.T) {
	base := filepath.Join(t.TempDir(), "t.log")
	writeLog(t, base, 700, 2, "stdout", strings.Join(numbered(1, 50), "\n")+"\n", clock(t0))
	ch, err := ReadLog(base, LogRead{From: LogPos{Gen: 1, Off: 67}})
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Skipped || len(ch.Entries) == 0 || ch.Entries[0].Text != "line 031" {
		t.Fatalf("a position in a deleted file: skipped=%v first=%v; want the oldest kept line, marked skipped", ch.Skipped, texts(ch.Entries[:min(1, len(ch.Entries))]))
	}
}

func TestLogPartialWriteWaits(t *testing.T) {
	base := filepath.Join(t.TempDir(), "t.log")
	writeLog(t, base, 1<<20, 2, "stdout", "a\n", clock(t0))
	f, _ := os.OpenFile(LogFileName(base, 1), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"log":"b\n","stream":"std`)
	f.Close()
	ch, _ := ReadLog(base, LogRead{})
	if got := texts(ch.Entries); !slices.Equal(got, []string{"a"}) || ch.Next.Off != fileSize(LogFileName(base, 1))-int64(len(`{"log":"b\n","stream":"std`)) {
		t.Fatalf("got %q next %+v: a line being written must wait for its newline", got, ch.Next)
	}
}

func TestLogSinceSeeks(t *testing.T) {
	base := filepath.Join(t.TempDir(), "t.log")
	writeLog(t, base, 40<<10, 10, "stdout", strings.Join(numbered(1, 999), "\n")+"\n", clock(t0))
	gens, _ := LogGens(base)
	if len(gens) < 2 {
		t.Fatalf("generations %v: want several files", gens)
	}
	for _, n := range []int{1, 2, 500, 998, 999} {
		since := t0.Add(time.Duration(n) * time.Second)
		pos, err := LogSince(base, since)
		if err != nil {
			t.Fatal(err)
		}
		got := texts(readAll(t, base, LogRead{From: pos, Since: since, MaxBytes: 4096}))
		if want := numbered(n, 999); !slices.Equal(got, want) {
			t.Fatalf("since line %d: got %d lines from %q, want %d", n, len(got), got[:min(1, len(got))], len(want))
		}
		if n >= 500 && pos.Gen == gens[0] && pos.Off == 0 {
			t.Errorf("since line %d: seek stayed at the start", n)
		}
	}
	// After the last line: the end.
	pos, _ := LogSince(base, time.Now().Add(time.Hour))
	if ch, _ := ReadLog(base, LogRead{From: pos}); len(ch.Entries) != 0 {
		t.Fatalf("since after every line: %d lines", len(ch.Entries))
	}
}
