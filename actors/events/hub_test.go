package events

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// syncMsg is what the collector answers once everything sent to it before has
// been handled: mailboxes are FIFO, so no sleeping is needed.
type syncMsg struct{}

// holdAcks makes a collector stop acking (a stalled subscriber) or resume.
type holdAcks struct{ hold bool }

// collector is a local subscriber that hands every event to the test and
// acks each batch to the hub, as the client does; an end batch is handed
// on as an event of type "end", a missed count as one of type "missed".
func collector(hub *actor.PID, out chan<- *messages.Event) *actor.Props {
	var held []*messages.EventBatch
	var hold bool
	return actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *messages.EventBatch:
			if len(m.Events) > BatchEvents {
				out <- &messages.Event{Type: "oversized batch", Seq: uint64(len(m.Events))}
			}
			if m.Missed > 0 {
				out <- &messages.Event{Type: "missed", Seq: m.Missed}
			}
			for _, ev := range m.Events {
				out <- ev
			}
			if m.End {
				out <- &messages.Event{Type: "end", Seq: m.Seq}
				return
			}
			if hold {
				held = append(held, m)
				return
			}
			ctx.Send(hub, &messages.EventsAck{Subscriber: ctx.Self(), Seq: m.Seq})
		case holdAcks:
			hold = m.hold
			if !hold {
				for _, b := range held {
					ctx.Send(hub, &messages.EventsAck{Subscriber: ctx.Self(), Seq: b.Seq})
				}
				held = nil
			}
			ctx.Respond(syncMsg{})
		case syncMsg:
			ctx.Respond(syncMsg{})
		}
	})
}

type hubTest struct {
	t      *testing.T
	system *actor.ActorSystem
	path   string
	ret    Retention
	hub    *actor.PID
}

func newHubTest(t *testing.T) *hubTest {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	t.Cleanup(sys.Shutdown)
	return &hubTest{t: t, system: sys, path: filepath.Join(t.TempDir(), "events.db")}
}

// start spawns the hub and returns its last sequence number once it runs.
// A SubscribeEvents without a subscriber is a ping: its reply means the hub
// has opened its history and subscribed to the event stream.
func (h *hubTest) start() uint64 {
	h.t.Helper()
	h.hub = h.system.Root.Spawn(NewHub("node-a", h.path, zap.NewNop(), h.ret))
	return h.ping()
}

func (h *hubTest) ping() uint64 {
	h.t.Helper()
	res, err := h.system.Root.RequestFuture(h.hub, &messages.SubscribeEvents{}, 5*time.Second).Result()
	if err != nil {
		h.t.Fatalf("hub ping: %v", err)
	}
	r, ok := res.(*messages.SubscribeEventsReply)
	if !ok {
		h.t.Fatalf("hub ping reply is %T", res)
	}
	return r.LastSeq
}

func (h *hubTest) stop() {
	h.t.Helper()
	if err := h.system.Root.StopFuture(h.hub).Wait(); err != nil {
		h.t.Fatalf("stop hub: %v", err)
	}
}

// collector spawns a collector of this hub's batches.
func (h *hubTest) collector() (*actor.PID, chan *messages.Event) {
	ch := make(chan *messages.Event, 100000)
	return h.system.Root.Spawn(collector(h.hub, ch)), ch
}

func (h *hubTest) subscribe(pid *actor.PID, m *messages.SubscribeEvents) uint64 {
	h.t.Helper()
	m.Subscriber = pid
	res, err := h.system.Root.RequestFuture(h.hub, m, 5*time.Second).Result()
	if err != nil {
		h.t.Fatalf("subscribe: %v", err)
	}
	return res.(*messages.SubscribeEventsReply).LastSeq
}

func (h *hubTest) sync(pid *actor.PID, m any) {
	h.t.Helper()
	if _, err := h.system.Root.RequestFuture(pid, m, 5*time.Second).Result(); err != nil {
		h.t.Fatalf("sync collector: %v", err)
	}
}

// drain returns what the collector has received so far. A round pings the
// hub (it has handled everything sent to it before) and syncs the
// collector (it has handled everything the hub sent it, and acked it); an
// ack can queue one more chunk of history behind the ping, so the drain
// ends after a few rounds in a row that brought nothing.
func (h *hubTest) drain(pid *actor.PID, ch <-chan *messages.Event) []*messages.Event {
	h.t.Helper()
	var out []*messages.Event
	for quiet := 0; quiet < 3; {
		h.ping()
		h.sync(pid, syncMsg{})
		n := len(out)
		for more := true; more; {
			select {
			case ev := <-ch:
				out = append(out, ev)
			default:
				more = false
			}
		}
		if len(out) == n {
			quiet++
		} else {
			quiet = 0
		}
	}
	return out
}

