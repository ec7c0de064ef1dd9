package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
	"github.com/warrenorch/warren/runtime"
)

// Starting a task runs off the mailbox in two steps through blocking.Do:
// prepare (the network sandbox beside the container's create, which may
// pull an image for minutes) and start. Meanwhile the task actor keeps
// taking messages, so a removal or a shutdown is not stuck behind a pull:
// it cancels the step under way and the teardown runs as soon as that step
// returns (never beside it, which could leave a container created after
// its delete).

// stepSlack lets a step's own opTimeout context fire before blocking.Do
// gives up on it, so the error says which call timed out.
const stepSlack = 10 * time.Second

// prepared is what the prepare step found or made.
type prepared struct {
	sb      *netmesh.Sandbox
	netErr  error
	st      runtime.Status // the existing container, when one was looked at
	created bool           // Create made the container in this step
	// statusErr: the existing container could not be inspected;
	// createErr: it could not be created.
	statusErr, createErr error
}

func (a *taskActor) starting(ctx actor.Context) {
	if _, ok := ctx.Message().(*startNow); !ok {
		return
	}
	if a.task.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
		a.teardown(ctx, "shut down by the manager")
		return
	}
	a.prepare(ctx)
}

// prepare attaches the network sandbox and makes sure the container exists.
// A task the manager has never heard progress from has no container yet:
// it is created straight away (Create itself refuses a taken ID). Anything
// else may have a container to adopt or restart: it is looked at first.
func (a *taskActor) prepare(ctx actor.Context) {
	id, rt, nw := a.task.Id, a.cfg.Runtime, a.cfg.Network
	spec := a.containerSpec(nw.NetNSPath(id))
	fresh := a.restarts == 0 && a.task.GetStatus().GetState() <= messages.TaskState_TASK_STATE_ASSIGNED
	if fresh {
		a.report(ctx, messages.TaskState_TASK_STATE_PREPARING, "preparing image and network", nil)
	}
	c := a.beginStep()
	blocking.Do(ctx, opTimeout+stepSlack, func() (prepared, error) {
		var p prepared
		// The sandbox and the container are independent until start (runc
		// joins the namespace then): build them side by side.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.sb, p.netErr = nw.Attach(c, id)
		}()
		look := !fresh
		if fresh {
			p.createErr = rt.Create(c, spec)
			p.created = p.createErr == nil
			if errors.Is(p.createErr, runtime.ErrAlreadyExists) {
				look, p.createErr = true, nil
			}
		}
		if look {
			var err error
			if p.st, err = rt.Status(c, id); err != nil {
				p.statusErr = fmt.Errorf("container status: %w", err)
			} else if !p.st.Exists {
				p.createErr = rt.Create(c, spec)
				p.created = p.createErr == nil
			}
		}
		wg.Wait()
		return p, nil
	}, func(p prepared, err error) {
		if !a.endStep(ctx) {
			return
		}
		if err == nil {
			err = p.netErr
		}
		if err != nil {
			a.fail(ctx, messages.TaskState_TASK_STATE_REJECTED, fmt.Errorf("network: %w", err))
			return
		}
		a.ip = p.sb.IP.String()
		if p.statusErr != nil {
			a.fail(ctx, messages.TaskState_TASK_STATE_FAILED, p.statusErr)
			return
		}
		if p.createErr != nil {
			a.fail(ctx, messages.TaskState_TASK_STATE_REJECTED, p.createErr)
			return
		}
		if p.st.Running {
			// Adopt: the container survived a warren restart or an actor crash.
			a.log.Info("adopted running container", zap.Uint32("pid", p.st.Pid))
			a.watch(ctx, p.st.Pid)
			return
		}
		if p.created && !fresh {
			// The container of a restart was gone: say so before starting.
			a.report(ctx, messages.TaskState_TASK_STATE_PREPARING, "preparing image and network", nil)
		}
		a.start(ctx)
	})
}

