package worker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// Task logs live at <LogDir>/<service id>/<task id>.log.<gen> (see
// runtime/logs.go): by service, so that the logs of a task the store has
// pruned can still be found by its service.

// TaskLogPath is the base path of a task's log files.
func TaskLogPath(dir, serviceID, taskID string) string {
	return filepath.Join(dir, serviceID, taskID+".log")
}

const (
	// defaultLogChunk is what one node answer carries at most when the
	// request names no size: well under remoting's frame limit.
	defaultLogChunk = 1 << 20
	maxLogChunk     = 4 << 20
	// minTaskChunk keeps every task progressing when many share a chunk.
	minTaskChunk = 32 << 10
	// logPoll is how often a follow request looks for new lines.
	logPoll = 100 * time.Millisecond
)

// taskLogs finds the log bases of the tasks a request names.
func taskLogs(dir string, m *messages.ReadNodeLogs) map[string]string {
	out := map[string]string{}
	add := func(svcDir, name string) {
		i := strings.Index(name, ".log.")
		if i <= 0 {
			return
		}
		task := name[:i]
		if len(m.TaskIds) > 0 && !slices.Contains(m.TaskIds, task) {
			return
		}
		out[task] = filepath.Join(svcDir, task+".log")
	}
	var svcDirs []string
	if m.ServiceId != "" {
		svcDirs = []string{filepath.Join(dir, filepath.Base(m.ServiceId))}
	} else {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				svcDirs = append(svcDirs, filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, sd := range svcDirs {
		ents, _ := os.ReadDir(sd)
		for _, e := range ents {
			add(sd, e.Name())
		}
	}
	return out
}

// readNodeLogs answers one request from the files under dir, waiting up to
// the request's wait for a first line when there is none.
func readNodeLogs(dir, nodeID string, m *messages.ReadNodeLogs) *messages.ReadNodeLogsReply {
	deadline := time.Now().Add(time.Duration(min(m.WaitMs, 30_000)) * time.Millisecond)
	for {
		r, idle := readNodeLogsOnce(dir, nodeID, m)
		if !idle || !time.Now().Before(deadline) {
			return r
		}
		// Carry the positions found (a tail computed, a file found) into
		// the next look, so a line written meanwhile is not missed.
		m.Cursors, m.Tail = r.Cursors, 0
		time.Sleep(logPoll)
	}
}

// readNodeLogsOnce reads one chunk; idle says there was nothing to send
// and more may come.
func readNodeLogsOnce(dir, nodeID string, m *messages.ReadNodeLogs) (*messages.ReadNodeLogsReply, bool) {
	tasks := taskLogs(dir, m)
	r := &messages.ReadNodeLogsReply{}
	if len(tasks) == 0 {
		return r, true
	}
	total := int(m.MaxBytes)
	if total <= 0 {
		total = defaultLogChunk
	}
	total = min(total, maxLogChunk)
	per := max(total/len(tasks), minTaskChunk)
	cursors := map[string]*messages.LogCursor{}
	for _, c := range m.Cursors {
		if c.NodeId == nodeID || c.NodeId == "" {
			cursors[c.TaskId] = c
		}
	}
	var since, until time.Time
	if m.SinceUnixNano > 0 {
		since = time.Unix(0, m.SinceUnixNano)
	}
	if m.UntilUnixNano > 0 {
		until = time.Unix(0, m.UntilUnixNano)
	}
	ids := make([]string, 0, len(tasks))
	for id := range tasks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	idle, open := true, false
	for _, id := range ids {
		base := tasks[id]
		var from runtime.LogPos
		if c, ok := cursors[id]; ok {
			from = runtime.LogPos{Gen: c.Gen, Off: c.Offset}
		} else if m.Tail > 0 {
			from, _ = runtime.LogTail(base, int(m.Tail))
		}
		if _, ok := cursors[id]; !ok && !since.IsZero() {
			// Seek rather than read through what is older (the later
			// of the tail and since wins).
			if at, err := runtime.LogSince(base, since); err == nil && later(at, from) {
				from = at
			}
		}
		r.Starts = append(r.Starts, &messages.LogCursor{NodeId: nodeID, TaskId: id, Gen: from.Gen, Offset: from.Off})
		ch, err := runtime.ReadLog(base, runtime.LogRead{From: from, MaxBytes: per, Since: since, Until: until})
		if err != nil {
			r.Error = err.Error()
		}
		for _, e := range ch.Entries {
			r.Lines = append(r.Lines, &messages.LogLine{
				TaskId: id, NodeId: nodeID, Stream: e.Stream, TimeUnixNano: e.Time.UnixNano(),
				Text: e.Text, Partial: e.Partial, Gen: e.End.Gen, EndOffset: e.End.Off,
			})
		}
		r.Cursors = append(r.Cursors, &messages.LogCursor{NodeId: nodeID, TaskId: id, Gen: ch.Next.Gen, Offset: ch.Next.Off})
		if ch.More {
			r.More = append(r.More, id)
		}
		if ch.Skipped {
			r.Skipped = append(r.Skipped, id)
		}
		if len(ch.Entries) > 0 || ch.More {
			idle = false
		}
		if !ch.Done {
			open = true
		}
	}
	return r, idle && open
}

func later(a, b runtime.LogPos) bool {
	return a.Gen > b.Gen || (a.Gen == b.Gen && a.Off > b.Off)
}
