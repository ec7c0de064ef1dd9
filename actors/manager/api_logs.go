package manager

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// logsTable is what manager/api/logs takes, and from whom.
var logsTable = table{typeName(&messages.ReadLogsRequest{}): adminRoles}

const (
	// defaultLogsBytes is an answer's size when the request names none;
	// maxLogsBytes bounds what a request may ask (remoting frames are
	// bounded, and a reader that wants more asks again).
	defaultLogsBytes = 1 << 20
	maxLogsBytes     = 4 << 20
	minNodeLogsBytes = 64 << 10
	// logsEarly is when an answer goes out with the lines it has while
	// nodes with nothing new still wait for lines.
	logsEarly = 300 * time.Millisecond
	// logsGrace is how long past the follow wait a node may take.
	logsGrace   = 2 * time.Second
	maxLogsWait = 30 * time.Second
)

// logsAPI (manager/api/logs) reads task logs: it asks every node that ran
// a task of the service for a chunk, merges the chunks by time and names
// the nodes that did not answer. It keeps no state per reader (the cursors
// travel in the requests), only which nodes failed to answer lately.
type logsAPI struct {
	cfg APIConfig
	// failedAt: nodes whose last read failed or timed out, and when;
	// cleared by their next answer. Such a node is named unreachable as
	// soon as an answer goes out without it.
	failedAt map[string]time.Time
}

func newLogsAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &logsAPI{cfg: cfg, failedAt: map[string]time.Time{}}
	}, events.WithLifecycle)
}

func (a *logsAPI) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*messages.ReadLogsRequest); ok {
		a.read(ctx, m)
	}
}

// logTarget is what to ask which nodes for.
type logTarget struct {
	serviceID string
	taskIDs   []string
	nodes     []string // node ids
}

func (a *logsAPI) target(m *messages.ReadLogsRequest) (logTarget, *messages.Error) {
	st := a.cfg.Store.State
	seen := map[string]bool{}
	var t logTarget
	addNode := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			t.nodes = append(t.nodes, id)
		}
	}
	switch {
	case m.Service != "" && m.TaskId != "":
		return t, errReply(messages.ErrorCode_ERROR_CODE_INVALID, "name a service or a task, not both")
	case m.Service != "":
		svc := st.ServiceByName(m.Service)
		if svc == nil {
			svc = st.Service(m.Service)
		}
		if svc == nil {
			return t, notFound("service", m.Service)
		}
		t.serviceID = svc.Id
		for _, tk := range st.Tasks(store.TaskFilter{ServiceID: svc.Id}) {
			addNode(tk.NodeId)
		}
	case m.TaskId != "":
		var match []*messages.Task
		for _, tk := range st.Tasks(store.TaskFilter{}) {
			if strings.HasPrefix(tk.Id, m.TaskId) {
				match = append(match, tk)
			}
		}
		switch {
		case len(match) > 1:
			return t, errReply(messages.ErrorCode_ERROR_CODE_INVALID, "task id %q is ambiguous (%d tasks start with it): give more of it", m.TaskId, len(match))
		case len(match) == 1:
			t.taskIDs = []string{match[0].Id}
			addNode(match[0].NodeId)
		case len(m.TaskId) < 24:
			return t, errReply(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "task %q not found: list tasks with `warren service ps SERVICE -a`; a task the cluster no longer lists needs its full id", m.TaskId)
		default:
			// Pruned from the state: its node may still keep its logs.
			t.taskIDs = []string{m.TaskId}
			for _, n := range st.Nodes() {
				addNode(n.Id)
			}
		}
	default:
		return t, errReply(messages.ErrorCode_ERROR_CODE_INVALID, "name a service or a task whose logs to read")
	}
	sort.Strings(t.nodes)
	return t, nil
}

// logRound is one request's fan-out.
type logRound struct {
	req     *messages.ReadLogsRequest
	nodes   []string
	names   map[string]string // node id -> "hostname (id)"
	replies map[string]*messages.ReadNodeLogsReply
	failed  map[string]string // node id -> why
	done    bool
}

