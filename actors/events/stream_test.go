package events

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

func TestFilter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	taskEv := &messages.Event{Seq: 5, UnixNano: t0, Type: "task.failed", Subject: "t-abc123", Node: "mgr1", Attrs: map[string]string{"service": "web", "node": "n2-xyz"}}
	svcEv := &messages.Event{Seq: 6, UnixNano: t0 + 10, Type: "service.updated", Subject: "web", Node: "mgr1", Attrs: map[string]string{"service": "web"}}
	nodeEv := &messages.Event{Seq: 7, UnixNano: t0 + 20, Type: "node.down", Subject: "host-b", Node: "mgr1", Attrs: map[string]string{"id": "n2-xyz", "node": "n2-xyz"}}
	actorEv := &messages.Event{Seq: 8, UnixNano: t0 + 30, Type: "actor.started", Actor: "agent", Node: "n3-abc"}
	all := []*messages.Event{taskEv, svcEv, nodeEv, actorEv}
	tests := []struct {
		name string
		m    *messages.SubscribeEvents
		want []uint64 // seqs matched
		past []uint64 // seqs past the end
	}{
		{"none: everything", &messages.SubscribeEvents{}, []uint64{5, 6, 7, 8}, nil},
		{"type prefix", &messages.SubscribeEvents{Filter: &messages.EventFilter{Types: []string{"task."}}}, []uint64{5}, nil},
		{"legacy type prefixes merge with the filter's", &messages.SubscribeEvents{TypePrefixes: []string{"node."}, Filter: &messages.EventFilter{Types: []string{"actor."}}}, []uint64{7, 8}, nil},
		{"exact type", &messages.SubscribeEvents{Filter: &messages.EventFilter{Types: []string{"service.updated"}}}, []uint64{6}, nil},
		{"service", &messages.SubscribeEvents{Filter: &messages.EventFilter{Services: []string{"web"}}}, []uint64{5, 6}, nil},
		{"service is exact, not a prefix", &messages.SubscribeEvents{Filter: &messages.EventFilter{Services: []string{"we"}}}, nil, nil},
		// A node filter reads the node the event is about; an actor's
		// lifecycle is about the node it runs on.
		{"node by id prefix", &messages.SubscribeEvents{Filter: &messages.EventFilter{Nodes: []string{"n2"}}}, []uint64{5, 7}, nil},
		{"node of an actor event", &messages.SubscribeEvents{Filter: &messages.EventFilter{Nodes: []string{"n3-abc"}}}, []uint64{8}, nil},
		{"task by id prefix", &messages.SubscribeEvents{Filter: &messages.EventFilter{Tasks: []string{"t-abc"}}}, []uint64{5}, nil},
		{"keys are all required", &messages.SubscribeEvents{Filter: &messages.EventFilter{Services: []string{"web"}, Types: []string{"service."}}}, []uint64{6}, nil},
		{"values of a key are alternatives", &messages.SubscribeEvents{Filter: &messages.EventFilter{Types: []string{"task.", "node."}}}, []uint64{5, 7}, nil},
		{"since time", &messages.SubscribeEvents{Filter: &messages.EventFilter{SinceUnixNano: t0 + 10}}, []uint64{6, 7, 8}, nil},
		{"until time", &messages.SubscribeEvents{Filter: &messages.EventFilter{UntilUnixNano: t0 + 10}}, []uint64{5, 6, 7, 8}, []uint64{7, 8}},
		{"until seq", &messages.SubscribeEvents{Filter: &messages.EventFilter{UntilSeq: 6}}, []uint64{5, 6, 7, 8}, []uint64{7, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFilter(tt.m)
			var got, past []uint64
			for _, ev := range all {
				if f.match(ev) {
					got = append(got, ev.Seq)
				}
				if f.past(ev) {
					past = append(past, ev.Seq)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || fmt.Sprint(past) != fmt.Sprint(tt.past) {
				t.Fatalf("matched %v past %v, want %v past %v", got, past, tt.want, tt.past)
			}
		})
	}
}

// kept is the range of sequence numbers the history on disk holds.
func (h *hubTest) kept() (first, last uint64, n int) {
	h.t.Helper()
	db, err := bolt.Open(h.path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		h.t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		if k, _ := c.First(); k != nil {
			first = seqOf(k)
		}
		if k, _ := c.Last(); k != nil {
			last = seqOf(k)
		}
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	return first, last, n
}

func seqOf(k []byte) uint64 {
	var s uint64
	for _, b := range k {
		s = s<<8 | uint64(b)
	}
	return s
}

func TestRetention(t *testing.T) {
	old := time.Now().Add(-3 * time.Hour).UnixNano()
	tests := []struct {
		name        string
		ret         Retention
		publish     func(h *hubTest)
		wait        time.Duration // for the timer to prune a quiet hub
		first, last uint64
	}{
		{"by count", Retention{MaxCount: 10}, func(h *hubTest) {
			for i := 0; i < 25; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "x"})
			}
		}, 0, 16, 25},
		{"by bytes", Retention{MaxBytes: 10 << 10}, func(h *hubTest) {
			for i := 0; i < 25; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "x", Message: fmt.Sprintf("%01000d", i)})
			}
		}, 0, 17, 25},
		// Events older than MaxAge go as the next event is recorded.
		{"by age on the next event", Retention{MaxAge: time.Hour}, func(h *hubTest) {
			for i := 0; i < 5; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "x", UnixNano: old})
			}
			h.system.Root.Send(h.hub, &messages.Event{Type: "fresh"})
		}, 0, 6, 6},
		// And on a quiet hub, by its timer: these are young when recorded.
		{"by age on a quiet hub", Retention{MaxAge: 50 * time.Millisecond, Every: 20 * time.Millisecond}, func(h *hubTest) {
			for i := 0; i < 5; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "x"})
			}
		}, 300 * time.Millisecond, 0, 0},
		{"the default keeps everything young and few", Retention{}, func(h *hubTest) {
			for i := 0; i < 25; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "x"})
			}
		}, 0, 1, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHubTest(t)
			h.ret = tt.ret
			h.start()
			tt.publish(h)
			h.ping()
			time.Sleep(tt.wait)
			h.stop()
			first, last, _ := h.kept()
			if first != tt.first || last != tt.last {
				t.Fatalf("history holds %d..%d, want %d..%d", first, last, tt.first, tt.last)
			}
		})
	}
}

