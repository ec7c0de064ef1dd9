package events

import (
	"io"
	"strings"

	"fmt"
	bolt "go.etcd.io/bbolt"
	"log/slog"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// want is the part of an event FromState decides; the time stamp is checked
// separately since it is "now".
type want struct {
	typ, subject, message string
	attrs                 map[string]string
}

func svc(name, image string, replicas uint64) *messages.Change_Service {
	return &messages.Change_Service{Service: &messages.Service{Id: "s-" + name, Spec: &messages.ServiceSpec{Name: name, Image: image, Replicas: replicas}}}
}

func task(id string, desired messages.TaskState, st *messages.TaskStatus) *messages.Change_Task {
	return &messages.Change_Task{Task: &messages.Task{Id: id, ServiceName: "web", NodeId: "n2", DesiredState: desired, Status: st}}
}

func node(id, host string, state messages.NodeState) *messages.Change_Node {
	return &messages.Change_Node{Node: &messages.Node{Id: id, Description: &messages.NodeDescription{Hostname: host}, Status: &messages.NodeStatus{State: state}}}
}

func TestFromState(t *testing.T) {
	const (
		create = messages.ChangeOp_CHANGE_OP_CREATE
		update = messages.ChangeOp_CHANGE_OP_UPDATE
		del    = messages.ChangeOp_CHANGE_OP_DELETE
	)
	running := messages.TaskState_TASK_STATE_RUNNING
	tests := []struct {
		name    string
		index   uint64
		changes []*messages.Change
		want    []want
	}{
		{"service created", 7, []*messages.Change{{Op: create, Object: svc("web", "nginx:1", 3)}}, []want{
			{typ: "service.created", subject: "web", attrs: map[string]string{"index": "7", "replicas": "3", "image": "nginx:1"}},
		}},
		{"service updated", 8, []*messages.Change{{Op: update, Object: svc("web", "nginx:2", 5)}}, []want{
			{typ: "service.updated", subject: "web", attrs: map[string]string{"index": "8", "replicas": "5", "image": "nginx:2"}},
		}},
		{"service deleted", 9, []*messages.Change{{Op: del, Object: svc("web", "nginx:2", 5)}}, []want{
			{typ: "service.deleted", subject: "web", attrs: map[string]string{"index": "9", "replicas": "5", "image": "nginx:2"}},
		}},
		// A deployment transition is its own event, after the service's;
		// a change that carries an older transition (a scale) is not one.
		{"deployment transition", 20, []*messages.Change{{Op: update, Object: &messages.Change_Service{Service: &messages.Service{
			Spec: &messages.ServiceSpec{Name: "web", Image: "nginx:2", Replicas: 4},
			Deployment: &messages.Deployment{Id: "d1", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, State: messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK,
				FromVersion: 1, ToVersion: 2, Weight: 10, Total: 1, Index: 20, Message: "rolling back: 1 of 1 new tasks failed"}}}}}, []want{
			{typ: "service.updated", subject: "web", attrs: map[string]string{"index": "20", "replicas": "4", "image": "nginx:2"}},
			{typ: "deployment.rolling-back", subject: "web", message: "rolling back: 1 of 1 new tasks failed", attrs: map[string]string{
				"index": "20", "deployment": "d1", "strategy": "canary", "from": "1", "to": "2", "updated": "0/1", "weight": "10"}},
		}},
		{"scale during a deployment", 21, []*messages.Change{{Op: update, Object: &messages.Change_Service{Service: &messages.Service{
			Spec:       &messages.ServiceSpec{Name: "web", Image: "nginx:2", Replicas: 5},
			Deployment: &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_MONITORING, Index: 20}}}}}, []want{
			{typ: "service.updated", subject: "web", attrs: map[string]string{"index": "21", "replicas": "5", "image": "nginx:2"}},
		}},
		// A service without a spec must not panic; it has no name to show.
		{"service without spec", 1, []*messages.Change{{Op: create, Object: &messages.Change_Service{Service: &messages.Service{Id: "s1"}}}}, []want{
			{typ: "service.created", attrs: map[string]string{"index": "1", "replicas": "0", "image": ""}},
		}},
		{"task created", 10, []*messages.Change{{Op: create, Object: task("t1", running, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING})}}, []want{
			{typ: "task.created", subject: "t1", attrs: map[string]string{"index": "10", "service": "web", "node": "n2", "desired": "running"}},
		}},
		// A replacement says what it replaces and why, so `warren events`
		// explains a task moving off a down or drained node.
		{"task rescheduled", 10, []*messages.Change{{Op: create, Object: &messages.Change_Task{Task: &messages.Task{Id: "t2", ServiceName: "web", NodeId: "n3", DesiredState: running, Replaces: "t1", Reason: "node n2 is down"}}}}, []want{
			{typ: "task.rescheduled", subject: "t2", message: "node n2 is down", attrs: map[string]string{"index": "10", "service": "web", "node": "n3", "desired": "running", "replaces": "t1"}},
		}},
		// An update is named by the state the task reached, not by "updated".
		{"task running with message", 11, []*messages.Change{{Op: update, Object: task("t1", running, &messages.TaskStatus{State: running, Message: "started"})}}, []want{
			{typ: "task.running", subject: "t1", message: "started", attrs: map[string]string{"index": "11", "service": "web", "node": "n2", "desired": "running"}},
		}},
		// The error says more than the message, so it wins.
		{"task failed with error", 12, []*messages.Change{{Op: update, Object: task("t1", running, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, Message: "exited", Err: "exit code 2"})}}, []want{
			{typ: "task.failed", subject: "t1", message: "exit code 2", attrs: map[string]string{"index": "12", "service": "web", "node": "n2", "desired": "running"}},
		}},
		{"task update without status", 13, []*messages.Change{{Op: update, Object: task("t1", messages.TaskState_TASK_STATE_SHUTDOWN, nil)}}, []want{
			{typ: "task.new", subject: "t1", attrs: map[string]string{"index": "13", "service": "web", "node": "n2", "desired": "shutdown"}},
		}},
		{"task deleted", 14, []*messages.Change{{Op: del, Object: task("t1", messages.TaskState_TASK_STATE_SHUTDOWN, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_COMPLETE, Err: "ignored on delete"})}}, []want{
			{typ: "task.deleted", subject: "t1", attrs: map[string]string{"index": "14", "service": "web", "node": "n2", "desired": "shutdown"}},
		}},
		{"node created", 15, []*messages.Change{{Op: create, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_UNKNOWN)}}, []want{
			{typ: "node.created", subject: "host-a", attrs: map[string]string{"index": "15", "id": "n1"}},
		}},
		{"node ready", 16, []*messages.Change{{Op: update, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_READY)}}, []want{
			{typ: "node.ready", subject: "host-a", attrs: map[string]string{"index": "16", "id": "n1"}},
		}},
		{"node down", 17, []*messages.Change{{Op: update, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_DOWN)}}, []want{
			{typ: "node.down", subject: "host-a", attrs: map[string]string{"index": "17", "id": "n1"}},
		}},
		{"node deleted", 18, []*messages.Change{{Op: del, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_DOWN)}}, []want{
			{typ: "node.deleted", subject: "host-a", attrs: map[string]string{"index": "18", "id": "n1"}},
		}},
		// One write can change several objects; events keep the order, and
		// a change with no object is skipped rather than reported empty.
		{"several changes in one write", 19, []*messages.Change{
			{Op: create, Object: svc("db", "pg:16", 1)},
			{Op: update},
			{Op: create, Object: task("t9", running, nil)},
		}, []want{
			{typ: "service.created", subject: "db", attrs: map[string]string{"index": "19", "replicas": "1", "image": "pg:16"}},
			{typ: "task.created", subject: "t9", attrs: map[string]string{"index": "19", "service": "web", "node": "n2", "desired": "running"}},
		}},
		{"no changes", 20, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().UnixNano()
			got := FromState("node-x", &messages.StateChanged{Index: tt.index, Changes: tt.changes})
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %v, want %d", len(got), got, len(tt.want))
			}
			for i, ev := range got {
				w := tt.want[i]
				if ev.Type != w.typ || ev.Subject != w.subject || ev.Message != w.message {
					t.Errorf("event %d = {type %q subject %q message %q}, want {%q %q %q}", i, ev.Type, ev.Subject, ev.Message, w.typ, w.subject, w.message)
				}
				if !maps.Equal(ev.Attrs, w.attrs) {
					t.Errorf("event %d attrs = %v, want %v", i, ev.Attrs, w.attrs)
				}
				if ev.Node != "node-x" {
					t.Errorf("event %d node = %q, want node-x", i, ev.Node)
				}
				// The hub numbers events; FromState must leave that to it.
				if ev.Seq != 0 {
					t.Errorf("event %d seq = %d, want 0", i, ev.Seq)
				}
				if ev.UnixNano < before {
					t.Errorf("event %d time %d is before the call (%d)", i, ev.UnixNano, before)
				}
			}
		})
	}
}

func TestStateNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{TaskStateName(messages.TaskState_TASK_STATE_NEW), "new"},
		{TaskStateName(messages.TaskState_TASK_STATE_PENDING), "pending"},
		{TaskStateName(messages.TaskState_TASK_STATE_ASSIGNED), "assigned"},
		{TaskStateName(messages.TaskState_TASK_STATE_PREPARING), "preparing"},
		{TaskStateName(messages.TaskState_TASK_STATE_STARTING), "starting"},
		{TaskStateName(messages.TaskState_TASK_STATE_RUNNING), "running"},
		{TaskStateName(messages.TaskState_TASK_STATE_COMPLETE), "complete"},
		{TaskStateName(messages.TaskState_TASK_STATE_SHUTDOWN), "shutdown"},
		{TaskStateName(messages.TaskState_TASK_STATE_FAILED), "failed"},
		{TaskStateName(messages.TaskState_TASK_STATE_REJECTED), "rejected"},
		{TaskStateName(messages.TaskState_TASK_STATE_ORPHANED), "orphaned"},
		// A state from a newer peer has no name here; its number is shown.
		{TaskStateName(messages.TaskState(99)), "99"},
		{NodeStateName(messages.NodeState_NODE_STATE_UNKNOWN), "unknown"},
		{NodeStateName(messages.NodeState_NODE_STATE_READY), "ready"},
		{NodeStateName(messages.NodeState_NODE_STATE_DOWN), "down"},
		{NodeStateName(messages.NodeState_NODE_STATE_DISCONNECTED), "disconnected"},
		{NodeStateName(messages.NodeState(42)), "42"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("name = %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// syncMsg is what the collector answers once everything sent to it before has
// been handled: mailboxes are FIFO, so no sleeping is needed.
type syncMsg struct{}

// collector is a local subscriber that hands every event to the test.
func collector(out chan<- *messages.Event) *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *messages.Event:
			out <- m
		case syncMsg:
			ctx.Respond(syncMsg{})
		}
	})
}

