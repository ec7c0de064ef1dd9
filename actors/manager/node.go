package manager

import (
	"bytes"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// nodeActor is the leader's view of one node: it pushes the node its full
// assignment set whenever the network view or one of its own tasks changes
// (and periodically, so a lost push heals), takes its heartbeats and status
// reports, and marks it down when heartbeats stop. A new leader gives every
// node a fresh grace period instead of trusting timers from before the
// election. The network part of each push is the netview actor's, shared
// by every node actor; a node actor reads only its own node and tasks.
type nodeActor struct {
	cfg      LeaderConfig
	id       string
	cancel   []scheduler.CancelFunc
	lastBeat time.Time
	writing  bool
	// view is the newest network view the netview actor sent.
	view *netView
	// atLeast: a drain waits for this node to be sent a set of at least
	// this index; pushed as soon as the view is that new.
	atLeast uint64
	// pushed is what the last push carried, less the task statuses the
	// node itself reported: echoing those back costs the node work while
	// its containers start, and tells it nothing. pushedNet is the sum of
	// the network view it carried.
	pushed    []byte
	pushedNet [32]byte
	sent      uint64 // index of the last push
}

func newNodeActor(cfg LeaderConfig, id string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &nodeActor{cfg: cfg, id: id} }, events.WithLifecycle)
}

func (a *nodeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.lastBeat = time.Now()
		s := scheduler.NewTimerScheduler(ctx)
		a.cancel = append(a.cancel,
			s.SendRepeatedly(a.cfg.ResyncEvery, a.cfg.ResyncEvery, ctx.Self(), &tick{kind: "resync"}),
			s.SendRepeatedly(time.Second, time.Second, ctx.Self(), &tick{kind: "down"}))
		// The first push waits for the view; the netview sends each new
		// one without being asked.
		ctx.Request(actor.NewPID(ctx.Self().Address, nameNetView), &viewWanted{})
	case *actor.Stopping, *actor.Restarting:
		for _, c := range a.cancel {
			c()
		}
		a.cancel = nil
	case *netView:
		first := a.view == nil
		a.view = m
		due := a.sent < a.atLeast && m.index >= a.atLeast
		if !first && !due && m.sum == a.pushedNet && !m.touches(a.id) {
			return // nothing of this node's push changed: not even a state read
		}
		a.push(ctx, first || due)
	case *pushAtLeast:
		if a.sent >= m.index {
			return
		}
		a.atLeast = max(a.atLeast, m.index)
		if a.view != nil && a.view.index >= m.index {
			a.push(ctx, true)
		}
	case *tick:
		switch m.kind {
		case "resync":
			a.push(ctx, true)
		case "down":
			a.checkDown(ctx)
		}
	case *messages.Heartbeat:
		a.lastBeat = time.Now()
		if ctx.Sender() != nil {
			ctx.Respond(&messages.Heartbeat{NodeId: a.id, UnixNano: a.lastBeat.UnixNano()})
		}
		if n := a.cfg.Store.State.Node(a.id); n != nil && n.GetStatus().GetState() != messages.NodeState_NODE_STATE_READY {
			a.setState(ctx, n, messages.NodeState_NODE_STATE_READY, "heartbeat resumed")
		}
	case *messages.TaskStatusReport:
		a.lastBeat = time.Now()
		// A node reports only for tasks assigned to it.
		var mine []*messages.TaskStatusUpdate
		n := a.cfg.Store.State.Node(a.id)
		for _, u := range m.Updates {
			t := a.cfg.Store.State.Task(u.TaskId)
			if t == nil || t.NodeId != a.id {
				continue
			}
			if err := checkStatus(n, u.Status); err != nil {
				a.cfg.Log.Warn("refused a task status from its node", zap.String("node", a.id), zap.String("task", u.TaskId), zap.Error(err))
				continue
			}
			mine = append(mine, u)
		}
		if len(mine) > 0 {
			ctx.Request(storePID(ctx), &messages.Propose{Command: &messages.Command{Op: &messages.Command_UpdateTaskStatuses{UpdateTaskStatuses: &messages.UpdateTaskStatuses{Updates: mine}}}})
		}
	case *messages.CommandResult:
		if m.Error != nil {
			a.cfg.Log.Warn("node actor write", zap.String("node", a.id), zap.String("error", m.Error.Message))
		}
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	}
}

