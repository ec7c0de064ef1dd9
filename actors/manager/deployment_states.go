package manager

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// The deployment actor's behaviours, one per state. Each decides on
// *evaluate from a fresh view and answers the controls its state allows;
// the controls every active state shares (pause, rollback) are in
// control.

// decide runs a behaviour's decision on an evaluate, with a fresh view;
// anything else is a control request.
func (a *deploymentActor) decide(ctx actor.Context, fn func(v *deployView)) {
	if _, ok := ctx.Message().(*evaluate); !ok {
		a.control(ctx)
		return
	}
	fn(a.view())
}

// startingBatch (also a canary's promoting): after the update delay, move
// the next batch of slots to the new spec; with none left, done.
func (a *deploymentActor) startingBatch(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if delay := time.Duration(v.cfg().GetDelayMs()) * time.Millisecond; len(v.d.Updated) > 0 && delay > 0 && v.now.Before(v.since().Add(delay)) {
			a.wakeAt(ctx, v.since().Add(delay))
			return
		}
		batch := v.nextBatch()
		if len(batch) == 0 {
			a.done(ctx, v)
			return
		}
		n := next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH)
		n.Updated = append(n.Updated, batch...)
		n.Batch = batch
		a.commit(ctx, v, n, false, nil)
	})
}

// awaitingHealth: the batch counts once each of its slots runs a ready
// task of the new spec (its health check passes); then the next batch.
// The monitor window is each new task's, as in Swarm: failures are
// watched in every state until done, so the next batch does not wait out
// the window of the last one; only the final batch's window is waited
// for, in monitoring.
func (a *deploymentActor) awaitingHealth(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if a.failed(ctx, v) || !v.settled(v.d.Batch) {
			return
		}
		to := messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH
		if len(v.nextBatch()) == 0 {
			to = messages.DeploymentState_DEPLOYMENT_STATE_MONITORING
		}
		a.commit(ctx, v, next(v.d, to), false, nil)
	})
}

// monitoring: every slot runs the new spec; the last batch must stay well
// for the monitor window before the deployment is done.
func (a *deploymentActor) monitoring(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if a.failed(ctx, v) {
			return
		}
		if end := v.since().Add(v.monitor()); v.now.Before(end) {
			a.wakeAt(ctx, end)
			return
		}
		if len(v.nextBatch()) > 0 { // slots added meanwhile (a scale): roll them too
			a.commit(ctx, v, next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH), false, nil)
			return
		}
		a.done(ctx, v)
	})
}

// deployingGreen: green runs beside blue, which keeps all traffic; once
// every green task is ready, switch (or wait for `promote`).
func (a *deploymentActor) deployingGreen(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if a.failed(ctx, v) || !v.greenReady() {
			return
		}
		to := messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED
		if v.cfg().GetSwitchManual() {
			to = messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION
		}
		a.commit(ctx, v, next(v.d, to), false, nil)
	})
}

// awaitingPromotion: green is ready; `promote` switches.
func (a *deploymentActor) awaitingPromotion(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *evaluate:
		a.failed(ctx, a.view())
	case *messages.PromoteServiceRequest:
		if !m.Full {
			ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "a blue/green deployment switches all traffic at once: run `warren service promote %s` without --weight", m.Name)})
			return
		}
		v := a.view()
		a.commit(ctx, v, next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED), false, ctx.Sender())
	default:
		a.control(ctx)
	}
}

// switched: the switch is committed; it is done when every ready node has
// confirmed programming it (or the leader gave up waiting on a node).
func (a *deploymentActor) switched(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if a.failed(ctx, v) || a.confirm == v.d.Index {
			return
		}
		a.confirm = v.d.Index
		f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameLeader), &netConfirm{index: v.d.Index}, drainTimeout+2*time.Second)
		ctx.ReenterAfter(f, func(res any, err error) {
			v := a.view()
			if v.svc == nil || v.d == nil || v.d.Index != a.confirm || v.d.State != messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED {
				return // moved on meanwhile (a rollback)
			}
			n := next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_GRACE)
			if r, _ := res.(*messages.DrainTaskReply); err != nil || r == nil || len(r.Unconfirmed) > 0 {
				n.Message = fmt.Sprintf("switched; not confirmed by every node in %v: %v", drainTimeout, r.GetUnconfirmed())
			}
			a.commit(ctx, v, n, false, nil)
		})
	})
}

// grace: blue stays, idle, so a rollback is an instant switch back.
func (a *deploymentActor) grace(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if a.failed(ctx, v) {
			return
		}
		if end := v.since().Add(v.grace()); v.now.Before(end) {
			a.wakeAt(ctx, end)
			return
		}
		a.commit(ctx, v, next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_CLEANING_BLUE), false, nil)
	})
}

// cleaningBlue: the service actor stops blue; done when it is gone.
func (a *deploymentActor) cleaningBlue(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if v.oldGone() {
			a.done(ctx, v)
		}
	})
}

// deployingCanary: the canaries start; once ready they get their share.
func (a *deploymentActor) deployingCanary(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if a.failed(ctx, v) || !v.canariesReady() {
			return
		}
		a.commit(ctx, v, next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED), false, nil)
	})
}

