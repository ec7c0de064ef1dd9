package events

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// The hub keeps at most HistoryLimit events and HistoryBytes of them on
// disk, dropping the oldest first; one event is cut to MaxEventBytes.
const (
	HistoryLimit  = 10000
	HistoryBytes  = 16 << 20
	MaxEventBytes = 8 << 10
)

// bound cuts an event to MaxEventBytes: its message first, then its
// attributes' values, then its attributes.
func bound(ev *messages.Event) {
	if proto.Size(ev) <= MaxEventBytes {
		return
	}
	trim := func(s string, n int) string {
		if len(s) > n {
			return s[:n] + "…"
		}
		return s
	}
	ev.Message = trim(ev.Message, 2<<10)
	ev.Type, ev.Subject, ev.Actor, ev.Node = trim(ev.Type, 256), trim(ev.Subject, 256), trim(ev.Actor, 256), trim(ev.Node, 256)
	for k, v := range ev.Attrs {
		ev.Attrs[k] = trim(v, 256)
	}
	if proto.Size(ev) > MaxEventBytes {
		ev.Attrs = map[string]string{"truncated": "true"}
	}
}

var bucket = []byte("events")

// Hub is the events hub actor. It subscribes to the actor system's event
// stream for events and state changes, numbers and stores them, and sends
// them to its subscribers. A subscriber that goes away (its remote endpoint
// closes) is watched and dropped.
type Hub struct {
	node string
	path string
	log  *zap.Logger
	db   *bolt.DB
	seq  uint64
	// count and bytes are what the history holds on disk now.
	count, bytes int
	subs         map[string]*sub
	esSub        *eventstream.Subscription
}

type sub struct {
	pid      *actor.PID
	prefixes []string
}

// NewHub returns props for a hub storing history in the bbolt file at path.
func NewHub(node, path string, log *zap.Logger) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &Hub{node: node, path: path, log: log, subs: map[string]*sub{}}
	})
}

// Receive implements actor.Actor.
func (h *Hub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		h.start(ctx)
	case *actor.Stopping:
		if h.esSub != nil {
			ctx.ActorSystem().EventStream.Unsubscribe(h.esSub)
		}
		if h.db != nil {
			h.db.Close()
		}
	case *actor.Restarting:
		if h.esSub != nil {
			ctx.ActorSystem().EventStream.Unsubscribe(h.esSub)
		}
		if h.db != nil {
			h.db.Close()
		}
	case *messages.Event:
		h.record(ctx, m)
	case *messages.StateChanged:
		for _, ev := range FromState(h.node, m) {
			h.record(ctx, ev)
		}
	case *actor.SupervisorEvent:
		h.record(ctx, Supervision(h.node, m))
	case *messages.SubscribeEvents:
		h.subscribe(ctx, m)
	case *messages.UnsubscribeEvents:
		h.drop(ctx, m.Subscriber)
	case *actor.Terminated:
		h.drop(ctx, m.Who)
	}
}

func (h *Hub) start(ctx actor.Context) {
	db, err := bolt.Open(h.path, 0o600, nil)
	if err != nil {
		panic(fmt.Errorf("open event history %s: %w", h.path, err))
	}
	// History is a convenience, not state: losing the last events of a
	// power cut is fine, an fsync per event on a busy node is not.
	db.NoSync = true
	h.db = db
	_ = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if k, _ := b.Cursor().Last(); k != nil {
			h.seq = binary.BigEndian.Uint64(k)
		}
		h.count, h.bytes = 0, 0
		return b.ForEach(func(_, v []byte) error {
			h.count++
			h.bytes += len(v)
			return nil
		})
	})
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

func (h *Hub) record(ctx actor.Context, ev *messages.Event) {
	bound(ev)
	h.seq++
	ev.Seq = h.seq
	if ev.Node == "" {
		ev.Node = h.node
	}
	data, err := proto.Marshal(ev)
	if err == nil {
		err = h.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], ev.Seq)
			if err := b.Put(k[:], data); err != nil {
				return err
			}
			h.bytes += len(data)
			h.count++
			// Oldest first out, by count and by bytes: what bounds the disk
			// is the bytes.
			var old [][]byte
			c := b.Cursor()
			for k, v := c.First(); k != nil && (h.count > HistoryLimit || h.bytes > HistoryBytes); k, v = c.Next() {
				h.bytes -= len(v)
				h.count--
				old = append(old, append([]byte(nil), k...))
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		h.log.Warn("record event", zap.Error(err))
	}
	for _, s := range h.subs {
		if s.match(ev.Type) {
			ctx.Send(s.pid, ev)
		}
	}
}

func (s *sub) match(typ string) bool {
	if len(s.prefixes) == 0 {
		return true
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

func (h *Hub) subscribe(ctx actor.Context, m *messages.SubscribeEvents) {
	if m.Subscriber == nil { // a ping: the hub is up and subscribed
		ctx.Respond(&messages.SubscribeEventsReply{LastSeq: h.seq})
		return
	}
	s := &sub{pid: m.Subscriber, prefixes: m.TypePrefixes}
	if m.Replay {
		_ = h.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], m.SinceSeq+1)
			for key, v := c.Seek(k[:]); key != nil; key, v = c.Next() {
				ev := &messages.Event{}
				if proto.Unmarshal(v, ev) == nil && s.match(ev.Type) {
					ctx.Send(s.pid, ev)
				}
			}
			return nil
		})
	}
	h.subs[m.Subscriber.String()] = s
	ctx.Watch(m.Subscriber)
	if ctx.Sender() != nil {
		ctx.Respond(&messages.SubscribeEventsReply{LastSeq: h.seq})
	}
}

func (h *Hub) drop(ctx actor.Context, pid *actor.PID) {
	if pid == nil {
		return
	}
	if _, ok := h.subs[pid.String()]; ok {
		delete(h.subs, pid.String())
		ctx.Unwatch(pid)
	}
}
