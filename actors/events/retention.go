package events

import (
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// Retention bounds the history a hub keeps on disk. Whichever bound is hit
// first drops the oldest events; a subscriber still reading them is told how
// many it missed.
type Retention struct {
	MaxAge   time.Duration // events older than this go; 0: no age bound
	MaxCount int           // events kept at most; 0: DefaultMaxCount
	// MaxBytes bounds the events' encoded size, so big events cannot grow
	// the disk past it whatever MaxCount says; 0: DefaultMaxBytes.
	MaxBytes int
	// Every is how often age is enforced on a quiet hub (a busy one
	// enforces it on every event); 0: a minute.
	Every time.Duration
}

// Retention defaults, as `cluster init` and `cluster join` offer them.
const (
	DefaultMaxAge   = 7 * 24 * time.Hour
	DefaultMaxCount = 100000
	DefaultMaxBytes = 64 << 20
	MaxEventBytes   = 8 << 10 // one event is cut to this
)

func (r Retention) withDefaults() Retention {
	if r.MaxCount <= 0 {
		r.MaxCount = DefaultMaxCount
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = DefaultMaxBytes
	}
	if r.Every <= 0 {
		r.Every = time.Minute
	}
	return r
}

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

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// prune drops the oldest events, inside the caller's write transaction,
// until the history is within every bound. Events are in sequence order,
// which is time order on one node, so the loop stops at the first event
// that may stay.
func (h *Hub) prune(b *bolt.Bucket, now time.Time) error {
	var cutoff int64
	if h.ret.MaxAge > 0 {
		cutoff = now.Add(-h.ret.MaxAge).UnixNano()
	}
	var old [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if h.count <= h.ret.MaxCount && h.bytes <= h.ret.MaxBytes && !tooOld(v, cutoff) {
			break
		}
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
}

func tooOld(v []byte, cutoff int64) bool {
	if cutoff == 0 {
		return false
	}
	ev := &messages.Event{}
	// An event that does not decode is no use to anyone: drop it.
	return proto.Unmarshal(v, ev) != nil || ev.UnixNano < cutoff
}

// first is the oldest sequence number the history holds (0: none).
func first(tx *bolt.Tx) uint64 {
	if k, _ := tx.Bucket(bucket).Cursor().First(); k != nil {
		return binary.BigEndian.Uint64(k)
	}
	return 0
}