// push sends the node every task it must know about (those it must run
// and those it must still stop; anything else it runs is not ours and
// goes) with the network view. The set carries the view's index: the
// tasks, read now, are at least that new, and a node confirming the index
// routes by a network at least that new. Unless always, a push that would
// change nothing for the node is skipped; the periodic resync sends in
// full regardless.
func (a *nodeActor) push(ctx actor.Context, always bool) {
	st, v := a.cfg.Store.State, a.view
	if v == nil {
		return
	}
	n := st.Node(a.id)
	if n == nil || n.Description.GetAddr() == "" {
		return
	}
	as := &messages.Assignments{NodeId: a.id, Index: v.index, Managers: v.managers, Node: n}
	for _, t := range st.Tasks(store.TaskFilter{NodeID: a.id}) {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING || !terminal(t.GetStatus().GetState()) {
			as.Tasks = append(as.Tasks, t)
		}
	}
	sig := pushSig(as, v.sum)
	if !always && bytes.Equal(sig, a.pushed) {
		return
	}
	// gRPC drops a frame over the limit without a word to the sender: say
	// so here, where someone can act on it, instead.
	if size := proto.Size(as) + v.size; size > remoting.MaxMessageBytes-64<<10 {
		a.cfg.Log.Error("assignment set too large to send: the node keeps its last one", zap.String("node", a.id),
			zap.Int("bytes", size), zap.Int("limit", remoting.MaxMessageBytes), zap.Int("tasks", len(as.Tasks)), zap.Int("services", len(v.services)))
		return
	}
	as.Services, as.Peers = v.services, v.peers
	a.pushed, a.pushedNet, a.sent = sig, v.sum, as.Index
	ctx.Send(actor.NewPID(n.Description.Addr, NameAgent), as)
}

// pushSig is what a push means to its node: everything but the raft index
// and the tasks' own statuses. The network enters as the view's sum.
func pushSig(as *messages.Assignments, net [32]byte) []byte {
	rest := &messages.Assignments{NodeId: as.NodeId, Managers: as.Managers, Node: as.Node}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rest)
	if err != nil {
		return nil // never equal to a real signature: push
	}
	b = append(b, net[:]...)
	for _, t := range as.Tasks {
		b = fmt.Appendf(b, "|%s/%d/%d/%d/%s", t.Id, t.Epoch, t.DesiredState, t.SpecVersion, t.NodeId)
	}
	return b
}

func (a *nodeActor) checkDown(ctx actor.Context) {
	if a.writing || time.Since(a.lastBeat) < a.cfg.NodeDownAfter {
		return
	}
	n := a.cfg.Store.State.Node(a.id)
	if n == nil || n.GetStatus().GetState() != messages.NodeState_NODE_STATE_READY {
		return
	}
	a.setState(ctx, n, messages.NodeState_NODE_STATE_DOWN, fmt.Sprintf("no heartbeat for %s", time.Since(a.lastBeat).Round(time.Second)))
}

func (a *nodeActor) setState(ctx actor.Context, n *messages.Node, s messages.NodeState, why string) {
	n.Status = &messages.NodeStatus{State: s, Message: why, LastHeartbeatUnixNano: a.lastBeat.UnixNano()}
	a.writing = true
	f := ctx.RequestFuture(storePID(ctx), &messages.Propose{Command: &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n, ExpectedVersion: n.Meta.GetVersion()}}}}, proposeTimeout+time.Second)
	ctx.ReenterAfter(f, func(any, error) { a.writing = false })
}
