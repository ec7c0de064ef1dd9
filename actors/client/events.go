package client

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
)

// EventOptions selects events.
type EventOptions struct {
	Replay   bool     // send the stored history first
	SinceSeq uint64   // with Replay: only events after this sequence number
	Types    []string // type prefixes, e.g. "actor.", "service."; empty = all
}

// watcher is the local actor the hub streams events to.
type watcher struct {
	ch  chan<- *messages.Event
	hub *actor.PID
}

func (w *watcher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		// A manager that goes away ends the stream instead of hanging it.
		ctx.Watch(w.hub)
	case *messages.Event:
		w.ch <- m
	case *actor.Terminated:
		close(w.ch)
	}
}

// Events subscribes to the manager's events hub and calls fn for each event
// until ctx ends or fn returns an error. The hub watches the subscriber and
// drops it if this process goes away.
func (c *Client) Events(ctx context.Context, opts EventOptions, fn func(*messages.Event) error) error {
	ch := make(chan *messages.Event, 1024)
	hub := actor.NewPID(c.Manager(), remoting.ActorEvents)
	pid, err := c.System.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &watcher{ch: ch, hub: hub} }), "watch-"+messages.NewID()[:8])
	if err != nil {
		return err
	}
	defer c.System.Root.Stop(pid)
	sub := &messages.SubscribeEvents{Subscriber: pid, Replay: opts.Replay, SinceSeq: opts.SinceSeq, TypePrefixes: opts.Types}
	if _, err := c.System.Root.RequestFuture(hub, sub, c.timeout).Result(); err != nil {
		return fmt.Errorf("subscribe to events on %s: %w", c.Manager(), err)
	}
	defer c.System.Root.Send(hub, &messages.UnsubscribeEvents{Subscriber: pid})
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return fmt.Errorf("event stream from %s ended", c.Manager())
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
}
