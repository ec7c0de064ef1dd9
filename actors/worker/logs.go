package worker

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// NameLogs is the worker's log reader; managers ask it (ReadNodeLogs).
const NameLogs = "worker/logs"

// Retention of the logs of tasks that no longer have a container here
// (exited and removed, or replaced): kept for LogRetention after their
// last line, and only the LogRetainTasks most recent of them.
const (
	DefaultLogRetention   = 24 * time.Hour
	DefaultLogRetainTasks = 100
	logSweepEvery         = time.Minute
)

// LogsConfig configures the log reader.
type LogsConfig struct {
	NodeID string
	Dir    string // the node's task log directory (TaskConfig.LogDir)
	// Runtime tells which tasks still have a container (their logs are
	// never swept).
	Runtime     containerLister
	Retention   time.Duration
	RetainTasks int
	Log         *zap.Logger
}

type logSweep struct{}

// containerLister is what the sweep needs of the runtime.
type containerLister interface {
	List(ctx context.Context) ([]runtime.Status, error)
}

// logsActor answers reads of this node's task logs, each off the mailbox
// (a follow request waits for lines), and sweeps the logs of ended tasks.
type logsActor struct {
	cfg    LogsConfig
	cancel scheduler.CancelFunc
}

// NewLogs returns the props of the log reader.
func NewLogs(cfg LogsConfig) *actor.Props {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultLogRetention
	}
	if cfg.RetainTasks <= 0 {
		cfg.RetainTasks = DefaultLogRetainTasks
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return actor.PropsFromProducer(func() actor.Actor { return &logsActor{cfg: cfg} }, events.WithLifecycle)
}

func (a *logsActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.cancel = scheduler.NewTimerScheduler(ctx).SendRepeatedly(logSweepEvery, logSweepEvery, ctx.Self(), &logSweep{})
	case *actor.Stopping:
		if a.cancel != nil {
			a.cancel()
		}
	case *messages.ReadNodeLogs:
		dir, node := a.cfg.Dir, a.cfg.NodeID
		wait := time.Duration(min(m.WaitMs, 30_000)) * time.Millisecond
		blocking.Do(ctx, wait+10*time.Second, func() (*messages.ReadNodeLogsReply, error) {
			return readNodeLogs(dir, node, m), nil
		}, func(r *messages.ReadNodeLogsReply, err error) {
			if err != nil {
				r = &messages.ReadNodeLogsReply{Error: err.Error()}
			}
			ctx.Respond(r)
		})
	case *logSweep:
		cfg := a.cfg
		blocking.Do(ctx, logSweepEvery, func() (int, error) { return sweepLogs(cfg, time.Now()) }, func(n int, err error) {
			if err != nil {
				a.cfg.Log.Warn("could not sweep the logs of ended tasks", zap.Error(err))
			} else if n > 0 {
				a.cfg.Log.Info("removed the logs of ended tasks", zap.Int("tasks", n))
			}
		})
	}
}

// sweepLogs removes the logs of ended tasks beyond the retention; it
// returns how many tasks' logs it removed.
func sweepLogs(cfg LogsConfig, now time.Time) (int, error) {
	live := map[string]bool{}
	if cfg.Runtime != nil {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sts, err := cfg.Runtime.List(c)
		if err != nil {
			return 0, err // without the live tasks, sweep nothing
		}
		for _, s := range sts {
			live[s.ID] = true
		}
	}
	type ended struct {
		files []string
		last  time.Time
	}
	byTask := map[string]*ended{}
	svcs, _ := os.ReadDir(cfg.Dir)
	for _, s := range svcs {
		if !s.IsDir() {
			// A log of the single-file layout before rotation.
			if id, ok := strings.CutSuffix(s.Name(), ".log"); ok && !live[id] {
				os.Remove(filepath.Join(cfg.Dir, s.Name()))
			}
			continue
		}
		sd := filepath.Join(cfg.Dir, s.Name())
		ents, _ := os.ReadDir(sd)
		if len(ents) == 0 {
			os.Remove(sd)
		}
		for _, e := range ents {
			i := strings.Index(e.Name(), ".log.")
			if i <= 0 || live[e.Name()[:i]] {
				continue
			}
			id := e.Name()[:i]
			t := byTask[id]
			if t == nil {
				t = &ended{}
				byTask[id] = t
			}
			t.files = append(t.files, filepath.Join(sd, e.Name()))
			if info, err := e.Info(); err == nil && info.ModTime().After(t.last) {
				t.last = info.ModTime()
			}
		}
	}
	list := make([]*ended, 0, len(byTask))
	for _, t := range byTask {
		list = append(list, t)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].last.After(list[j].last) })
	removed := 0
	for i, t := range list {
		if i < cfg.RetainTasks && now.Sub(t.last) < cfg.Retention {
			continue
		}
		for _, f := range t.files {
			os.Remove(f)
		}
		removed++
	}
	return removed, nil
}