func (a *logsAPI) read(ctx actor.Context, m *messages.ReadLogsRequest) {
	t, e := a.target(m)
	if e != nil {
		ctx.Respond(&messages.ReadLogsReply{Error: e})
		return
	}
	wait := min(time.Duration(m.WaitMs)*time.Millisecond, maxLogsWait)
	total := int(m.MaxBytes)
	if total <= 0 {
		total = defaultLogsBytes
	}
	total = min(total, maxLogsBytes)
	r := &logRound{req: m, nodes: t.nodes, names: map[string]string{},
		replies: map[string]*messages.ReadNodeLogsReply{}, failed: map[string]string{}}
	if len(t.nodes) == 0 {
		ctx.Respond(&messages.ReadLogsReply{Cursors: m.Cursors})
		return
	}
	per := uint32(max(total/len(t.nodes), minNodeLogsBytes))
	st := a.cfg.Store.State
	for _, id := range t.nodes {
		n := st.Node(id)
		r.names[id] = id
		if n == nil {
			r.failed[id] = "no longer in the cluster"
			continue
		}
		if h := n.Description.GetHostname(); h != "" {
			r.names[id] = fmt.Sprintf("%s (%s)", h, id)
		}
		addr := n.Description.GetAddr()
		if addr == "" {
			r.failed[id] = "its address is unknown"
			continue
		}
		if n.GetStatus().GetState() == messages.NodeState_NODE_STATE_DOWN {
			// Ask all the same (its logs come once it answers), but name it now.
			a.failedAt[id] = time.Now()
		}
		req := &messages.ReadNodeLogs{ServiceId: t.serviceID, TaskIds: t.taskIDs,
			SinceUnixNano: m.SinceUnixNano, UntilUnixNano: m.UntilUnixNano, Tail: m.Tail,
			Cursors: cursorsOf(m.Cursors, id), WaitMs: uint32(wait.Milliseconds()), MaxBytes: per}
		f := ctx.RequestFuture(actor.NewPID(addr, remoting.ActorLogs), req, wait+logsGrace)
		ctx.ReenterAfter(f, func(res any, err error) {
			rep, ok := res.(*messages.ReadNodeLogsReply)
			if err != nil || !ok {
				a.failedAt[id] = time.Now()
				if !r.done {
					r.failed[id] = fmt.Sprintf("no answer (%v)", err)
				}
			} else {
				delete(a.failedAt, id)
				if !r.done {
					r.replies[id] = rep
				}
			}
			a.maybeFinish(ctx, r, false)
		})
	}
	early := actor.NewFuture(ctx.ActorSystem(), logsEarly)
	ctx.ReenterAfter(early, func(any, error) { a.maybeFinish(ctx, r, true) })
	a.maybeFinish(ctx, r, false)
}

// maybeFinish answers once every node has, or at logsEarly when some lines
// are in hand: a node with nothing new keeps the others' lines no longer.
func (a *logsAPI) maybeFinish(ctx actor.Context, r *logRound, early bool) {
	if r.done {
		return
	}
	pending, suspect := 0, 0
	lines := false
	for _, id := range r.nodes {
		if rep, ok := r.replies[id]; ok {
			lines = lines || len(rep.Lines) > 0
		} else if _, ok := r.failed[id]; !ok {
			pending++
			if _, bad := a.failedAt[id]; bad {
				suspect++
			}
		}
	}
	// Early, with lines in hand: a follower does not wait for nodes that
	// are waiting for lines themselves; a one-off read waits for every
	// node but those that failed lately, so that a node missing from it
	// is named.
	if pending > 0 && !(early && lines && (r.req.WaitMs > 0 || suspect == pending)) {
		return
	}
	r.done = true
	out := mergeLogs(r.req.Cursors, r.replies)
	a.name(out)
	for _, id := range r.nodes {
		if _, ok := r.replies[id]; ok {
			continue
		}
		out.Cursors = append(out.Cursors, cursorsOf(r.req.Cursors, id)...)
		_, failed := r.failed[id]
		if _, bad := a.failedAt[id]; failed || bad {
			out.Unreachable = append(out.Unreachable, r.names[id])
		}
	}
	ctx.Respond(out)
}

func cursorsOf(cs []*messages.LogCursor, node string) []*messages.LogCursor {
	var out []*messages.LogCursor
	for _, c := range cs {
		if c.NodeId == node {
			out = append(out, c)
		}
	}
	return out
}

type taskKey struct{ node, task string }