// weighted: the canaries take their share of requests until `promote`
// steps it, or rolls the stable replicas (full), or they fail.
func (a *deploymentActor) weighted(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *evaluate:
		a.failed(ctx, a.view())
	case *messages.PromoteServiceRequest:
		v := a.view()
		n := next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED)
		if m.Full {
			n.State = messages.DeploymentState_DEPLOYMENT_STATE_PROMOTING
		} else {
			n.Weight = m.Weight
		}
		a.commit(ctx, v, n, false, ctx.Sender())
	default:
		a.control(ctx)
	}
}

// paused holds the tasks where the paused state had them.
func (a *deploymentActor) paused(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *evaluate:
	case *messages.ResumeServiceRequest:
		v := a.view()
		n := next(v.d, v.d.PausedFrom)
		n.PausedFrom, n.Message = messages.DeploymentState_DEPLOYMENT_STATE_NONE, ""
		n.FailedTasks = nil // resumed: count failures afresh
		a.commit(ctx, v, n, false, ctx.Sender())
	default:
		a.control(ctx)
	}
}

// rollingBack: every slot returns to the previous spec (blue/green and
// canary: traffic went back at once, with the transition); then the
// previous spec becomes the spec again.
func (a *deploymentActor) rollingBack(ctx actor.Context) {
	a.decide(ctx, func(v *deployView) {
		if v.rolledBack() {
			a.commit(ctx, v, next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK), true, nil)
		}
	})
}

func (a *deploymentActor) done(ctx actor.Context, v *deployView) {
	n := next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_DONE)
	n.Batch = nil
	a.commit(ctx, v, n, false, nil)
}

// failed applies the failure action once more new tasks failed than the
// ratio allows, and records new failures below it; it reports whether it
// committed something (the behaviour then waits for that).
func (a *deploymentActor) failed(ctx actor.Context, v *deployView) bool {
	ids, why := v.failures()
	if len(ids) == len(v.d.FailedTasks) {
		return false
	}
	n := next(v.d, v.d.State)
	n.FailedTasks = ids
	if v.tooManyFailed(len(ids)) {
		msg := fmt.Sprintf("%d of %d new tasks failed (last: %s), more than the max failure ratio %g allows", len(ids), max(v.d.Total, 1), why, v.cfg().GetMaxFailureRatio())
		switch v.cfg().GetFailureAction() {
		case messages.FailureAction_FAILURE_ACTION_PAUSE:
			n.State, n.PausedFrom = messages.DeploymentState_DEPLOYMENT_STATE_PAUSED, v.d.State
			n.Message = "paused: " + msg + "; `warren service resume` continues, `warren service rollback` goes back"
		case messages.FailureAction_FAILURE_ACTION_CONTINUE:
			n.Message = msg + " (failure action continue)"
		default:
			n.State = messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK
			n.Message = "rolling back: " + msg
		}
		a.cfg.Log.Warn("deployment failure", zap.String("service", v.svc.Spec.GetName()), zap.String("why", msg))
	}
	a.commit(ctx, v, n, false, nil)
	return true
}

// control answers the requests every active state handles alike: pause
// and rollback anywhere, resume and promote where their state says not.
func (a *deploymentActor) control(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *messages.RollbackServiceRequest, *messages.PauseServiceRequest, *messages.ResumeServiceRequest, *messages.PromoteServiceRequest:
	default:
		return
	}
	v := a.view()
	if v.svc == nil || v.d == nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "the service or its deployment is gone")})
		return
	}
	name, state := v.svc.Spec.GetName(), stateName(v.d.State)
	refuse := func(format string, args ...any) {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, format, args...)})
	}
	switch ctx.Message().(type) {
	case *messages.RollbackServiceRequest:
		if v.d.State == messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK {
			refuse("service %s is already rolling back", name)
			return
		}
		n := next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK)
		n.PausedFrom, n.Message = messages.DeploymentState_DEPLOYMENT_STATE_NONE, "rolling back: asked by `warren service rollback`"
		a.commit(ctx, v, n, false, ctx.Sender())
	case *messages.PauseServiceRequest:
		switch v.d.State {
		case messages.DeploymentState_DEPLOYMENT_STATE_PAUSED:
			refuse("the deployment of service %s is already paused: `warren service resume %s` continues it", name, name)
			return
		case messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK:
			refuse("service %s is rolling back; a rollback is not paused", name)
			return
		}
		n := next(v.d, messages.DeploymentState_DEPLOYMENT_STATE_PAUSED)
		n.PausedFrom, n.Message = v.d.State, "paused by `warren service pause`: `warren service resume "+name+"` continues"
		a.commit(ctx, v, n, false, ctx.Sender())
	case *messages.ResumeServiceRequest:
		refuse("the deployment of service %s is not paused (it is %s)", name, state)
	case *messages.PromoteServiceRequest:
		switch v.d.Strategy {
		case messages.DeployStrategy_DEPLOY_STRATEGY_ROLLING:
			refuse("service %s has a rolling deployment (%s): promote applies to a canary, or to a blue/green with --switch-after manual", name, state)
		case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
			refuse("the blue/green deployment of service %s is %s: promote switches traffic only once every green task is healthy and --switch-after is manual", name, state)
		default:
			refuse("the canary deployment of service %s is %s: promote applies once the canaries are healthy (state weighted)", name, state)
		}
	}
}
