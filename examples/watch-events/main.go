// Command watch-events shows how a Go program follows a Warren cluster as it
// happens: it connects with the public client (the same credentials the CLI
// uses), subscribes to the manager's events hub and prints every event —
// actor lifecycle (actor.started, actor.restarting, ...) and state changes
// (service.created, task.running, node.down, ...) — one line each, until
// Ctrl-C. It is the stream `warren events --follow` shows.
//
//	go run ./examples/watch-events
//	go run ./examples/watch-events --config-dir /etc/warren --type task.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

// prefixes collects repeated --type flags.
type prefixes []string

func (p *prefixes) String() string     { return strings.Join(*p, ",") }
func (p *prefixes) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	configDir := flag.String("config-dir", client.DefaultConfigDir(), "where the cluster address and credentials are (as for the warren CLI)")
	var types prefixes
	flag.Var(&types, "type", "only events whose type starts with this, e.g. actor. or task. (repeatable)")
	flag.Parse()

	if err := run(*configDir, types); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(configDir string, types []string) error {
	cl, err := client.Dial(client.Options{ConfigDir: configDir})
	if err != nil {
		return err
	}
	defer cl.Close()

	// Ctrl-C cancels ctx; Events then returns nil and the deferred Close
	// unsubscribes and stops the client's endpoint.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(os.Stderr, "watching events from %s (Ctrl-C to stop)\n", cl.Manager())
	// No Replay: like `warren events --follow`, only what happens from now on.
	return cl.Events(ctx, client.EventOptions{Types: types}, func(ev *messages.Event) error {
		_, err := fmt.Println(line(ev))
		return err
	})
}

// line formats an event as `warren events` does: time, sequence number,
// type, subject (or the actor for lifecycle events), attributes, message.
func line(ev *messages.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %6d %-18s", time.Unix(0, ev.UnixNano).UTC().Format("2006-01-02T15:04:05.000Z"), ev.Seq, ev.Type)
	subject := ev.Subject
	if subject == "" {
		subject = ev.Actor
	}
	b.WriteString(" " + subject)
	if len(ev.Attrs) > 0 {
		keys := make([]string, 0, len(ev.Attrs))
		for k := range ev.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys) // map order is random; a stable line is greppable
		attrs := make([]string, len(keys))
		for i, k := range keys {
			attrs[i] = k + "=" + ev.Attrs[k]
		}
		b.WriteString(" (" + strings.Join(attrs, ", ") + ")")
	}
	if ev.Message != "" {
		b.WriteString(": " + ev.Message)
	}
	return b.String()
}