// follow collects what a collector receives until it has seen an event
// with seq last (or an end), failing after a while.
func (h *hubTest) follow(pid *actor.PID, ch <-chan *messages.Event, last uint64) []*messages.Event {
	h.t.Helper()
	var out []*messages.Event
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-ch:
			out = append(out, ev)
			if ev.Seq >= last && ev.Type != "missed" || ev.Type == "end" {
				return out
			}
		case <-deadline:
			h.t.Fatalf("after 20s the subscriber has %d events, the last %v; want up to seq %d", len(out), out[len(out)-1:], last)
		}
	}
}

// checkRun fails unless evs are exactly the events want matches among
// from..to, in order, each once.
func checkRun(t *testing.T, evs []*messages.Event, from, to uint64, want func(seq uint64) bool) {
	t.Helper()
	next := from
	for i, ev := range evs {
		for next <= to && !want(next) {
			next++
		}
		if ev.Seq != next {
			t.Fatalf("event %d has seq %d, want %d (a gap or a duplicate at the seam)", i, ev.Seq, next)
		}
		next++
	}
	for next <= to && !want(next) {
		next++
	}
	if next <= to {
		t.Fatalf("stream stopped before seq %d (want up to %d)", next, to)
	}
}

// TestReplayThenFollow: a subscriber that starts from an old sequence
// number while events keep arriving gets the history, then the live
// events, none twice and none missing, in batches no bigger than
// BatchEvents, whether it keeps up or stalls for a while.
func TestReplayThenFollow(t *testing.T) {
	const before, during = 3000, 5000
	tests := []struct {
		name  string
		since uint64
		types []string
		stall bool
		want  func(seq uint64) bool
	}{
		{"all events from seq 1000", 1000, nil, false, func(uint64) bool { return true }},
		{"task events only", 1000, []string{"task."}, false, func(seq uint64) bool { return seq%3 == 0 }},
		{"a subscriber that stalls mid-stream", 10, nil, true, func(uint64) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHubTest(t)
			h.start()
			typ := func(i int) string {
				if i%3 == 0 {
					return "task.running"
				}
				return "service.updated"
			}
			for i := 1; i <= before; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: typ(i)})
			}
			h.ping()
			ch := make(chan *messages.Event, 100000)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // writes go on while the subscriber replays
				defer wg.Done()
				for i := before + 1; i <= before+during; i++ {
					h.system.Root.Send(h.hub, &messages.Event{Type: typ(i)})
					if i%500 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			sub := h.system.Root.Spawn(collector(h.hub, ch))
			if tt.stall {
				h.sync(sub, holdAcks{hold: true})
			}
			h.subscribe(sub, &messages.SubscribeEvents{Replay: true, SinceSeq: tt.since, Filter: &messages.EventFilter{Types: tt.types}})
			if tt.stall {
				time.Sleep(50 * time.Millisecond)
				h.sync(sub, syncMsg{})
				if n := len(ch); n > Window*BatchEvents {
					t.Errorf("a stalled subscriber was sent %d events, more than %d batches of %d", n, Window, BatchEvents)
				}
				h.sync(sub, holdAcks{hold: false})
			}
			wg.Wait()
			last := uint64(before + during)
			for !tt.want(last) {
				last--
			}
			got := h.follow(sub, ch, last)
			checkRun(t, got, tt.since+1, last, tt.want)
			// Nothing more: the stream is at the end and stays there.
			if more := h.drain(sub, ch); len(more) != 0 {
				t.Fatalf("%d more events after the last: %v", len(more), summarize(more[:1]))
			}
		})
	}
}