type hubTest struct {
	t      *testing.T
	system *actor.ActorSystem
	path   string
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
	h.hub = h.system.Root.Spawn(NewHub("node-a", h.path, zap.NewNop()))
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

func (h *hubTest) subscribe(pid *actor.PID, m *messages.SubscribeEvents) uint64 {
	h.t.Helper()
	m.Subscriber = pid
	res, err := h.system.Root.RequestFuture(h.hub, m, 5*time.Second).Result()
	if err != nil {
		h.t.Fatalf("subscribe: %v", err)
	}
	return res.(*messages.SubscribeEventsReply).LastSeq
}

// drain returns what the collector has received so far: the hub ping makes
// sure the hub has handled everything published before, the collector sync
// that the collector has handled everything the hub sent it.
func (h *hubTest) drain(pid *actor.PID, ch <-chan *messages.Event) []*messages.Event {
	h.t.Helper()
	h.ping()
	if _, err := h.system.Root.RequestFuture(pid, syncMsg{}, 5*time.Second).Result(); err != nil {
		h.t.Fatalf("sync collector: %v", err)
	}
	var out []*messages.Event
	for {
		select {
		case ev := <-ch:
			out = append(out, ev)
		default:
			return out
		}
	}
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
		ch := make(chan *messages.Event, 64)
		pid := h.system.Root.Spawn(collector(ch))
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
	ch := make(chan *messages.Event, 64)
	pid := h.system.Root.Spawn(collector(ch))
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
// within HistoryBytes however many arrive.
func TestHubBoundsDisk(t *testing.T) {
	h := newHubTest(t)
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
	if bytes > HistoryBytes {
		t.Fatalf("history holds %d bytes (limit %d)", bytes, HistoryBytes)
	}
	if n == 0 || n >= 3010 {
		t.Fatalf("history holds %d events: the oldest should have gone by bytes", n)
	}
	// The count and size a restarted hub starts from are the disk's.
	h.start()
	h.stop()
}
