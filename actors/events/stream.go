package events

import (
	"encoding/binary"

	"github.com/asynkron/protoactor-go/actor"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// Flow control. Each subscriber has one cursor: every event up to it has
// been sent or filtered out. A subscriber that has caught up gets each new
// event as it is recorded; one that is behind (replaying, or slower than
// the events) is fed from the history on disk in chunks, one chunk per
// message the hub handles, so the hub never blocks for long and never holds
// events in memory for anyone. Since replay and live delivery advance the
// same cursor inside the one actor, nothing is sent twice or skipped at the
// seam; the only gap possible is events retention dropped before a slow
// subscriber reached them, and the batch after it says how many (missed).
const (
	// Window is the number of batches a subscriber may have unacked: what
	// the network and the subscriber's mailbox hold for it at most.
	Window = 8
	// A batch holds at most this many events and bytes.
	BatchEvents = 256
	BatchBytes  = 256 << 10
	// scanEvents bounds the history read in one message handling (filters
	// may skip most of it).
	scanEvents = 4096
)

type sub struct {
	pid    *actor.PID
	f      filter
	cursor uint64
	// end: a history-only subscription stops here; 0 follows.
	end uint64
	// inflight holds the seq of each batch sent and not acked yet.
	inflight []uint64
	missed   uint64 // dropped by retention, not told yet
	pumping  bool   // a pump message is queued
	live     bool   // told it has caught up
}

// pump asks the hub to feed one more chunk of history to a subscriber.
type pump struct{ key string }

func (s *sub) room() bool { return len(s.inflight) < Window }

// limit is the last seq the subscriber may be sent now.
func (s *sub) limit(last uint64) uint64 {
	if s.end != 0 && s.end < last {
		last = s.end
	}
	if s.f.untilSeq != 0 && s.f.untilSeq < last {
		last = s.f.untilSeq
	}
	return last
}

// done: nothing more will ever be sent.
func (s *sub) done() bool {
	return (s.end != 0 && s.cursor >= s.end) || (s.f.untilSeq != 0 && s.cursor >= s.f.untilSeq)
}

func (h *Hub) subscribe(ctx actor.Context, m *messages.SubscribeEvents) {
	if m.Subscriber == nil { // a ping: the hub is up and subscribed
		ctx.Respond(&messages.SubscribeEventsReply{LastSeq: h.seq})
		return
	}
	s := &sub{pid: m.Subscriber, f: newFilter(m), cursor: h.seq}
	if m.Replay || m.HistoryOnly {
		s.cursor = min(m.SinceSeq, h.seq)
		if h.db != nil && m.SinceSeq == 0 {
			// "All that is kept" has no gap before it.
			_ = h.db.View(func(tx *bolt.Tx) error {
				s.cursor = h.seq // nothing kept
				if f := first(tx); f > 0 {
					s.cursor = f - 1
				}
				return nil
			})
		}
	}
	if m.HistoryOnly {
		s.end = h.seq
	}
	key := m.Subscriber.String()
	if old, ok := h.subs[key]; ok { // a subscriber starting over
		s.pumping = old.pumping
	}
	h.subs[key] = s
	ctx.Watch(m.Subscriber)
	if ctx.Sender() != nil {
		ctx.Respond(&messages.SubscribeEventsReply{LastSeq: h.seq})
	}
	h.pump(ctx, key)
}

// live hands a just-recorded event to the subscribers that have caught up,
// and lets the others' pumps find it on disk.
func (h *Hub) live(ctx actor.Context, ev *messages.Event) {
	for key, s := range h.subs {
		if s.end != 0 || s.cursor != ev.Seq-1 || !s.room() || s.missed != 0 {
			h.schedule(ctx, key, s)
			continue
		}
		if s.f.past(ev) {
			h.finish(ctx, key, s, nil)
			continue
		}
		s.cursor = ev.Seq
		if s.f.match(ev) {
			h.send(ctx, s, &messages.EventBatch{Events: []*messages.Event{ev}, Seq: ev.Seq, Live: true})
		}
		if s.done() {
			h.finish(ctx, key, s, nil)
		}
	}
}

// schedule queues a pump for a subscriber that is behind and may be sent
// more; one at a time, so the mailbox holds at most one per subscriber.
func (h *Hub) schedule(ctx actor.Context, key string, s *sub) {
	if s.pumping || !s.room() || (s.cursor >= s.limit(h.seq) && !s.done()) {
		return
	}
	s.pumping = true
	ctx.Send(ctx.Self(), &pump{key: key})
}

// pump sends one chunk of history to the subscriber at key, then queues
// the next chunk behind whatever else is in the mailbox.
func (h *Hub) pump(ctx actor.Context, key string) {
	s, ok := h.subs[key]
	if !ok {
		return
	}
	s.pumping = false
	if !s.room() {
		return // its next ack pumps again
	}
	if s.done() {
		h.finish(ctx, key, s, nil)
		return
	}
	limit := s.limit(h.seq)
	if s.cursor >= limit {
		return
	}
	b, past := h.read(s, limit)
	if past {
		h.finish(ctx, key, s, b)
		return
	}
	if s.done() {
		h.finish(ctx, key, s, b)
		return
	}
	b.Live = s.end == 0 && s.cursor == h.seq
	if len(b.Events) > 0 || b.Missed > 0 || (b.Live && !s.live) {
		h.send(ctx, s, b)
	}
	h.schedule(ctx, key, s)
}

// read takes the next chunk of s's history from disk, up to limit, and
// reports whether it reached an event past the filter's end.
func (h *Hub) read(s *sub, limit uint64) (b *messages.EventBatch, past bool) {
	b = &messages.EventBatch{}
	size := 0
	if h.db != nil {
		err := h.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			k, v := c.Seek(seqKey(s.cursor + 1))
			for n := 0; k != nil && n < scanEvents && len(b.Events) < BatchEvents && size < BatchBytes; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq > limit {
					break
				}
				n++
				ev := &messages.Event{}
				if err := proto.Unmarshal(v, ev); err != nil {
					h.log.Warn("undecodable event in history: skipped", zap.Uint64("seq", seq), zap.Error(err))
					ev = nil
				}
				if ev != nil && s.f.past(ev) {
					past = true
					return nil
				}
				s.missed += seq - s.cursor - 1
				s.cursor = seq
				if ev != nil && s.f.match(ev) {
					b.Events = append(b.Events, ev)
					size += len(v)
				}
			}
			if k == nil || binary.BigEndian.Uint64(k) > limit {
				// The history ends before limit: what is not on disk was
				// lost (pruned, or a failed write).
				s.missed += limit - s.cursor
				s.cursor = limit
			}
			return nil
		})
		if err != nil {
			h.log.Warn("read event history", zap.Error(err))
		}
	} else {
		s.missed += limit - s.cursor
		s.cursor = limit
	}
	b.Seq, b.Missed, s.missed = s.cursor, s.missed, 0
	return b, past
}

func (h *Hub) send(ctx actor.Context, s *sub, b *messages.EventBatch) {
	if b.Live {
		s.live = true
	}
	s.inflight = append(s.inflight, b.Seq)
	ctx.Send(s.pid, b)
}

// finish sends the last batch (b, or an empty one) with end set and drops
// the subscription.
func (h *Hub) finish(ctx actor.Context, key string, s *sub, b *messages.EventBatch) {
	if b == nil {
		b = &messages.EventBatch{Seq: s.cursor}
	}
	b.End = true
	ctx.Send(s.pid, b)
	delete(h.subs, key)
	ctx.Unwatch(s.pid)
}

func (h *Hub) ack(ctx actor.Context, m *messages.EventsAck) {
	if m.Subscriber == nil {
		return
	}
	key := m.Subscriber.String()
	s, ok := h.subs[key]
	if !ok {
		return
	}
	i := 0
	for i < len(s.inflight) && s.inflight[i] <= m.Seq {
		i++
	}
	s.inflight = s.inflight[i:]
	h.schedule(ctx, key, s)
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
