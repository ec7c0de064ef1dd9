package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// A task's logger is this binary run by containerd's shim (runtime/logs.go):
// it must start before the CLI parses anything.
func init() {
	if len(os.Args) == 3 && os.Args[1] == runtime.LoggerArg {
		os.Exit(runtime.RunLogger(os.Args[2]))
	}
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new lines, across task restarts and new replicas"},
		&cli.StringFlag{Name: "since", Usage: "only lines since a time (RFC3339) or a duration ago (10m)"},
		&cli.StringFlag{Name: "until", Usage: "only lines until a time (RFC3339) or a duration ago (10m)"},
		&cli.StringFlag{Name: "tail", Usage: "the last `N` lines of each task, or all", Value: "all"},
		&cli.BoolFlag{Name: "timestamps", Aliases: []string{"t"}, Usage: "print each line's time"},
		&cli.BoolFlag{Name: "raw", Usage: "print the lines only, with no task prefix"},
		&cli.BoolFlag{Name: "no-task-ids", Usage: "leave task ids out of the prefix"},
		outputFlag(),
	}
}

// serviceLogsCommand is `service logs`.
func serviceLogsCommand() *cli.Command {
	return &cli.Command{Name: "logs", Usage: "print what a service's tasks wrote to stdout and stderr, from every node", ArgsUsage: "SERVICE",
		Flags: logFlags(), OnUsageError: usageError, Action: logsAction("one service name", func(o *client.LogOptions, arg string) { o.Service = arg })}
}

// taskCommand is the `task` group.
func taskCommand() *cli.Command {
	return &cli.Command{
		Name:  "task",
		Usage: "work with one task",
		Subcommands: withUsage([]*cli.Command{
			{Name: "logs", Usage: "print what a task wrote to stdout and stderr, even after it exited or was replaced", ArgsUsage: "TASK-ID",
				Flags: logFlags(), Action: logsAction("one task id (see `warren service ps SERVICE -a`)", func(o *client.LogOptions, arg string) { o.TaskID = arg })},
		}),
	}
}

func logsAction(what string, target func(*client.LogOptions, string)) cli.ActionFunc {
	check := func(c *cli.Context) (client.LogOptions, logFormat, error) {
		var o client.LogOptions
		if err := exactArgs(c, 1, what); err != nil {
			return o, logFormat{}, err
		}
		target(&o, c.Args().First())
		now := time.Now()
		var err error
		if o.Since, err = parseTimeArg("--since", c.String("since"), now); err != nil {
			return o, logFormat{}, err
		}
		if o.Until, err = parseTimeArg("--until", c.String("until"), now); err != nil {
			return o, logFormat{}, err
		}
		if o.Tail, err = parseTail(c.String("tail")); err != nil {
			return o, logFormat{}, err
		}
		if c.String("tail") == "0" && o.Since.Before(now) {
			o.Since = now // Docker's --tail 0: only what comes next
		}
		o.Follow = c.Bool("follow")
		f := logFormat{json: c.String("output") == "json", timestamps: c.Bool("timestamps"), raw: c.Bool("raw"), noTaskIDs: c.Bool("no-task-ids")}
		return o, f, nil
	}
	return func(c *cli.Context) error {
		// Flags are checked before any connection is made.
		if _, _, err := check(c); err != nil {
			return err
		}
		return withClient(func(c *cli.Context, cl *client.Client) error {
			o, f, _ := check(c)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			p := &logPrinter{f: f, stdout: os.Stdout, stderr: os.Stderr}
			return cl.Logs(ctx, o, p.line, p.notice)
		})(c)
	}
}

func parseTail(s string) (int, error) {
	if s == "" || s == "all" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--tail %q: give a number of lines or all", s)
	}
	return n, nil
}

// logFormat is how lines are printed.
type logFormat struct {
	json, timestamps, raw, noTaskIDs bool
}

// logPrinter writes lines as they arrive: stdout lines to stdout, stderr
// lines to stderr (as `docker service logs` does), all to stdout as JSON
// lines with -o json; notices go to stderr.
type logPrinter struct {
	f              logFormat
	stdout, stderr io.Writer
	names          map[string]string
	width          int    // of the widest prefix so far, to align the lines
	open           string // task/stream whose last line was partial
}

