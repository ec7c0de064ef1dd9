package worker

import (
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// Talking to the managers: which one, registering, heartbeats, and the
// status reports and drains that go to the leader.

func (a *agent) managerPID() *actor.PID {
	return actor.NewPID(a.managers[a.mgr%len(a.managers)], a.cfg.APIName)
}

// setManagers puts the configured managers first (this node itself, on a
// manager) and adds the others, without duplicates.
func (a *agent) setManagers(list []string) {
	seen := map[string]bool{}
	var out []string
	for _, m := range append(append([]string{}, a.cfg.Managers...), list...) {
		if m != "" && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	a.managers = out
}

// learnManagers records the managers the leader told us about, so a worker
// that restarts while its first manager is gone still finds the others.
func (a *agent) learnManagers(list []string) {
	if len(list) == 0 {
		return
	}
	before := strings.Join(a.managers, ",")
	a.setManagers(list)
	if after := strings.Join(a.managers, ","); after != before && a.db != nil {
		_ = a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(cacheBucket).Put(keyManagers, []byte(after)) })
	}
}

func (a *agent) register(ctx actor.Context) {
	req := &messages.RegisterNode{NodeId: a.cfg.NodeID, Role: a.cfg.Role, Description: a.cfg.Description}
	f := ctx.RequestFuture(a.managerPID(), req, 3*time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.RegisterNodeReply)
		if r.GetRemoved() {
			a.leave(ctx, r.GetError().GetMessage())
			return
		}
		if err != nil || r == nil || r.Error != nil || r.Node == nil {
			a.cfg.Log.Debug("register: retrying", zap.String("error", fmt.Sprint(err, r.GetError())))
			a.mgr++ // fail over to the next manager we know
			a.cancel = append(a.cancel, scheduler.NewTimerScheduler(ctx).SendOnce(250*time.Millisecond, ctx.Self(), &registerNow{}))
			return
		}
		a.subnet = r.Node.Subnet
		_ = a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(cacheBucket).Put(keyNode, []byte(a.subnet)) })
		a.learnManagers(r.Managers)
		if err := a.openNetwork(); err != nil {
			a.cfg.Log.Error("task network", zap.Error(err))
		}
		a.beatFails = 0
		if !a.registered {
			a.registered = true
			a.cfg.Log.Info("registered with manager", zap.String("subnet", a.subnet))
			a.cancel = append(a.cancel, scheduler.NewTimerScheduler(ctx).SendRepeatedly(a.cfg.Heartbeat, a.cfg.Heartbeat, ctx.Self(), &heartbeatTick{}))
		}
		// Report everything we run, so the manager reconciles from facts.
		a.flush(ctx, a.status)
	})
}

// heartbeat is acknowledged by the leader's node actor; missed acks move
// the agent to the next manager, and enough of them make it register again
// (the new leader may not know it yet). Tasks are never touched for it: a
// worker that cannot reach the managers keeps running what it runs.
func (a *agent) heartbeat(ctx actor.Context) {
	a.beats++
	if a.beatInflight {
		return
	}
	a.beatInflight = true
	f := ctx.RequestFuture(a.managerPID(), &messages.Heartbeat{NodeId: a.cfg.NodeID, UnixNano: time.Now().UnixNano(), NetworkIndex: a.netIndex}, 2*a.cfg.Heartbeat)
	ctx.ReenterAfter(f, func(res any, err error) {
		a.beatInflight = false
		if r, ok := res.(*messages.RegisterNodeReply); ok && r.Removed {
			a.leave(ctx, r.GetError().GetMessage())
			return
		}
		if _, ok := res.(*messages.Heartbeat); err == nil && ok {
			a.beatFails = 0
			return
		}
		a.beatFails++
		a.mgr++
		if a.beatFails == 3 {
			a.cfg.Log.Warn("managers not answering heartbeats; registering again", zap.Strings("managers", a.managers))
			ctx.Send(ctx.Self(), &registerNow{})
		}
	})
	if a.beats%10 == 0 {
		a.flush(ctx, a.status) // periodic full report heals lost ones
	}
}

// drain asks the leader to confirm no node routes new connections to a
// task any more, then tells the task actor to go on and signal it. Status
// updates still queued go first: the unhealthy report is what takes the
// task out of the endpoints. A node cut off from the managers (heartbeats
// failing) cannot get a confirmation and does not wait for one.
func (a *agent) drain(ctx actor.Context, m *drainRequest) {
	a.flush(ctx, a.pending)
	a.pending = map[string]*messages.TaskStatusUpdate{}
	if !a.registered || a.beatFails > 0 || a.cfg.NetMesh == nil {
		ctx.Send(m.from, &drained{seq: m.seq})
		return
	}
	start := time.Now()
	f := ctx.RequestFuture(a.managerPID(), &messages.DrainTask{NodeId: a.cfg.NodeID, TaskId: m.task}, drainWait)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.DrainTaskReply)
		switch {
		case err != nil:
			a.cfg.Log.Warn("drain not confirmed; stopping the task anyway", zap.String("task", m.task), zap.Error(err))
		case len(r.GetUnconfirmed()) > 0:
			a.cfg.Log.Warn("drain confirmed by some nodes only", zap.String("task", m.task), zap.Strings("unconfirmed", r.Unconfirmed))
		default:
			a.cfg.Log.Debug("task drained", zap.String("task", m.task), zap.Uint64("index", r.GetIndex()), zap.Duration("took", time.Since(start)))
		}
		ctx.Send(m.from, &drained{seq: m.seq})
	})
}

func (a *agent) flush(ctx actor.Context, ups map[string]*messages.TaskStatusUpdate) {
	if len(ups) == 0 || !a.registered {
		return
	}
	rep := &messages.TaskStatusReport{NodeId: a.cfg.NodeID}
	for _, u := range ups {
		rep.Updates = append(rep.Updates, u)
	}
	ctx.Send(a.managerPID(), rep)
}
