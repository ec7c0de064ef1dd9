package manager

import (
	"fmt"
	"github.com/warrenorch/warren/actors/events"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// serviceActor keeps one service converged: the right number of tasks, one
// per slot (or per eligible node for a global service), replacing tasks no
// worker can run. It computes a Plan from replicated state and writes it in
// one go; while a write is in flight it only notes new changes, so it never
// acts on a state that lacks its own last write.
type serviceActor struct {
	cfg      LeaderConfig
	id       string
	sub      *eventstream.Subscription
	inflight bool
	dirty    bool
	retry    scheduler.CancelFunc
	deploy   *actor.PID // the deployment actor, while one is in flight
	stopping bool       // no new child: it would hold the stop up
}

func newService(cfg LeaderConfig, id string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &serviceActor{cfg: cfg, id: id} }, events.WithLifecycle)
}

func (a *serviceActor) relevant(sc *messages.StateChanged) bool {
	for _, c := range sc.Changes {
		switch o := c.Object.(type) {
		case *messages.Change_Service:
			if o.Service.Id == a.id {
				return true
			}
		case *messages.Change_Task:
			if o.Task.ServiceId == a.id {
				return true
			}
		case *messages.Change_Node:
			return true // eligibility of global services, constraints
		}
	}
	return false
}

func (a *serviceActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.sub = subscribeState(ctx, a.relevant)
		a.deployment(ctx, nil)
		a.reconcile(ctx)
	case *actor.Stopping, *actor.Restarting:
		a.stopping = true
		unsubscribe(ctx, a.sub)
		if a.retry != nil {
			a.retry()
		}
	case *actor.Terminated:
		if a.deploy != nil && m.Who.Equal(a.deploy) {
			a.deploy = nil
			a.deployment(ctx, nil) // a new deployment may have started as the old one ended
		}
	case *messages.StateChanged:
		a.deployment(ctx, m)
		a.reconcile(ctx)
	case *reconcileNow:
		a.reconcile(ctx)
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	}
}

// deployment keeps a deployment actor running while the service has a
// deployment in flight, and passes it the changes.
func (a *serviceActor) deployment(ctx actor.Context, sc *messages.StateChanged) {
	if a.deploy != nil {
		if sc != nil {
			ctx.Send(a.deploy, sc)
		}
		return
	}
	if a.stopping {
		return
	}
	if svc := a.cfg.Store.State.Service(a.id); svc != nil && messages.DeploymentActive(svc) {
		pid, err := ctx.SpawnNamed(newDeployment(a.cfg, a.id), "deployment")
		if err != nil {
			a.cfg.Log.Warn("deployment actor", zap.String("service", svc.Spec.GetName()), zap.Error(err))
			return
		}
		a.deploy = pid
	}
}

// eligible returns the nodes a global service starts tasks on: ready,
// active, and meeting its constraints.
func eligible(svc *messages.Service, nodes []*messages.Node) []*messages.Node {
	var out []*messages.Node
	probe := &messages.Task{Spec: svc.Spec}
	for _, n := range nodes {
		ok := true
		for _, f := range filters[:3] { // ready, active, constraints
			if !f.ok(probe, n, &messages.Resources{}) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, n)
		}
	}
	return out
}

func constraintsHold(s *messages.ServiceSpec, n *messages.Node) bool {
	for _, c := range s.GetConstraints() {
		if !constraintHolds(c, n) {
			return false
		}
	}
	return true
}

func (a *serviceActor) reconcile(ctx actor.Context) {
	if a.inflight {
		a.dirty = true
		return
	}
	st := a.cfg.Store.State
	svc := st.Service(a.id)
	if svc == nil {
		ctx.Stop(ctx.Self())
		return
	}
	plan := Reconcile(svc, st.Tasks(store.TaskFilter{ServiceID: a.id}), st.Nodes(), time.Now())
	if plan.RetryAfter > 0 {
		if a.retry != nil {
			a.retry()
		}
		a.retry = scheduler.NewTimerScheduler(ctx).SendOnce(plan.RetryAfter, ctx.Self(), &reconcileNow{})
	}
	var cmds []*messages.Command
	// Stops first, then creates, so a slot never runs two tasks at once.
	if len(plan.Shutdown) > 0 {
		cmds = append(cmds, &messages.Command{Op: &messages.Command_UpdateTasks{UpdateTasks: &messages.UpdateTasks{Tasks: plan.Shutdown}}})
	}
	var place *messages.PlaceTasks
	if len(plan.Create) > 0 {
		place = &messages.PlaceTasks{Tasks: plan.Create}
	}
	if len(plan.Remove) > 0 {
		cmds = append(cmds, &messages.Command{Op: &messages.Command_RemoveTasks{RemoveTasks: &messages.RemoveTasks{TaskIds: plan.Remove}}})
	}
	a.write(ctx, cmds, place)
}

// write proposes cmds in order, then has the scheduler place and create new
// tasks, then reconciles again if changes arrived meanwhile.
func (a *serviceActor) write(ctx actor.Context, cmds []*messages.Command, place *messages.PlaceTasks) {
	var target *actor.PID
	var msg any
	switch {
	case len(cmds) > 0:
		target, msg = storePID(ctx), &messages.Propose{Command: cmds[0]}
	case place != nil:
		target, msg = actor.NewPID(ctx.Self().Address, NameLeader+"/scheduler"), place
	default:
		if a.dirty {
			a.dirty = false
			a.reconcile(ctx)
		}
		return
	}
	a.inflight = true
	f := ctx.RequestFuture(target, msg, proposeTimeout+2*time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		a.inflight = false
		if r, _ := res.(*messages.CommandResult); err != nil || r == nil || r.Error != nil {
			a.cfg.Log.Warn("service write failed; will retry", zap.String("service", a.id), zap.String("error", fmt.Sprint(err, r.GetError())))
			if a.retry != nil {
				a.retry()
			}
			a.retry = scheduler.NewTimerScheduler(ctx).SendOnce(time.Second, ctx.Self(), &reconcileNow{})
			return
		}
		if len(cmds) > 0 {
			a.write(ctx, cmds[1:], place)
		} else {
			a.write(ctx, nil, nil)
		}
	})
}