func (h *hubTest) publish(evs ...any) {
	for _, ev := range evs {
		h.system.EventStream.Publish(ev)
	}
}

type seen struct {
	seq uint64
	typ string
}

func summarize(evs []*messages.Event) []seen {
	out := make([]seen, len(evs))
	for i, ev := range evs {
		out[i] = seen{ev.Seq, ev.Type}
	}
	return out
}

func checkSeen(t *testing.T, what string, got []*messages.Event, want []seen) {
	t.Helper()
	g := summarize(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s: got %v, want %v", what, g, want)
	}
}

func TestHub(t *testing.T) {
	h := newHubTest(t)
	if seq := h.start(); seq != 0 {
		t.Fatalf("new hub last seq = %d, want 0", seq)
	}

	h.publish(
		&messages.Event{Type: "service.created", Subject: "web"},
		&messages.Event{Type: "actor.started", Actor: "a1"},
		&messages.StateChanged{Index: 3, Changes: []*messages.Change{
			{Op: messages.ChangeOp_CHANGE_OP_CREATE, Object: task("t1", messages.TaskState_TASK_STATE_RUNNING, nil)},
			{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_READY)},
		}},
		// The hub's own lifecycle is noise: never recorded.
		&messages.Event{Type: "actor.stopping", Actor: h.hub.Id},
		// Anything else on the stream is not an event.
		"not an event",
		&messages.Event{Type: "node.down", Subject: "host-b", Node: "node-b"},
	)
	if seq := h.ping(); seq != 5 {
		t.Fatalf("last seq after 5 events = %d, want 5", seq)
	}

	// Subscribers see history then live events, each filtered by prefix,
	// in sequence order.
	subs := []struct {
		name   string
		m      *messages.SubscribeEvents
		replay []seen
		live   []seen
	}{
		{"all with replay", &messages.SubscribeEvents{Replay: true},
			[]seen{{1, "service.created"}, {2, "actor.started"}, {3, "task.created"}, {4, "node.ready"}, {5, "node.down"}},
			[]seen{{6, "service.deleted"}, {7, "task.failed"}, {8, "actor.failed"}}},
		{"tasks and services with replay", &messages.SubscribeEvents{Replay: true, TypePrefixes: []string{"task.", "service."}},
			[]seen{{1, "service.created"}, {3, "task.created"}},
			[]seen{{6, "service.deleted"}, {7, "task.failed"}}},
		{"replay after seq 3", &messages.SubscribeEvents{Replay: true, SinceSeq: 3},
			[]seen{{4, "node.ready"}, {5, "node.down"}},
			[]seen{{6, "service.deleted"}, {7, "task.failed"}, {8, "actor.failed"}}},
		// Without Replay, SinceSeq is ignored: only live events arrive.
		{"live only", &messages.SubscribeEvents{SinceSeq: 1, TypePrefixes: []string{"node."}},
			nil, nil},
		{"live actor events", &messages.SubscribeEvents{TypePrefixes: []string{"actor."}},
			nil, []seen{{8, "actor.failed"}}},
	}
	type running struct {
		pid *actor.PID
		ch  chan *messages.Event
	}
	rs := make([]running, len(subs))
	for i, s := range subs {
		pid, ch := h.collector()
		if last := h.subscribe(pid, s.m); last != 5 {
			t.Fatalf("%s: subscribe reply last seq = %d, want 5", s.name, last)
		}
		rs[i] = running{pid, ch}
		got := h.drain(pid, ch)
		checkSeen(t, s.name+" replay", got, s.replay)
		// History keeps the producing node: node-b's event stays node-b's.
		if i == 0 && (got[0].Node != "node-a" || got[4].Node != "node-b" || got[0].Subject != "web") {
			t.Errorf("replayed events = %v, want node-a stamped, node-b kept, subject kept", got)
		}
	}

	h.publish(
		&messages.StateChanged{Index: 9, Changes: []*messages.Change{
			{Op: messages.ChangeOp_CHANGE_OP_DELETE, Object: svc("web", "nginx", 1)},
			{Op: messages.ChangeOp_CHANGE_OP_UPDATE, Object: task("t1", messages.TaskState_TASK_STATE_RUNNING, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, Err: "oom"})},
		}},
		&messages.Event{Type: "actor.failed", Actor: "a1"},
	)
	var live [][]*messages.Event
	for i, s := range subs {
		got := h.drain(rs[i].pid, rs[i].ch)
		checkSeen(t, s.name+" live", got, s.live)
		live = append(live, got)
	}
	// The hub stamps its node on events that have none and keeps the
	// producer's where there is one.
	all := live[0]
	if all[0].Node != "node-a" || all[1].Message != "oom" || all[2].Node != "node-a" {
		t.Errorf("live events = %v, want node-a stamped and the task error kept", all)
	}

	// An unsubscribed collector hears nothing more; a stopped one is
	// dropped (the hub watches it) without disturbing the others.
	h.system.Root.Send(h.hub, &messages.UnsubscribeEvents{Subscriber: rs[0].pid})
	if err := h.system.Root.StopFuture(rs[1].pid).Wait(); err != nil {
		t.Fatal(err)
	}
	h.publish(&messages.Event{Type: "task.running", Subject: "t2"})
	checkSeen(t, "after unsubscribe", h.drain(rs[0].pid, rs[0].ch), nil)
	checkSeen(t, "replay after seq 3, still subscribed", h.drain(rs[2].pid, rs[2].ch), []seen{{9, "task.running"}})

	// A restarted hub continues the numbering from its file and replays
	// what the previous one recorded.
	h.stop()
	h.publish(&messages.Event{Type: "service.created", Subject: "lost"}) // no hub: not recorded
	if seq := h.start(); seq != 9 {
		t.Fatalf("restarted hub last seq = %d, want 9", seq)
	}
	h.publish(&messages.Event{Type: "service.updated", Subject: "web"})
	pid, ch := h.collector()
	if last := h.subscribe(pid, &messages.SubscribeEvents{Replay: true, SinceSeq: 6}); last != 10 {
		t.Fatalf("subscribe after restart: last seq = %d, want 10", last)
	}
	got := h.drain(pid, ch)
	checkSeen(t, "replay after restart", got, []seen{{7, "task.failed"}, {8, "actor.failed"}, {9, "task.running"}, {10, "service.updated"}})
	if got[0].Message != "oom" || got[0].Attrs["service"] != "web" {
		t.Errorf("replayed event lost its fields: %v", got[0])
	}
	h.publish(&messages.Event{Type: "node.ready", Subject: "host-c"})
	checkSeen(t, "live after restart", h.drain(pid, ch), []seen{{11, "node.ready"}})
	// The old hub unsubscribed from the event stream when it stopped; had
	// it not, the new event would be numbered twice.
	if seq := h.ping(); seq != 11 {
		t.Fatalf("last seq = %d, want 11", seq)
	}
}