// TestHistoryOnly: without follow, a subscriber gets the history in range,
// then an end, and nothing recorded after.
func TestHistoryOnly(t *testing.T) {
	tests := []struct {
		name     string
		m        *messages.SubscribeEvents
		from, to uint64
	}{
		{"everything kept", &messages.SubscribeEvents{HistoryOnly: true}, 1, 600},
		{"after a seq", &messages.SubscribeEvents{HistoryOnly: true, SinceSeq: 550}, 551, 600},
		{"until a seq", &messages.SubscribeEvents{HistoryOnly: true, SinceSeq: 10, Filter: &messages.EventFilter{UntilSeq: 20}}, 11, 20},
		{"since the newest", &messages.SubscribeEvents{HistoryOnly: true, SinceSeq: 600}, 601, 600},
		// until with follow: the stream ends at the bound, live or not.
		{"follow until a seq", &messages.SubscribeEvents{Replay: true, SinceSeq: 590, Filter: &messages.EventFilter{UntilSeq: 605}}, 591, 605},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHubTest(t)
			h.start()
			for i := 0; i < 600; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "x"})
			}
			h.ping()
			pid, ch := h.collector()
			h.subscribe(pid, tt.m)
			for i := 0; i < 10; i++ {
				h.system.Root.Send(h.hub, &messages.Event{Type: "later"})
			}
			got := h.drain(pid, ch)
			if len(got) == 0 || got[len(got)-1].Type != "end" {
				t.Fatalf("the stream did not end: %d events, last %v", len(got), summarize(got[max(0, len(got)-1):]))
			}
			checkRun(t, got[:len(got)-1], tt.from, tt.to, func(uint64) bool { return true })
		})
	}
}

