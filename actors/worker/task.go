package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
	"github.com/warrenorch/warren/runtime"
)

// TaskConfig is what a task actor needs from its node.
type TaskConfig struct {
	NodeID       string
	Runtime      runtime.Runtime
	Network      Network
	LogDir       string // <LogDir>/<task id>.log
	CgroupParent string
	// ResolvConf is mounted as the containers' /etc/resolv.conf (the node's
	// DNS) once the file exists.
	ResolvConf string
	Log        *zap.Logger
}

// Restart backoff when the spec sets none: quick first retry, doubling to a
// cap, reset once a container has run for backoffReset.
const (
	defaultRestartDelay = 500 * time.Millisecond
	defaultMaxDelay     = 10 * time.Second
	backoffReset        = 10 * time.Second
	opTimeout           = 2 * time.Minute
)

// Self-messages of the task actor.
type (
	startNow struct{}
	exited   struct {
		gen  int
		code uint32
		at   time.Time
		err  error
	}
	restartNow struct{ gen int }
	probeNow   struct{ gen int }
	probed     struct {
		gen int
		err error
	}
	killNow struct{ gen int }
)

// taskActor owns one task's container. Its behaviour is a state machine:
// starting -> running -> (backoff -> starting)* -> finished, and from any
// state to stopping when the task is no longer wanted. A restart of the
// actor itself (after a panic) re-adopts a still-running container.
type taskActor struct {
	cfg      TaskConfig
	task     *messages.Task
	behavior actor.Behavior
	log      *zap.Logger

	gen        int // bumps each time a new container process is watched
	cancelWait context.CancelFunc
	timer      scheduler.CancelFunc
	startedAt  time.Time
	restarts   uint32
	failures   []time.Time // restart attempts within the policy window
	pid        uint32
	delay      time.Duration
	ip         string
	health     messages.HealthState
	hcFails    int
	// serving: a container process runs (and may be an endpoint).
	// draining: a drain was asked for; afterDrain runs when it answers.
	serving    bool
	draining   bool
	drainSeq   int
	afterDrain func(actor.Context)
}

func newTask(cfg TaskConfig, t *messages.Task) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		a := &taskActor{cfg: cfg, task: t, behavior: actor.NewBehavior(), log: cfg.Log.With(zap.String("task", t.Id), zap.String("service", t.ServiceName))}
		a.behavior.Become(a.starting)
		return a
	}, events.WithLifecycle)
}

func (a *taskActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.Send(ctx.Self(), &startNow{})
		return
	case *actor.Stopping, *actor.Restarting:
		// The container outlives the actor: a node shutting down or an
		// actor restarting must not stop workloads.
		a.stopWatch()
		return
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	case *messages.Task:
		a.task = m
		if m.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			a.drainThen(ctx, func(ctx actor.Context) { a.teardown(ctx, "shut down by the manager") })
		}
		return
	case *drained:
		if f := a.afterDrain; a.draining && m.seq == a.drainSeq && f != nil {
			a.draining, a.afterDrain = false, nil
			f(ctx)
		}
		return
	case *removeTask:
		a.teardown(ctx, "no longer assigned to this node")
		return
	}
	a.behavior.Receive(ctx)
}

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

func (a *taskActor) report(ctx actor.Context, state messages.TaskState, msg string, mut func(*messages.TaskStatus)) {
	st := &messages.TaskStatus{State: state, Message: msg, TimestampUnixNano: time.Now().UnixNano(),
		ContainerId: a.task.Id, Ip: a.ip, RestartCount: a.restarts, Health: a.health}
	if mut != nil {
		mut(st)
	}
	ctx.Send(ctx.Parent(), &messages.TaskStatusUpdate{TaskId: a.task.Id, Epoch: a.task.Epoch, Status: st})
}

func (a *taskActor) starting(ctx actor.Context) {
	if _, ok := ctx.Message().(*startNow); !ok {
		return
	}
	if a.task.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
		a.teardown(ctx, "shut down by the manager")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	id := a.task.Id
	// The network sandbox and the container are independent until start
	// (runc joins the namespace then): build them side by side.
	type attached struct {
		sb  *netmesh.Sandbox
		err error
	}
	net := make(chan attached, 1)
	go func() {
		sb, err := a.cfg.Network.Attach(c, id)
		net <- attached{sb, err}
	}()
	// A task the manager has never heard progress from has no container
	// yet: create it straight away (Create itself refuses a taken ID).
	// Anything else may have a container to adopt or restart: look first.
	var st runtime.Status
	var createErr, statusErr error
	fresh := a.restarts == 0 && a.task.GetStatus().GetState() <= messages.TaskState_TASK_STATE_ASSIGNED
	if fresh {
		a.report(ctx, messages.TaskState_TASK_STATE_PREPARING, "preparing image and network", nil)
		createErr = a.cfg.Runtime.Create(c, a.containerSpec(a.cfg.Network.NetNSPath(id)))
		if errors.Is(createErr, runtime.ErrAlreadyExists) {
			fresh, createErr = false, nil
		}
	}
	if !fresh {
		var err error
		if st, err = a.cfg.Runtime.Status(c, id); err != nil {
			statusErr = fmt.Errorf("container status: %w", err)
		} else if !st.Exists {
			a.report(ctx, messages.TaskState_TASK_STATE_PREPARING, "preparing image and network", nil)
			createErr = a.cfg.Runtime.Create(c, a.containerSpec(a.cfg.Network.NetNSPath(id)))
		}
	}
	r := <-net
	if r.err != nil {
		a.fail(ctx, messages.TaskState_TASK_STATE_REJECTED, fmt.Errorf("network: %w", r.err))
		return
	}
	a.ip = r.sb.IP.String()
	if statusErr != nil {
		a.fail(ctx, messages.TaskState_TASK_STATE_FAILED, statusErr)
		return
	}
	if createErr != nil {
		a.fail(ctx, messages.TaskState_TASK_STATE_REJECTED, createErr)
		return
	}
	if st.Running {
		// Adopt: the container survived a warren restart or an actor crash.
		a.log.Info("adopted running container", zap.Uint32("pid", st.Pid))
		a.watch(ctx, st.Pid)
		return
	}
	a.report(ctx, messages.TaskState_TASK_STATE_STARTING, "starting", nil)
	pid, err := a.cfg.Runtime.Start(c, id)
	if err != nil {
		a.log.Warn("start failed", zap.Error(err))
		a.exitedWith(ctx, &exited{gen: a.gen, code: 128, at: time.Now(), err: err})
		return
	}
	a.watch(ctx, pid)
}

