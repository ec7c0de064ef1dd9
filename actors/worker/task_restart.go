package worker

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// exitedWith applies the restart policy to an exit.
func (a *taskActor) exitedWith(ctx actor.Context, m *exited) {
	a.serving = false
	state := messages.TaskState_TASK_STATE_FAILED
	if m.code == 0 && m.err == nil {
		state = messages.TaskState_TASK_STATE_COMPLETE
	}
	msg := fmt.Sprintf("exited with code %d", m.code)
	if m.err != nil {
		msg = m.err.Error()
	}
	rp := a.task.Spec.GetRestartPolicy()
	restart := false
	switch rp.GetCondition() {
	case messages.RestartCondition_RESTART_CONDITION_ANY:
		restart = true
	case messages.RestartCondition_RESTART_CONDITION_ON_FAILURE:
		restart = state == messages.TaskState_TASK_STATE_FAILED
	}
	now := time.Now()
	if restart && rp.GetMaxAttempts() > 0 {
		window := time.Duration(rp.GetWindowMs()) * time.Millisecond
		kept := a.failures[:0]
		for _, f := range a.failures {
			if window == 0 || now.Sub(f) < window {
				kept = append(kept, f)
			}
		}
		a.failures = kept
		if uint32(len(a.failures)) >= rp.GetMaxAttempts() {
			restart = false
			msg += fmt.Sprintf("; restart policy gave up after %d attempts", rp.GetMaxAttempts())
		}
	}
	if a.health != messages.HealthState_HEALTH_STATE_NONE && a.health != messages.HealthState_HEALTH_STATE_UNHEALTHY {
		a.health = messages.HealthState_HEALTH_STATE_STARTING // the next process proves itself again
	}
	a.report(ctx, state, msg, func(s *messages.TaskStatus) {
		s.ExitCode = int32(m.code)
		if m.err != nil {
			s.Err = m.err.Error()
		}
	})
	if !restart {
		a.behavior.Become(a.finished)
		return
	}
	a.failures = append(a.failures, now)
	base, maxd := defaultRestartDelay, defaultMaxDelay
	if d := rp.GetDelayMs(); d > 0 {
		base = time.Duration(d) * time.Millisecond
	}
	if d := rp.GetMaxDelayMs(); d > 0 {
		maxd = time.Duration(d) * time.Millisecond
	}
	switch {
	case a.delay == 0 || (!a.startedAt.IsZero() && now.Sub(a.startedAt) > backoffReset):
		a.delay = base
	default:
		a.delay = min(a.delay*2, maxd)
	}
	a.log.Info("container exited; restarting", zap.Uint32("code", m.code), zap.Duration("delay", a.delay))
	a.timer = scheduler.NewTimerScheduler(ctx).SendOnce(a.delay, ctx.Self(), &restartNow{gen: a.gen})
	a.behavior.Become(a.backoff)
}

func (a *taskActor) backoff(ctx actor.Context) {
	if m, ok := ctx.Message().(*restartNow); ok && m.gen == a.gen {
		a.restarts++
		a.behavior.Become(a.starting)
		ctx.Send(ctx.Self(), &startNow{})
	}
}