// TestSlowSubscriberIsToldWhatItMissed: the hub keeps no events in memory
// for a subscriber that does not ack; what retention drops meanwhile is
// counted and told, and the stream goes on after it without duplicates.
func TestSlowSubscriberIsToldWhatItMissed(t *testing.T) {
	h := newHubTest(t)
	h.ret = Retention{MaxCount: 100}
	h.start()
	for i := 0; i < 300; i++ {
		h.system.Root.Send(h.hub, &messages.Event{Type: "x"})
	}
	h.ping()
	pid, ch := h.collector()
	// From seq 50: 51..200 are gone already.
	h.subscribe(pid, &messages.SubscribeEvents{Replay: true, SinceSeq: 50})
	got := h.drain(pid, ch)
	if len(got) == 0 || got[0].Type != "missed" || got[0].Seq != 150 {
		t.Fatalf("first = %v, want 150 missed", summarize(got[:min(1, len(got))]))
	}
	checkRun(t, got[1:], 201, 300, func(uint64) bool { return true })

	// Stalled: at most Window batches reach it while 1000 events go by.
	h.sync(pid, holdAcks{hold: true})
	for i := 0; i < 1000; i++ {
		h.system.Root.Send(h.hub, &messages.Event{Type: "y"})
	}
	stalled := h.drain(pid, ch)
	if len(stalled) != Window {
		t.Fatalf("a stalled subscriber got %d events, want %d (one live batch each)", len(stalled), Window)
	}
	checkRun(t, stalled, 301, 300+Window, func(uint64) bool { return true })
	h.sync(pid, holdAcks{hold: false})
	rest := h.drain(pid, ch)
	// 309..1300 were recorded; 1201..1300 are kept.
	if len(rest) == 0 || rest[0].Type != "missed" || rest[0].Seq != 1200-(300+Window) {
		t.Fatalf("after the stall: first = %v, want %d missed", summarize(rest[:min(1, len(rest))]), 1200-(300+Window))
	}
	checkRun(t, rest[1:], 1201, 1300, func(uint64) bool { return true })
}

// TestNothingKeptIsNoGap: when every event has aged out, "all that is
// kept" is nothing, not a gap to report.
func TestNothingKeptIsNoGap(t *testing.T) {
	h := newHubTest(t)
	h.ret = Retention{MaxAge: 20 * time.Millisecond, Every: 10 * time.Millisecond}
	h.start()
	for i := 0; i < 5; i++ {
		h.system.Root.Send(h.hub, &messages.Event{Type: "x"})
	}
	h.ping()
	time.Sleep(100 * time.Millisecond)
	pid, ch := h.collector()
	h.subscribe(pid, &messages.SubscribeEvents{HistoryOnly: true})
	got := h.drain(pid, ch)
	checkSeen(t, "history of nothing", got, []seen{{5, "end"}})
}

// TestReplayIsChunked: replaying a long history (the default retention's
// 100,000 events) is many small batches, and the hub answers other
// messages between them rather than after the whole replay.
func TestReplayIsChunked(t *testing.T) {
	const n = DefaultMaxCount
	h := newHubTest(t)
	// Written in one transaction, as a hub would have over time.
	db, err := bolt.Open(h.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.NoSync = true
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucket)
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for i := uint64(1); i <= n; i++ {
			data, err := proto.Marshal(&messages.Event{Seq: i, UnixNano: now, Type: "x", Subject: "web", Attrs: map[string]string{"service": "web"}})
			if err != nil {
				return err
			}
			if err := b.Put(seqKey(i), data); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if last := h.start(); last != n {
		t.Fatalf("hub starts at seq %d, want %d", last, n)
	}
	pid, ch := h.collector()
	h.subscribe(pid, &messages.SubscribeEvents{Replay: true})
	h.ping() // answered between chunks
	if got := len(ch); got >= n/2 {
		t.Fatalf("the hub answered a ping only after sending %d of %d events: the replay blocks it", got, n)
	}
	got := h.follow(pid, ch, n)
	checkRun(t, got, 1, n, func(uint64) bool { return true })
}