func (a *taskActor) containerSpec(netns string) runtime.ContainerSpec {
	s := a.task.Spec
	env := []string{
		"WARREN_TASK_ID=" + a.task.Id, "WARREN_SERVICE=" + a.task.ServiceName,
		fmt.Sprintf("WARREN_TASK_SLOT=%d", a.task.Slot), "WARREN_NODE_ID=" + a.cfg.NodeID,
	}
	keys := make([]string, 0, len(s.GetEnv()))
	for k := range s.GetEnv() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+s.Env[k])
	}
	host := s.GetHostname()
	if host == "" {
		host = a.task.Id[:12]
	}
	return runtime.ContainerSpec{
		ID: a.task.Id, Image: s.GetImage(), Command: s.GetCommand(), Args: s.GetArgs(), Env: env,
		WorkDir: s.GetWorkdir(), User: s.GetUser(), Hostname: host,
		Labels: map[string]string{
			"warren.task": a.task.Id, "warren.service": a.task.ServiceName, "warren.node": a.cfg.NodeID,
		},
		MemoryLimitBytes: s.GetResources().GetLimits().GetMemoryBytes(),
		CPUMillis:        s.GetResources().GetLimits().GetNanoCpus() / 1e6,
		NetNSPath:        netns,
		LogPath:          a.logPath(),
		CgroupParent:     a.cfg.CgroupParent,
		ResolvConfPath:   existing(a.cfg.ResolvConf),
		Isolation: runtime.Isolation{
			CapAdd: messages.CanonicalCapabilities(s.GetCapAdd()), CapDrop: messages.CanonicalCapabilities(s.GetCapDrop()),
			PidsLimit: s.GetPidsLimit(), SeccompUnconfined: s.GetSeccomp() == messages.SeccompUnconfined,
		},
	}
}

func (a *taskActor) logPath() string { return filepath.Join(a.cfg.LogDir, a.task.Id+".log") }

// watch waits for the container's exit on a goroutine that only forwards the
// exit to the mailbox: the actor's state is touched on the actor only.
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
// message, so a slow check never blocks the actor.
func (a *taskActor) probe(ctx actor.Context) {
	hc, gen, id, ip := a.task.Spec.GetHealthCheck(), a.gen, a.task.Id, a.ip
	self, root, rt := ctx.Self(), ctx.ActorSystem().Root, a.cfg.Runtime
	go func() {
		c, cancel := context.WithTimeout(context.Background(), healthTimeout(hc))
		defer cancel()
		root.Send(self, &probed{gen: gen, err: probe(c, hc, rt, id, ip)})
	}()
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

// finished: the container stopped for good by its restart policy; the task
// waits for the manager to shut it down.
func (a *taskActor) finished(actor.Context) {}

// fail reports a task that could not start at all.
func (a *taskActor) fail(ctx actor.Context, state messages.TaskState, err error) {
	a.log.Warn("task failed", zap.Error(err))
	a.report(ctx, state, err.Error(), func(s *messages.TaskStatus) { s.Err = err.Error() })
	a.behavior.Become(a.finished)
}

// teardown stops the container (SIGTERM, grace, SIGKILL), deletes it with
// its snapshot, releases the network sandbox and log file, reports SHUTDOWN
// and stops the actor.
func (a *taskActor) teardown(ctx actor.Context, why string) {
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
	if err := os.Remove(a.logPath()); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		// Report and stay: the agent's next assignment retries the cleanup.
		a.log.Warn("teardown incomplete", zap.Errors("errors", errs))
		a.report(ctx, messages.TaskState_TASK_STATE_FAILED, fmt.Sprintf("teardown incomplete: %v", errs), nil)
		return
	}
	a.report(ctx, messages.TaskState_TASK_STATE_SHUTDOWN, why, nil)
	ctx.Stop(ctx.Self())
}

func existing(path string) string {
	if path == "" {
		return ""
	}
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}
