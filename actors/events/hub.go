package events

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/scheduler"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// Hub is the events hub actor. It subscribes to the actor system's event
// stream for events and state changes, numbers them, keeps them in bbolt
// within its Retention, and streams them to subscribers (stream.go). A
// subscriber that goes away (its remote endpoint closes) is watched and
// dropped.
type Hub struct {
	node string
	path string
	ret  Retention
	log  *zap.Logger
	db   *bolt.DB
	seq  uint64 // the last event recorded
	// count and bytes are what the history holds on disk now.
	count, bytes int
	subs         map[string]*sub
	esSub        *eventstream.Subscription
	stopPrune    scheduler.CancelFunc
}

// pruneNow asks the hub to enforce its age bound (sent by its timer).
type pruneNow struct{}

// NewHub returns props for a hub storing history in the bbolt file at path,
// within ret (zero fields take the defaults).
func NewHub(node, path string, log *zap.Logger, ret Retention) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &Hub{node: node, path: path, ret: ret.withDefaults(), log: log, subs: map[string]*sub{}}
	})
}

// Receive implements actor.Actor.
func (h *Hub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		h.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		h.close(ctx)
	case *messages.Event:
		h.record(ctx, m)
	case *messages.StateChanged:
		for _, ev := range FromState(h.node, m) {
			h.record(ctx, ev)
		}
	case *actor.SupervisorEvent:
		h.record(ctx, Supervision(h.node, m))
	case *pruneNow:
		h.update(func(b *bolt.Bucket) error { return h.prune(b, time.Now()) })
	case *messages.SubscribeEvents:
		h.subscribe(ctx, m)
	case *messages.EventsAck:
		h.ack(ctx, m)
	case *pump:
		h.pump(ctx, m.key)
	case *messages.UnsubscribeEvents:
		h.drop(ctx, m.Subscriber)
	case *actor.Terminated:
		h.drop(ctx, m.Who)
	}
}

func (h *Hub) start(ctx actor.Context) {
	db, err := bolt.Open(h.path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		panic(fmt.Errorf("open event history %s: %w", h.path, err))
	}
	// History is a convenience, not state: losing the last events of a
	// power cut is fine, an fsync per event on a busy node is not.
	db.NoSync = true
	h.db = db
	h.count, h.bytes = 0, 0
	h.update(func(b *bolt.Bucket) error {
		if k, _ := b.Cursor().Last(); k != nil {
			h.seq = binary.BigEndian.Uint64(k)
		}
		if err := b.ForEach(func(_, v []byte) error {
			h.count++
			h.bytes += len(v)
			return nil
		}); err != nil {
			return err
		}
		// Bounds may have shrunk since the last run.
		return h.prune(b, time.Now())
	})
	h.stopPrune = scheduler.NewTimerScheduler(ctx).SendRepeatedly(h.ret.Every, h.ret.Every, ctx.Self(), &pruneNow{})
	self := ctx.Self()
	root := ctx.ActorSystem().Root
	// The event stream calls handlers synchronously on the publisher's
	// goroutine; forwarding to the hub's mailbox keeps publishers fast.
	// The filter runs in the handler: protoactor's SubscribeWithPredicate
	// sets the predicate after the subscription is visible to Publish, a
	// data race with every concurrent publisher.
	h.esSub = ctx.ActorSystem().EventStream.Subscribe(func(evt any) {
		if wanted(evt, self.Id) {
			root.Send(self, evt)
		}
	})
}

func (h *Hub) close(ctx actor.Context) {
	if h.esSub != nil {
		ctx.ActorSystem().EventStream.Unsubscribe(h.esSub)
		h.esSub = nil
	}
	if h.stopPrune != nil {
		h.stopPrune()
		h.stopPrune = nil
	}
	if h.db != nil {
		h.db.Close()
		h.db = nil
	}
}

// wanted: what the hub records from the event stream.
func wanted(evt any, self string) bool {
	switch e := evt.(type) {
	case *messages.Event:
		// Our own lifecycle events would loop through the stream forever
		// only if recording emitted events; it does not, but the hub's
		// own start/stop is noise nobody asked for.
		return e.Actor != self
	case *messages.StateChanged, *actor.SupervisorEvent:
		return true
	}
	return false
}

// update runs fn in a write transaction on the history, logging a failure:
// history is best effort, the node goes on without it.
func (h *Hub) update(fn func(b *bolt.Bucket) error) {
	if h.db == nil {
		return
	}
	err := h.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return fn(b)
	})
	if err != nil {
		h.log.Warn("event history", zap.String("path", h.path), zap.Error(err))
	}
}

func (h *Hub) record(ctx actor.Context, ev *messages.Event) {
	bound(ev)
	h.seq++
	ev.Seq = h.seq
	if ev.Node == "" {
		ev.Node = h.node
	}
	now := time.Now()
	if ev.UnixNano == 0 {
		ev.UnixNano = now.UnixNano()
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		h.log.Warn("encode event", zap.String("type", ev.Type), zap.Error(err))
		return
	}
	h.update(func(b *bolt.Bucket) error {
		if err := b.Put(seqKey(ev.Seq), data); err != nil {
			return err
		}
		h.bytes += len(data)
		h.count++
		return h.prune(b, now)
	})
	h.live(ctx, ev)
}
