package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// LogPos is a position in a task's log: a generation and a byte offset in
// its file. It stays valid until that file is rotated away.
type LogPos struct {
	Gen uint64
	Off int64
}

// LogEntry is one line read back from a task's log.
type LogEntry struct {
	Stream  string // stdout or stderr
	Time    time.Time
	Text    string // without its newline
	Partial bool   // the line goes on in the next entry (it had no newline)
	End     LogPos // where the line after this one starts
}

// LogRead bounds one read of a task's log.
type LogRead struct {
	From     LogPos    // a zero Gen reads from the oldest line kept
	MaxBytes int       // of file read; at least one line is returned
	Since    time.Time // lines before are skipped (zero: none)
	Until    time.Time // lines after end the read (zero: none)
}

// LogChunk is what one read found.
type LogChunk struct {
	Entries []LogEntry
	Next    LogPos // where the next read starts
	More    bool   // lines are waiting beyond Next already
	Done    bool   // a line past Until was reached: nothing more will match
	Skipped bool   // From's file was rotated away: lines were lost between
}

// ReadLog reads whole lines from base's log at r.From onwards.
func ReadLog(base string, r LogRead) (LogChunk, error) {
	gens, err := LogGens(base)
	if err != nil || len(gens) == 0 {
		return LogChunk{Next: r.From}, err
	}
	ch := LogChunk{Next: r.From}
	if ch.Next.Gen < gens[0] {
		ch.Skipped = ch.Next.Gen != 0
		ch.Next = LogPos{Gen: gens[0]}
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = 1 << 20
	}
	budget := r.MaxBytes
	for i := 0; i < len(gens); i++ {
		g := gens[i]
		if g < ch.Next.Gen {
			continue
		}
		if g > ch.Next.Gen {
			ch.Next = LogPos{Gen: g}
		}
		newest := i == len(gens)-1
		n, more, done, err := readGen(base, &ch, r, budget)
		if err != nil {
			return ch, err
		}
		budget -= n
		if done {
			ch.Done = true
			return ch, nil
		}
		if more || budget <= 0 {
			ch.More = more || !newest || ch.Next.Off < fileSize(LogFileName(base, g))
			return ch, nil
		}
	}
	return ch, nil
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// readGen reads complete lines of ch.Next's file into ch, up to budget
// bytes (at least one line). It reports the bytes consumed, whether the
// budget stopped it before the end of the file, and whether a line past
// Until was met.
func readGen(base string, ch *LogChunk, r LogRead, budget int) (int, bool, bool, error) {
	f, err := os.Open(LogFileName(base, ch.Next.Gen))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, false, nil // rotated away while we listed: go on
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	size := min(int64(budget)+maxLogLine+512, 4<<20)
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, ch.Next.Off)
	if err != nil && err != io.EOF {
		return 0, false, false, fmt.Errorf("read log: %w", err)
	}
	buf = buf[:n]
	used := 0
	for used < len(buf) {
		nl := bytes.IndexByte(buf[used:], '\n')
		if nl < 0 {
			break // a line being written: the next read gets it whole
		}
		if used > 0 && used+nl+1 > budget {
			return used, true, false, nil
		}
		raw := buf[used : used+nl]
		used += nl + 1
		ch.Next.Off += int64(nl + 1)
		e, ok := ParseLogLine(raw)
		if !ok {
			continue
		}
		if !r.Until.IsZero() && e.Time.After(r.Until) {
			return used, false, true, nil
		}
		if !r.Since.IsZero() && e.Time.Before(r.Since) {
			continue
		}
		e.End = ch.Next
		ch.Entries = append(ch.Entries, e)
	}
	return used, int64(n) == size, false, nil
}

// ParseLogLine decodes one json-file line; false for a line that is not one.
func ParseLogLine(b []byte) (LogEntry, bool) {
	var l jsonLine
	if err := json.Unmarshal(b, &l); err != nil {
		return LogEntry{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return LogEntry{}, false
	}
	text, complete := strings.CutSuffix(l.Log, "\n")
	return LogEntry{Stream: l.Stream, Time: t, Text: text, Partial: !complete}, true
}

// LogTail is the position n lines before the end of base's log (the oldest
// line kept when it has fewer).
func LogTail(base string, n int) (LogPos, error) {
	gens, err := LogGens(base)
	if err != nil || len(gens) == 0 {
		return LogPos{}, err
	}
	for i := len(gens) - 1; i >= 0; i-- {
		off, left, err := tailOffset(LogFileName(base, gens[i]), n)
		if err != nil {
			return LogPos{}, err
		}
		if left == 0 {
			return LogPos{Gen: gens[i], Off: off}, nil
		}
		n = left
	}
	return LogPos{Gen: gens[0]}, nil
}

// tailOffset finds where the last n complete lines of a file start, reading
// backwards in blocks; left is how many of the n it did not find.
func tailOffset(path string, n int) (int64, int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, n, nil
	}
	if err != nil {
		return 0, n, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, n, err
	}
	end := st.Size()
	const block = 64 << 10
	buf := make([]byte, block)
	// The (n+1)th newline from the end is where the last n lines start.
	seen := 0
	for end > 0 {
		start := max(end-block, 0)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
			return 0, n, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != '\n' {
				continue
			}
			if seen++; seen == n+1 {
				return start + int64(i) + 1, 0, nil
			}
		}
		end = start
	}
	return 0, n - seen, nil
}

// sinceSlack is how far before since a seek may land: stdout and stderr
// are stamped by two readers, so a file is in time order only to within
// their buffering.
const sinceSlack = time.Second

// LogSince is a position at or shortly before the first line at or after
// since, found without reading the lines before it: files last written
// before since are skipped, and the file holding since is bisected. Reads
// from it still filter by since.
func LogSince(base string, since time.Time) (LogPos, error) {
	gens, err := LogGens(base)
	if err != nil || len(gens) == 0 {
		return LogPos{}, err
	}
	for _, g := range gens {
		st, err := os.Stat(LogFileName(base, g))
		if err != nil || st.ModTime().Before(since) {
			continue // rotated away meanwhile, or every line of it is older
		}
		off, err := bisectSince(LogFileName(base, g), st.Size(), since.Add(-sinceSlack))
		return LogPos{Gen: g, Off: off}, err
	}
	last := gens[len(gens)-1]
	return LogPos{Gen: last, Off: fileSize(LogFileName(base, last))}, nil
}

// bisectSince finds the start of a line whose time is before t and after
// which every line sampled was at or after t (0 when the first already is).
func bisectSince(path string, size int64, t time.Time) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil // rotated away: read from its start, ReadLog moves on
	}
	defer f.Close()
	buf := make([]byte, 2*maxLogLine+1024)
	// lineAt is the first whole line starting at or after off, and its time.
	lineAt := func(off int64) (int64, time.Time, bool) {
		n, _ := f.ReadAt(buf, off)
		b := buf[:n]
		start := 0
		if off > 0 {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return 0, time.Time{}, false
			}
			start = i + 1
		}
		end := bytes.IndexByte(b[start:], '\n')
		if end < 0 {
			return 0, time.Time{}, false
		}
		e, ok := ParseLogLine(b[start : start+end])
		return off + int64(start), e.Time, ok
	}
	lo, hi := int64(0), size // the answer is in [lo, hi]
	for hi-lo > int64(len(buf)) {
		mid := lo + (hi-lo)/2
		pos, at, ok := lineAt(mid)
		if !ok {
			break
		}
		if at.Before(t) {
			lo = pos
		} else {
			hi = mid
		}
	}
	return lo, nil
}