// start starts the container's process; a failure counts as an exit for
// the restart policy.
func (a *taskActor) start(ctx actor.Context) {
	a.report(ctx, messages.TaskState_TASK_STATE_STARTING, "starting", nil)
	id, rt := a.task.Id, a.cfg.Runtime
	c := a.beginStep()
	blocking.Do(ctx, opTimeout+stepSlack, func() (uint32, error) {
		return rt.Start(c, id)
	}, func(pid uint32, err error) {
		if !a.endStep(ctx) {
			return
		}
		if err != nil {
			a.log.Warn("start failed", zap.Error(err))
			a.exitedWith(ctx, &exited{gen: a.gen, code: 128, at: time.Now(), err: err})
			return
		}
		a.watch(ctx, pid)
	})
}

// beginStep returns the context a start step runs under; cancelStep (a
// teardown, the actor stopping) cancels it.
func (a *taskActor) beginStep() context.Context {
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	a.step = cancel
	return c
}

// endStep is called first thing when a step's result arrives: false means
// drop it (the actor stopped or restarted meanwhile, or a teardown was
// waiting for the step and now runs).
func (a *taskActor) endStep(ctx actor.Context) bool {
	if a.step == nil {
		return false // halted: this result belongs to an actor that is gone
	}
	a.step()
	a.step = nil
	if why := a.teardownAfterStep; why != "" {
		a.teardownAfterStep = ""
		a.teardown(ctx, why)
		return false
	}
	return true
}

// watch waits for the container's exit on a goroutine that only forwards the
// exit to the mailbox: the actor's state is touched on the actor only. It
// is a subscription that lasts as long as the process, not a bounded piece
// of work, so it does not go through blocking.Do (whose timeout would end
// it).
func (a *taskActor) watch(ctx actor.Context, pid uint32) {
	a.stopWatch()
	a.gen++
	gen := a.gen
	c, cancel := context.WithCancel(context.Background())
	a.cancelWait = cancel
	// Waiting is set up off the mailbox, after the report below: a task
	// that already exited still has its exit status kept by the shim, so
	// nothing is missed, and "running" is not held up by round trips.
	self, root, rt, id := ctx.Self(), ctx.ActorSystem().Root, a.cfg.Runtime, a.task.Id
	go func() {
		ch, err := rt.Wait(c, id)
		if err != nil {
			if c.Err() == nil {
				root.Send(self, &exited{gen: gen, code: 128, at: time.Now(), err: fmt.Errorf("wait: %w", err)})
			}
			return
		}
		select {
		case es, ok := <-ch:
			if ok {
				root.Send(self, &exited{gen: gen, code: es.Code, at: es.ExitedAt, err: es.Err})
			}
		case <-c.Done():
		}
	}()
	a.startedAt = time.Now()
	a.pid, a.serving = pid, true
	if hc := a.task.Spec.GetHealthCheck(); hc.GetKind() != messages.HealthCheck_KIND_NONE {
		a.health, a.hcFails = messages.HealthState_HEALTH_STATE_STARTING, 0
		a.timer = scheduler.NewTimerScheduler(ctx).SendOnce(min(healthInterval(hc), time.Second), ctx.Self(), &probeNow{gen: gen})
	}
	a.report(ctx, messages.TaskState_TASK_STATE_RUNNING, "running", func(s *messages.TaskStatus) { s.Pid = pid })
	a.behavior.Become(a.running)
}

func (a *taskActor) stopWatch() {
	if a.cancelWait != nil {
		a.cancelWait()
		a.cancelWait = nil
	}
	if a.timer != nil {
		a.timer()
		a.timer = nil
	}
}

// halt is the actor's end (stop or restart): the container outlives the
// actor, so nothing is stopped; the step under way is cancelled and its
// result will be dropped.
func (a *taskActor) halt() {
	a.stopWatch()
	if a.step != nil {
		a.step()
		a.step = nil
	}
}
