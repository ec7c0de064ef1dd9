package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
)

// removeTask tells a task actor its task left the node's assignment set.
type removeTask struct{}

// drainRequest asks the agent to have the task's endpoint removed on every
// node; drained is its answer (confirmed or not, the task goes on).
type (
	drainRequest struct {
		task string
		seq  int
		from *actor.PID
	}
	drained struct{ seq int }
)

// drainGiveUp bounds a drain on the task's side: should the agent never
// answer (it restarted meanwhile), the stop goes on anyway.
const drainGiveUp = 10 * time.Second

// drainThen runs then once no node routes new connections to the task
// any more (confirmed through the agent and the leader, or given up on),
// so that SIGTERM never meets traffic still being sent. A task whose
// container is not running serves nothing: then runs at once. A later
// call while draining replaces then (a stop outranks a restart).
func (a *taskActor) drainThen(ctx actor.Context, then func(actor.Context)) {
	if !a.serving {
		then(ctx)
		return
	}
	a.afterDrain = then
	if !a.draining {
		a.draining = true
		a.drainSeq++
		ctx.Send(ctx.Parent(), &drainRequest{task: a.task.Id, seq: a.drainSeq, from: ctx.Self()})
		scheduler.NewTimerScheduler(ctx).SendOnce(drainGiveUp, ctx.Self(), &drained{seq: a.drainSeq})
	}
}

// teardown stops the container (SIGTERM, grace, SIGKILL), deletes it with
// its snapshot, releases the network sandbox and log file, reports SHUTDOWN
// and stops the actor.
//
// It runs in the mailbox, grace period included: it is the actor's last
// act, and nothing that can arrive meanwhile needs it: the task actor
// answers no queries, and a repeated removal or shutdown, a drain answer
// or a probe result are moot once the container is going (the agent waits
// for the actor's end, not for an answer). A start step under way is
// waited for off the mailbox instead: it is cancelled and the teardown
// runs when it returns.
func (a *taskActor) teardown(ctx actor.Context, why string) {
	if a.step != nil {
		a.teardownAfterStep = why
		a.step() // cancel the pull or start; endStep tears down
		return
	}
	a.stopWatch()
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	grace := 10 * time.Second
	if g := a.task.Spec.GetStopGracePeriodMs(); g > 0 {
		grace = time.Duration(g) * time.Millisecond
	}
	var errs []error
	if err := a.cfg.Runtime.Stop(c, a.task.Id, grace); err != nil {
		errs = append(errs, err)
	}
	if err := a.cfg.Runtime.Delete(c, a.task.Id); err != nil {
		errs = append(errs, err)
	}
	if err := a.cfg.Network.Detach(c, a.task.Id); err != nil {
		errs = append(errs, err)
	}
	// The task's log stays for `warren task logs`: worker/logs sweeps it
	// (logs.go).
	if len(errs) > 0 {
		// Report and stay: the agent's next assignment retries the cleanup.
		a.log.Warn("teardown incomplete", zap.Errors("errors", errs))
		a.report(ctx, messages.TaskState_TASK_STATE_FAILED, fmt.Sprintf("teardown incomplete: %v", errs), nil)
		return
	}
	a.report(ctx, messages.TaskState_TASK_STATE_SHUTDOWN, why, nil)
	ctx.Stop(ctx.Self())
}