// logJSON is one line of `-o json`.
type logJSON struct {
	Time     string `json:"time"`
	Task     string `json:"task"`
	TaskName string `json:"task_name,omitempty"`
	Node     string `json:"node"`
	NodeName string `json:"node_name,omitempty"`
	Stream   string `json:"stream"`
	Log      string `json:"log"`
	Partial  bool   `json:"partial,omitempty"`
}

func (p *logPrinter) line(l *messages.LogLine, names map[string]string) error {
	p.names = names
	t := time.Unix(0, l.TimeUnixNano).UTC()
	if p.f.json {
		b, err := json.Marshal(logJSON{Time: t.Format(time.RFC3339Nano), Task: l.TaskId, TaskName: p.names[l.TaskId], Node: l.NodeId,
			NodeName: p.names[l.NodeId], Stream: l.Stream, Log: l.Text, Partial: l.Partial})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.stdout, "%s\n", b)
		return err
	}
	var b strings.Builder
	// The rest of a split line goes on where its start ended.
	cont := p.open == l.TaskId+"/"+l.Stream
	if !p.f.raw && !cont {
		prefix := p.prefix(l)
		p.width = max(p.width, len(prefix))
		fmt.Fprintf(&b, "%-*s | ", p.width, prefix)
	}
	if p.f.timestamps && !cont {
		b.WriteString(t.Format(time.RFC3339Nano))
		b.WriteByte(' ')
	}
	p.open = ""
	if l.Partial {
		p.open = l.TaskId + "/" + l.Stream
	}
	b.WriteString(l.Text)
	if !l.Partial {
		b.WriteByte('\n')
	}
	w := p.stdout
	if l.Stream == "stderr" {
		w = p.stderr
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// prefix is Docker's: name.slot.taskid@node, the task id shortened.
func (p *logPrinter) prefix(l *messages.LogLine) string {
	name, node := p.names[l.TaskId], p.names[l.NodeId]
	if node == "" {
		node = short(l.NodeId)
	}
	switch {
	case name == "" || name == l.TaskId:
		return short(l.TaskId) + "@" + node
	case p.f.noTaskIDs:
		return name + "@" + node
	}
	return name + "." + short(l.TaskId) + "@" + node
}

func (p *logPrinter) notice(n client.LogNotice) {
	for _, node := range n.Unreachable {
		fmt.Fprintf(p.stderr, "warning: node %s unreachable: logs from it are missing (they follow once it answers again)\n", node)
	}
	for _, node := range n.Back {
		fmt.Fprintf(p.stderr, "node %s answers again\n", node)
	}
	for _, task := range n.Skipped {
		fmt.Fprintf(p.stderr, "warning: task %s: lines were rotated away before they were read (raise --log-max-size or --log-max-files on its node)\n", short(task))
	}
}

// Node flags: the caps of each task's log files.
func logMaxSizeFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-max-size", Value: "10m", Usage: "rotate a task's log file at this size (k, m, g)",
		Action: func(_ *cli.Context, v string) error {
			if n, err := parseBytes(v); err != nil || n < 4<<10 {
				return fmt.Errorf("--log-max-size %q: give a size of at least 4k, e.g. 10m", v)
			}
			return nil
		}}
}

func logMaxFilesFlag() cli.Flag {
	return &cli.IntFlag{Name: "log-max-files", Value: runtime.DefaultLogMaxFiles, Usage: "log files kept per task, the current one included",
		Action: func(_ *cli.Context, v int) error {
			if v < 1 {
				return fmt.Errorf("--log-max-files %d: keep at least 1 file", v)
			}
			return nil
		}}
}

// taskLogOptions reads the node's log flags (their Actions checked them).
func taskLogOptions(c *cli.Context) runtime.LogOptions {
	size, _ := parseBytes(c.String("log-max-size"))
	return runtime.LogOptions{MaxSize: size, MaxFiles: c.Int("log-max-files")}
}
