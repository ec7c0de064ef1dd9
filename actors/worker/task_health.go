package worker

import (
	"context"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/messages"
)

// running: a container process runs and is watched; health checks run
// every interval. Probes go off the mailbox; signals (one quick call to
// the runtime that waits for nothing) stay in it.
func (a *taskActor) running(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *exited:
		if m.gen == a.gen {
			a.exitedWith(ctx, m)
		}
	case *probeNow:
		if m.gen == a.gen {
			a.probe(ctx)
		}
	case *probed:
		if m.gen == a.gen {
			a.probeResult(ctx, m.err)
		}
	case *killNow:
		if m.gen == a.gen { // still the same process after the grace period
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = a.cfg.Runtime.Kill(c, a.task.Id, syscall.SIGKILL)
			cancel()
		}
	}
}

// probe runs one health check off the mailbox; its result comes back as a
// message (handled by the running state only), so a slow check never
// blocks the actor.
func (a *taskActor) probe(ctx actor.Context) {
	hc, gen, id, ip, rt := a.task.Spec.GetHealthCheck(), a.gen, a.task.Id, a.ip, a.cfg.Runtime
	timeout := healthTimeout(hc)
	blocking.Do(ctx, timeout+time.Second, func() (struct{}, error) {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return struct{}{}, probe(c, hc, rt, id, ip)
	}, func(_ struct{}, err error) {
		ctx.Send(ctx.Self(), &probed{gen: gen, err: err})
	})
}

// probeResult moves the task's health: healthy on a success; unhealthy after
// `retries` failures in a row (failures inside the start period do not
// count), and then the container is stopped so its restart policy acts.
func (a *taskActor) probeResult(ctx actor.Context, err error) {
	hc := a.task.Spec.GetHealthCheck()
	next := healthInterval(hc)
	switch {
	case err == nil:
		a.hcFails = 0
		if a.health != messages.HealthState_HEALTH_STATE_HEALTHY {
			a.health = messages.HealthState_HEALTH_STATE_HEALTHY
			a.report(ctx, messages.TaskState_TASK_STATE_RUNNING, "healthy", func(s *messages.TaskStatus) { s.Pid = a.pid })
		}
	case time.Since(a.startedAt) < time.Duration(hc.GetStartPeriodMs())*time.Millisecond && a.health != messages.HealthState_HEALTH_STATE_HEALTHY:
		next = min(next, time.Second) // still starting: check again soon
	default:
		a.hcFails++
		if a.hcFails < healthRetries(hc) {
			break
		}
		a.health = messages.HealthState_HEALTH_STATE_UNHEALTHY
		a.log.Warn("task unhealthy; stopping it for its restart policy", zap.Error(err))
		a.report(ctx, messages.TaskState_TASK_STATE_RUNNING, "unhealthy: "+err.Error(), func(s *messages.TaskStatus) { s.Pid = a.pid; s.Err = err.Error() })
		gen := a.gen
		a.drainThen(ctx, func(ctx actor.Context) {
			if a.gen != gen {
				return // that process is gone already
			}
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = a.cfg.Runtime.Kill(c, a.task.Id, syscall.SIGTERM)
			cancel()
			grace := 10 * time.Second
			if g := a.task.Spec.GetStopGracePeriodMs(); g > 0 {
				grace = time.Duration(g) * time.Millisecond
			}
			a.timer = scheduler.NewTimerScheduler(ctx).SendOnce(grace, ctx.Self(), &killNow{gen: a.gen})
		})
		return
	}
	a.timer = scheduler.NewTimerScheduler(ctx).SendOnce(next, ctx.Self(), &probeNow{gen: a.gen})
}