// mergeLogs orders the nodes' lines by time. A task with more lines waiting
// than it sent may have older lines to come than another task's last: lines
// after the earliest such cut are held back for the next answer, and the
// cursors say where each task's kept lines end.
func mergeLogs(prev []*messages.LogCursor, replies map[string]*messages.ReadNodeLogsReply) *messages.ReadLogsReply {
	out := &messages.ReadLogsReply{}
	startOf := func(rep *messages.ReadNodeLogsReply, k taskKey) *messages.LogCursor {
		for _, c := range rep.Starts {
			if c.TaskId == k.task {
				return c
			}
		}
		return &messages.LogCursor{NodeId: k.node, TaskId: k.task}
	}
	cursor := map[taskKey]*messages.LogCursor{}
	var order []taskKey
	set := func(c *messages.LogCursor) {
		k := taskKey{c.NodeId, c.TaskId}
		if _, ok := cursor[k]; !ok {
			order = append(order, k)
		}
		cursor[k] = c
	}
	for _, c := range prev {
		if _, ok := replies[c.NodeId]; ok {
			set(c)
		}
	}
	const forever = int64(1<<63 - 1)
	horizon := forever
	var lines []*messages.LogLine
	skipped := map[string]bool{}
	nodes := make([]string, 0, len(replies))
	for id := range replies {
		nodes = append(nodes, id)
	}
	sort.Strings(nodes)
	for _, id := range nodes {
		rep := replies[id]
		for _, c := range rep.Starts {
			set(c)
		}
		last := map[string]int64{}
		for _, l := range rep.Lines {
			last[l.TaskId] = l.TimeUnixNano
		}
		for _, tk := range rep.More {
			cut, ok := last[tk]
			if !ok {
				cut = -1 << 63 // nothing sent yet: hold everything back
			}
			horizon = min(horizon, cut)
		}
		lines = append(lines, rep.Lines...)
		for _, c := range rep.Cursors {
			set(c)
		}
		for _, s := range rep.Skipped {
			skipped[s] = true
		}
	}
	// Keep, per task, its lines up to the horizon in file order (stdout
	// and stderr are stamped apart, so a file is not strictly in time
	// order): a cursor can only mark where a prefix ends.
	held, kept := map[taskKey]bool{}, map[taskKey]bool{}
	for _, l := range lines {
		k := taskKey{l.NodeId, l.TaskId}
		if held[k] || l.TimeUnixNano > horizon {
			if !held[k] && !kept[k] {
				cursor[k] = startOf(replies[k.node], k)
			}
			held[k] = true
			continue
		}
		kept[k] = true
		out.Lines = append(out.Lines, l)
		if horizon != forever {
			cursor[k] = &messages.LogCursor{NodeId: l.NodeId, TaskId: l.TaskId, Gen: l.Gen, Offset: l.EndOffset}
		}
	}
	// A task none of whose lines is held keeps the cursor its node sent.
	for _, id := range nodes {
		for _, c := range replies[id].Cursors {
			if k := (taskKey{c.NodeId, c.TaskId}); !held[k] {
				cursor[k] = c
			}
		}
	}
	out.More = horizon != forever
	sort.SliceStable(out.Lines, func(i, j int) bool { return out.Lines[i].TimeUnixNano < out.Lines[j].TimeUnixNano })
	tasks := map[string]bool{}
	for _, k := range order {
		out.Cursors = append(out.Cursors, cursor[k])
		if !tasks[k.task] {
			tasks[k.task] = true
			out.TaskIds = append(out.TaskIds, k.task)
		}
	}
	for s := range skipped {
		out.Skipped = append(out.Skipped, s)
	}
	sort.Strings(out.Skipped)
	return out
}

// name gives the reader the display names of the answer's tasks and nodes.
func (a *logsAPI) name(out *messages.ReadLogsReply) {
	st := a.cfg.Store.State
	out.Names = map[string]string{}
	for _, c := range out.Cursors {
		if _, ok := out.Names[c.TaskId]; !ok {
			out.Names[c.TaskId] = taskName(st.Task(c.TaskId), c.TaskId)
		}
		if _, ok := out.Names[c.NodeId]; !ok {
			out.Names[c.NodeId] = c.NodeId
			if n := st.Node(c.NodeId); n != nil && n.Description.GetHostname() != "" {
				out.Names[c.NodeId] = n.Description.GetHostname()
			}
		}
	}
}

// taskName is Docker's service.slot (service.node for a global task's
// slot 0); a task the state no longer has is named by its id.
func taskName(t *messages.Task, id string) string {
	if t == nil {
		return id
	}
	if t.Slot == 0 {
		return t.ServiceName
	}
	return fmt.Sprintf("%s.%d", t.ServiceName, t.Slot)
}