// TestHubBoundsDisk: big events (4 MiB each, as a hostile peer sent them
// on b7bdeb6) are cut to MaxEventBytes, and the history on disk stays
// within MaxBytes however many arrive.
func TestHubBoundsDisk(t *testing.T) {
	const maxBytes = 16 << 20
	h := newHubTest(t)
	h.ret = Retention{MaxBytes: maxBytes}
	h.start()
	big := strings.Repeat("x", 4<<20)
	for i := 0; i < 10; i++ {
		h.system.Root.Send(h.hub, &messages.Event{Type: "forged", Message: big, Attrs: map[string]string{"a": big}})
	}
	// Then many small ones past the byte cap, not the count cap.
	for i := 0; i < 3000; i++ {
		h.system.Root.Send(h.hub, &messages.Event{Type: "filler", Message: strings.Repeat("y", 7<<10)})
	}
	h.ping()
	h.stop()
	db, err := bolt.Open(h.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n, bytes, largest int
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, v []byte) error {
			n++
			bytes += len(v)
			largest = max(largest, len(v))
			return nil
		})
	})
	db.Close()
	if largest > MaxEventBytes {
		t.Fatalf("an event of %d bytes was stored (limit %d)", largest, MaxEventBytes)
	}
	if bytes > maxBytes {
		t.Fatalf("history holds %d bytes (limit %d)", bytes, maxBytes)
	}
	if n == 0 || n >= 3010 {
		t.Fatalf("history holds %d events: the oldest should have gone by bytes", n)
	}
	// The count and size a restarted hub starts from are the disk's.
	h.start()
	h.stop()
}
