package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// drainTimeout bounds how long a stopping task waits for every node to
// confirm it no longer routes to it: a node that cannot confirm (slow,
// about to be marked down) must not hold a stop forever.
const drainTimeout = 3 * time.Second

// drain is one DrainTask the leader has yet to answer.
type drain struct {
	task     string
	index    uint64 // state index from which the task is no endpoint; 0: not yet
	replyTo  *actor.PID
	deadline time.Time
}

// pushAtLeast asks a node actor to make sure its node has been sent an
// assignment set of at least this index, pushing one now if not.
type pushAtLeast struct{ index uint64 }

// drainTask takes a node's request to drain a task before signalling it.
func (a *leaderActor) drainTask(ctx actor.Context, m *messages.DrainTask) {
	if ctx.Sender() == nil {
		return
	}
	a.drains = append(a.drains, &drain{task: m.TaskId, replyTo: ctx.Sender(), deadline: time.Now().Add(drainTimeout)})
	scheduler.NewTimerScheduler(ctx).SendOnce(drainTimeout, ctx.Self(), &tick{kind: "drain"})
	a.checkDrains(ctx)
}

// programmed records what a node says it has programmed; indexes only grow.
func (a *leaderActor) programmed(ctx actor.Context, node string, index uint64) {
	if index <= a.netIndex[node] {
		return
	}
	a.netIndex[node] = index
	if len(a.drains) > 0 {
		a.checkDrains(ctx)
	}
}

// checkDrains answers every drain that is complete or out of time. A drain
// first waits until replicated state no longer counts the task as an
// endpoint (its stop or its unhealthy report may still be on the way),
// notes that index, makes sure every node is sent a set at least that new,
// and then waits for every ready node to confirm programming it.
func (a *leaderActor) checkDrains(ctx actor.Context) {
	st := a.cfg.Store.State
	now := time.Now()
	keep := a.drains[:0]
	for _, d := range a.drains {
		if d.index == 0 {
			if t := st.Task(d.task); t == nil || !Healthy(t) {
				// The task's last write is the one that made it no endpoint,
				// or later: views are published at the indexes of writes, so
				// a node confirming that index routes without it.
				d.index = st.Index()
				if v := t.GetMeta().GetVersion(); v > 0 {
					d.index = v
				}
				for _, pid := range a.nodes {
					ctx.Send(pid, &pushAtLeast{index: d.index})
				}
			}
		}
		var unconfirmed []string
		if d.index == 0 {
			unconfirmed = append(unconfirmed, "(still an endpoint in replicated state)")
		} else {
			for _, n := range st.Nodes() {
				if n.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY && n.Description.GetAddr() != "" && a.netIndex[n.Id] < d.index {
					unconfirmed = append(unconfirmed, n.Id)
				}
			}
		}
		if len(unconfirmed) > 0 && now.Before(d.deadline) {
			keep = append(keep, d)
			continue
		}
		switch {
		case len(unconfirmed) == 0:
		case d.task == "": // a netConfirm (a blue/green switch)
			a.cfg.Log.Warn("a network view was not confirmed by every node in time",
				zap.Uint64("index", d.index), zap.Strings("unconfirmed", unconfirmed), zap.Duration("waited", drainTimeout))
		default:
			a.cfg.Log.Warn("stopping a task before every node confirmed it no longer routes to it",
				zap.String("task", d.task), zap.Strings("unconfirmed", unconfirmed), zap.Duration("waited", drainTimeout))
		}
		ctx.Send(d.replyTo, &messages.DrainTaskReply{Index: d.index, Unconfirmed: unconfirmed})
	}
	clear(a.drains[len(keep):])
	a.drains = keep
}

// netConfirm asks the leader to answer (with a DrainTaskReply) once every
// ready node has confirmed programming a network view at least as new as
// index, or after drainTimeout with the nodes that did not. A blue/green
// switch waits on it: the switch is done when every node routes to green.
type netConfirm struct{ index uint64 }

func (a *leaderActor) netConfirm(ctx actor.Context, m *netConfirm) {
	if ctx.Sender() == nil {
		return
	}
	a.drains = append(a.drains, &drain{index: m.index, replyTo: ctx.Sender(), deadline: time.Now().Add(drainTimeout)})
	for _, pid := range a.nodes {
		ctx.Send(pid, &pushAtLeast{index: m.index})
	}
	scheduler.NewTimerScheduler(ctx).SendOnce(drainTimeout, ctx.Self(), &tick{kind: "drain"})
	a.checkDrains(ctx)
}
