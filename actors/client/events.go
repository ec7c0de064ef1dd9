package client

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
)

// EventOptions selects events. The manager's hub applies every filter, so
// what is not wanted never crosses the network.
type EventOptions struct {
	Replay   bool     // send the stored history first, then follow with no gap between them
	SinceSeq uint64   // with Replay or HistoryOnly: only events after this sequence number
	Types    []string // type prefixes, e.g. "actor.", "service."; empty = all
	// HistoryOnly: the history in range, then Events returns nil.
	HistoryOnly bool
	Services    []string // service names
	Nodes       []string // node ids or id prefixes
	Tasks       []string // task ids or id prefixes
	Since       time.Time
	// Until and UntilSeq end the stream at the first event past them.
	Until    time.Time
	UntilSeq uint64
	// OnMissed is told how many events the hub's history dropped
	// (retention) before they could be sent: a subscriber far behind.
	// Nil ignores it; the stream goes on after the gap either way.
	OnMissed func(n uint64)
}

func (o EventOptions) subscribe(pid *actor.PID) *messages.SubscribeEvents {
	f := &messages.EventFilter{Types: o.Types, Services: o.Services, Nodes: o.Nodes, Tasks: o.Tasks, UntilSeq: o.UntilSeq}
	if !o.Since.IsZero() {
		f.SinceUnixNano = o.Since.UnixNano()
	}
	if !o.Until.IsZero() {
		f.UntilUnixNano = o.Until.UnixNano()
	}
	return &messages.SubscribeEvents{Subscriber: pid, Replay: o.Replay, SinceSeq: o.SinceSeq, HistoryOnly: o.HistoryOnly, Filter: f}
}

// delivery is one thing the watcher hands on: an event, a gap, or the end.
type delivery struct {
	ev     *messages.Event
	missed uint64
	end    bool
}

// watcher is the local actor the hub streams batches to. It acks a batch
// once its events are in the channel: a slow reader stops the acks, and the
// hub then stops sending (it holds nothing in memory for us; we catch up
// from its history on disk).
type watcher struct {
	ch  chan<- delivery
	hub *actor.PID // a local proxy of the hub (see gatewayConn.proxy)
	// relay is the subscriber the hub knows: the client's relay on the
	// manager, which passes the batches here.
	relay *actor.PID
	done  bool
}

func (w *watcher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		// A manager that goes away ends the stream instead of hanging it.
		ctx.Watch(w.hub)
	case *messages.EventBatch:
		if w.done {
			return
		}
		if m.Missed > 0 {
			w.ch <- delivery{missed: m.Missed}
		}
		for _, ev := range m.Events {
			w.ch <- delivery{ev: ev}
		}
		if m.End {
			w.done = true
			w.ch <- delivery{end: true}
			return
		}
		ctx.Send(w.hub, &messages.EventsAck{Subscriber: w.relay, Seq: m.Seq})
	case *actor.Terminated:
		if !w.done {
			w.done = true
			close(w.ch)
		}
	}
}

// Events subscribes to the manager's events hub and calls fn for each event
// until ctx ends, fn returns an error, or (HistoryOnly, Until, UntilSeq)
// the stream ends. The subscriber is a relay on the manager that passes
// the batches over the client's gateway stream; the hub watches it and
// drops it when the stream ends.
func (c *Client) Events(ctx context.Context, opts EventOptions, fn func(*messages.Event) error) error {
	ch := make(chan delivery, 1024)
	gw, _ := c.conn()
	hub, err := gw.proxy(remoting.ActorEvents)
	if err != nil {
		return err
	}
	defer c.System.Root.Stop(hub)
	name := "watch-" + messages.NewID()[:8]
	relay, closeRelay, err := gw.openRelay(actor.NewPID(c.System.Address(), name), c.timeout)
	if err != nil {
		return err
	}
	defer closeRelay()
	pid, err := c.System.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &watcher{ch: ch, hub: hub, relay: relay} }), name)
	if err != nil {
		return err
	}
	defer c.System.Root.Stop(pid)
	if _, err := gw.request(remoting.ActorEvents, opts.subscribe(relay), c.timeout); err != nil {
		return fmt.Errorf("subscribe to events on %s: %w", c.Manager(), err)
	}
	defer c.System.Root.Send(hub, &messages.UnsubscribeEvents{Subscriber: relay})
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-ch:
			switch {
			case !ok:
				return fmt.Errorf("event stream from %s ended: the manager went away; run the command again to resume from the last sequence number shown (--since SEQ)", c.Manager())
			case d.end:
				return nil
			case d.missed > 0:
				if opts.OnMissed != nil {
					opts.OnMissed(d.missed)
				}
			default:
				if err := fn(d.ev); err != nil {
					return err
				}
			}
		}
	}
}
