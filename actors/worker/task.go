package worker

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// TaskConfig is what a task actor needs from its node.
type TaskConfig struct {
	NodeID       string
	Runtime      runtime.Runtime
	Network      Network
	LogDir       string // <LogDir>/<service id>/<task id>.log.<gen> (logs_read.go)
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
	// step cancels the start step under way (nil when none);
	// teardownAfterStep is why to tear down once it returns.
	step              context.CancelFunc
	teardownAfterStep string
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
		a.halt()
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

func (a *taskActor) report(ctx actor.Context, state messages.TaskState, msg string, mut func(*messages.TaskStatus)) {
	st := &messages.TaskStatus{State: state, Message: msg, TimestampUnixNano: time.Now().UnixNano(),
		ContainerId: a.task.Id, Ip: a.ip, RestartCount: a.restarts, Health: a.health}
	if mut != nil {
		mut(st)
	}
	noteRestarts(a.task.Id, a.restarts) // for warren_task_restarts_total (metrics.go)
	ctx.Send(ctx.Parent(), &messages.TaskStatusUpdate{TaskId: a.task.Id, Epoch: a.task.Epoch, Status: st})
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

func (a *taskActor) logPath() string {
	return TaskLogPath(a.cfg.LogDir, a.task.ServiceId, a.task.Id)
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

func existing(path string) string {
	if path == "" {
		return ""
	}
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}
