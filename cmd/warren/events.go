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
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show the manager's event history (actor lifecycle and state changes), or follow it",
		Description: "Without -f, prints the history in range and exits; with -f, the history from --since (if given) then live events, with no gap and no duplicate between them.\n" +
			"--since and --until take a duration back from now (1h, 30m), a time (RFC 3339: 2026-12-03T15:04:05Z) or a sequence number (1234).\n" +
			"--filter KEY=VALUE, repeatable, KEY one of type (a prefix: task., task.failed), service (name), node (hostname, id or id prefix), task (id or prefix); " +
			"values of one key are alternatives, different keys must all match.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep streaming new events"},
			&cli.StringFlag{Name: "since", Usage: "only events after this `DURATION|TIME|SEQ`"},
			&cli.StringFlag{Name: "until", Usage: "stop at this `DURATION|TIME|SEQ`"},
			&cli.StringSliceFlag{Name: "filter", Usage: "`KEY=VALUE` with KEY type, service, node or task (repeatable)"},
			&cli.StringSliceFlag{Name: "type", Usage: "same as --filter type=PREFIX", Hidden: true},
			outputFlag(),
		},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			// Every flag is checked before any connection.
			opts, err := eventOptions(c, time.Now())
			if err != nil {
				return err
			}
			if err := checkOutput(c); err != nil {
				return err
			}
			return withClient(func(c *cli.Context, cl *client.Client) error { return followEvents(c, cl, opts) })(c)
		},
	}
}

// eventOptions turns the flags into the hub's selection.
func eventOptions(c *cli.Context, now time.Time) (client.EventOptions, error) {
	opts := client.EventOptions{HistoryOnly: !c.Bool("follow"), Types: c.StringSlice("type")}
	for _, f := range c.StringSlice("filter") {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" {
			return opts, fmt.Errorf("--filter %q: give KEY=VALUE, e.g. --filter type=task. or --filter service=web", f)
		}
		switch k {
		case "type":
			opts.Types = append(opts.Types, v)
		case "service":
			opts.Services = append(opts.Services, v)
		case "node":
			opts.Nodes = append(opts.Nodes, v)
		case "task":
			opts.Tasks = append(opts.Tasks, v)
		default:
			return opts, fmt.Errorf("--filter %q: unknown key %q: use type, service, node or task", f, k)
		}
	}
	if s := c.String("since"); s != "" {
		seq, t, err := seqOrTime("--since", s, now)
		if err != nil {
			return opts, err
		}
		opts.SinceSeq, opts.Since = seq, t
		opts.Replay = true
	}
	if s := c.String("until"); s != "" {
		seq, t, err := seqOrTime("--until", s, now)
		if err != nil {
			return opts, err
		}
		opts.UntilSeq, opts.Until = seq, t
	}
	return opts, nil
}

// seqOrTime reads a bound: a sequence number, a duration back from now or
// a time.
func seqOrTime(flag, s string, now time.Time) (uint64, time.Time, error) {
	if seq, err := strconv.ParseUint(s, 10, 64); err == nil {
		return seq, time.Time{}, nil
	}
	t, err := parseTimeArg(flag, s, now)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%w, or a sequence number (1234)", err)
	}
	return 0, t, nil
}

func followEvents(c *cli.Context, cl *client.Client, opts client.EventOptions) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if !opts.Until.IsZero() && c.Bool("follow") {
		// Following up to a time ends then, even if nothing happens.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, opts.Until)
		defer cancel()
	}
	if len(opts.Nodes) > 0 {
		// Events name nodes by id; people name them by hostname.
		nodes, err := cl.ListNodes()
		if err != nil {
			return err
		}
		opts.Nodes = nodeIDs(opts.Nodes, nodes)
	}
	opts.OnMissed = func(n uint64) {
		fmt.Fprintf(os.Stderr, "warren: %d events were dropped from the manager's history (its retention: --events-max-age, --events-max-count) before they could be shown; the stream goes on after them\n", n)
	}
	return cl.Events(ctx, opts, eventPrinter(os.Stdout, c.String("output") == "json"))
}

// nodeIDs replaces each hostname among names by its node's id; anything
// else is passed on as an id or id prefix.
func nodeIDs(names []string, nodes []*messages.Node) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		id := n
		for _, node := range nodes {
			if node.GetDescription().GetHostname() == n {
				id = node.Id
				break
			}
		}
		out = append(out, id)
	}
	return out
}

// eventRecord is one line of `warren events -o json`: stable keys, numbers
// as numbers, for jq.
type eventRecord struct {
	Seq      uint64            `json:"seq"`
	Time     string            `json:"time"` // RFC 3339, UTC, nanoseconds
	UnixNano int64             `json:"unix_nano"`
	Type     string            `json:"type"`
	Node     string            `json:"node,omitempty"` // the node that recorded it
	Actor    string            `json:"actor,omitempty"`
	Subject  string            `json:"subject,omitempty"`
	Message  string            `json:"message,omitempty"`
	Service  string            `json:"service,omitempty"`
	Task     string            `json:"task,omitempty"`
	Attrs    map[string]string `json:"attrs,omitempty"`
}

func eventPrinter(w io.Writer, asJSON bool) func(*messages.Event) error {
	if !asJSON {
		return func(ev *messages.Event) error { return renderEvent(w, ev) }
	}
	enc := json.NewEncoder(w)
	return func(ev *messages.Event) error {
		return enc.Encode(eventRecord{
			Seq: ev.Seq, Time: time.Unix(0, ev.UnixNano).UTC().Format(time.RFC3339Nano), UnixNano: ev.UnixNano,
			Type: ev.Type, Node: ev.Node, Actor: ev.Actor, Subject: ev.Subject, Message: ev.Message,
			Service: ev.Attrs["service"], Task: events.TaskOf(ev), Attrs: ev.Attrs,
		})
	}
}

func debugCommand() *cli.Command {
	return &cli.Command{
		Name:   "debug",
		Hidden: true,
		Subcommands: withUsage([]*cli.Command{
			{Name: "crash", Usage: "make an actor panic (node needs --enable-debug)", ArgsUsage: "ACTOR-ID",
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if err := exactArgs(c, 1, "one actor id, e.g. manager/leader/scheduler"); err != nil {
						return err
					}
					return cl.DebugCrash(c.Args().First())
				})},
		}),
	}
}

// eventsMaxAgeFlag and eventsMaxCountFlag are the node flags (cluster init
// and join) that bound its event history.
func eventsMaxAgeFlag() cli.Flag {
	return &cli.DurationFlag{Name: "events-max-age", Value: events.DefaultMaxAge, Usage: "drop events older than this from the node's event history; 0 keeps them whatever their age",
		Action: func(_ *cli.Context, d time.Duration) error {
			if d < 0 {
				return fmt.Errorf("--events-max-age %v: give a positive duration (168h), or 0 for no age limit", d)
			}
			return nil
		}}
}

func eventsMaxCountFlag() cli.Flag {
	return &cli.IntFlag{Name: "events-max-count", Value: events.DefaultMaxCount, Usage: "keep at most this many events in the node's event history (and at most 64 MiB of them)",
		Action: func(_ *cli.Context, n int) error {
			if n < 1 {
				return fmt.Errorf("--events-max-count %d: give at least 1", n)
			}
			return nil
		}}
}
