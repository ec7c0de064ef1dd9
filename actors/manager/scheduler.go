package manager

import (
	"fmt"
	"github.com/warrenorch/warren/actors/events"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// schedulerActor places pending tasks on nodes. It reacts to state changes
// that can make a placement possible (new pending tasks, node changes) and
// proposes one batch at a time: while a batch is in flight it only notes
// that more work came in, so a task is never placed twice.
type schedulerActor struct {
	cfg      LeaderConfig
	sub      *eventstream.Subscription
	inflight bool
	dirty    bool
	queue    []placeRequest // PlaceTasks waiting for the write in flight
}

type placeRequest struct {
	m      *messages.PlaceTasks
	sender *actor.PID
}

func newScheduler(cfg LeaderConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &schedulerActor{cfg: cfg} }, events.WithLifecycle)
}

func schedulingRelevant(sc *messages.StateChanged) bool {
	for _, c := range sc.Changes {
		switch o := c.Object.(type) {
		case *messages.Change_Node:
			return true
		case *messages.Change_Task:
			if o.Task.NodeId == "" && o.Task.DesiredState == messages.TaskState_TASK_STATE_RUNNING {
				return true
			}
		}
	}
	return false
}

func (a *schedulerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.sub = subscribeState(ctx, schedulingRelevant)
		a.schedule(ctx)
	case *actor.Stopping, *actor.Restarting:
		unsubscribe(ctx, a.sub)
	case *messages.StateChanged:
		a.schedule(ctx)
	case *messages.PlaceTasks:
		a.queue = append(a.queue, placeRequest{m: m, sender: ctx.Sender()})
		a.next(ctx)
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	case *tick:
		_ = m
		a.schedule(ctx)
	}
}

// next starts the next piece of work once no write is in flight: queued
// placements first, then pending tasks from the state.
func (a *schedulerActor) next(ctx actor.Context) {
	if a.inflight {
		return
	}
	if len(a.queue) > 0 {
		r := a.queue[0]
		a.queue = a.queue[1:]
		a.place(ctx, r)
		return
	}
	if a.dirty {
		a.dirty = false
		a.schedule(ctx)
	}
}

// place creates new tasks already assigned to nodes: one raft write instead
// of a create followed by an assignment.
func (a *schedulerActor) place(ctx actor.Context, r placeRequest) {
	received := time.Now()
	st := a.cfg.Store.State
	var unplaced, running []*messages.Task
	for _, t := range st.Tasks(store.TaskFilter{}) {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING && t.NodeId != "" {
			running = append(running, t)
		}
	}
	for _, t := range r.m.Tasks {
		if t.NodeId == "" {
			unplaced = append(unplaced, t)
		}
	}
	pl := Place(unplaced, st.Nodes(), running)
	now := time.Now().UnixNano()
	for _, t := range pl.Assigned {
		t.Epoch = 1
		t.Status = &messages.TaskStatus{State: messages.TaskState_TASK_STATE_ASSIGNED, Message: "assigned to node " + t.NodeId, TimestampUnixNano: now}
	}
	for _, t := range unplaced {
		if why, ok := pl.Refused[t.Id]; ok {
			t.Status = &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING, Message: why, TimestampUnixNano: now}
		}
	}
	a.inflight = true
	f := ctx.RequestFuture(storePID(ctx), &messages.Propose{Command: &messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: r.m.Tasks}}}}, proposeTimeout+time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		a.inflight = false
		if c, _ := res.(*messages.CommandResult); err == nil && c != nil && c.Error == nil {
			observePlacement(pl.Assigned, received)
		}
		if r.sender != nil {
			if err != nil {
				res = &messages.CommandResult{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: err.Error()}}
			}
			ctx.Send(r.sender, res)
		}
		a.next(ctx)
	})
}

func (a *schedulerActor) schedule(ctx actor.Context) {
	if a.inflight {
		a.dirty = true
		return
	}
	st := a.cfg.Store.State
	var pending, running []*messages.Task
	for _, t := range st.Tasks(store.TaskFilter{}) {
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			continue
		}
		if t.NodeId == "" {
			pending = append(pending, t)
		} else {
			running = append(running, t)
		}
	}
	if len(pending) == 0 {
		return
	}
	pl := Place(pending, st.Nodes(), running)
	cmd := &messages.Command{}
	var upd []*messages.Task
	for _, t := range pl.Assigned {
		t.Epoch++
		t.Status = &messages.TaskStatus{State: messages.TaskState_TASK_STATE_ASSIGNED, Message: "assigned to node " + t.NodeId, TimestampUnixNano: time.Now().UnixNano()}
		upd = append(upd, t)
	}
	var refused []*messages.TaskStatusUpdate
	for _, t := range pending {
		why, ok := pl.Refused[t.Id]
		if !ok || t.GetStatus().GetMessage() == why {
			continue
		}
		refused = append(refused, &messages.TaskStatusUpdate{TaskId: t.Id, Epoch: t.Epoch, Status: &messages.TaskStatus{
			State: messages.TaskState_TASK_STATE_PENDING, Message: why, TimestampUnixNano: time.Now().UnixNano()}})
	}
	switch {
	case len(upd) > 0:
		cmd.Op = &messages.Command_UpdateTasks{UpdateTasks: &messages.UpdateTasks{Tasks: upd}}
	case len(refused) > 0:
		cmd.Op = &messages.Command_UpdateTaskStatuses{UpdateTaskStatuses: &messages.UpdateTaskStatuses{Updates: refused}}
	default:
		return
	}
	a.inflight = true
	f := ctx.RequestFuture(storePID(ctx), &messages.Propose{Command: cmd}, proposeTimeout+time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		a.inflight = false
		if r, _ := res.(*messages.CommandResult); err != nil || r == nil || r.Error != nil {
			a.cfg.Log.Warn("scheduler write failed; retrying", zap.String("error", fmt.Sprint(err, r.GetError())))
			ctx.Send(ctx.Self(), &tick{kind: "retry"})
			a.next(ctx)
			return
		}
		observePlacement(upd, time.Time{})
		// Refusals alone are written; then wait for a change that helps.
		if len(upd) > 0 && len(refused) > 0 {
			a.dirty = true
		}
		a.next(ctx)
	})
}
