package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/warrenorch/warren/messages"
)

// LogOptions select the lines Logs reads.
type LogOptions struct {
	Service string // a service's tasks; or
	TaskID  string // one task (id or unique prefix)
	Since   time.Time
	Until   time.Time
	Tail    int  // per task, the last N lines (0: all)
	Follow  bool // keep reading new lines, new replicas and restarts
	// MaxBytes bounds one answer (0: the manager's default).
	MaxBytes int
}

// LogNotice says something about the lines that are delivered: nodes that
// stopped or started answering again, tasks whose oldest lines were
// rotated away while being read.
type LogNotice struct {
	Unreachable []string // newly unreachable nodes
	Back        []string // nodes that answer again
	Skipped     []string // tasks with lines lost to rotation
}

// followWait is how long a manager waits for new lines before answering
// an empty chunk when following.
const followWait = time.Second

// Logs reads task logs chunk by chunk, calling line for each line (in time
// order, with the display names of tasks and nodes by id) and notice when nodes go missing or come back, until the lines
// are read (or, when following, until ctx ends or a callback fails). Each
// chunk is asked for only after the previous one was handed over: a slow
// reader slows the reading, nothing piles up.
func (c *Client) Logs(ctx context.Context, opts LogOptions, line func(l *messages.LogLine, names map[string]string) error, notice func(LogNotice)) error {
	req := &messages.ReadLogsRequest{Service: opts.Service, TaskId: opts.TaskID, Tail: uint32(max(opts.Tail, 0)), MaxBytes: uint32(max(opts.MaxBytes, 0))}
	if !opts.Since.IsZero() {
		req.SinceUnixNano = opts.Since.UnixNano()
	}
	if !opts.Until.IsZero() {
		req.UntilUnixNano = opts.Until.UnixNano()
	}
	// Without -f, what was written when asked, as `docker logs`: a task
	// writing faster than the reading goes would otherwise never let it
	// end. With a tail, from the second chunk on: the last lines of a busy
	// task were written after the request left.
	var asked int64
	if !opts.Follow && opts.Until.IsZero() {
		asked = time.Now().UnixNano()
		if opts.Tail == 0 {
			req.UntilUnixNano = asked
		}
	}
	if opts.Follow {
		req.WaitMs = uint32(followWait.Milliseconds())
	}
	var down []string
	for ctx.Err() == nil {
		res, err := typed[*messages.ReadLogsReply](c.RequestTimeout(req, followWait+10*time.Second))
		if err != nil {
			var e *Error
			if opts.Follow && !errors.As(err, &e) && ctx.Err() == nil {
				// The manager did not answer: try again, it may be back.
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			return fmt.Errorf("read logs: %w", err)
		}
		for _, l := range res.Lines {
			if err := line(l, res.Names); err != nil {
				return err
			}
		}
		if n := diffNodes(down, res.Unreachable); notice != nil && (len(n.Unreachable) > 0 || len(n.Back) > 0 || len(res.Skipped) > 0) {
			n.Skipped = res.Skipped
			notice(n)
		}
		down = res.Unreachable
		// The first request's tail placed the cursors; a task without one
		// later is new and is read from its start.
		req.Cursors, req.Tail = res.Cursors, 0
		if asked != 0 {
			req.UntilUnixNano = asked
		}
		if !res.More && !opts.Follow {
			return nil
		}
	}
	return nil
}

func diffNodes(before, now []string) LogNotice {
	var n LogNotice
	for _, x := range now {
		if !slices.Contains(before, x) {
			n.Unreachable = append(n.Unreachable, x)
		}
	}
	for _, x := range before {
		if !slices.Contains(now, x) {
			n.Back = append(n.Back, x)
		}
	}
	return n
}
