package worker

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// NameDf answers a manager's NodeDfRequest with this node's disk use
// (`warren system df`).
const NameDf = "worker/df"

// DiskUser is what df needs of the runtime.
type DiskUser interface {
	DiskUsage(ctx context.Context) (runtime.DiskUsage, error)
}

// DfConfig configures the df actor.
type DfConfig struct {
	NodeID   string
	Hostname string
	DataDir  string
	Runtime  DiskUser
	Log      *zap.Logger
}

// dfTimeout bounds one count: a data dir of many files or a containerd
// slow to answer must not leave the manager waiting past its own wait.
const dfTimeout = 20 * time.Second

type dfActor struct{ cfg DfConfig }

// NewDf returns the props of the df actor.
func NewDf(cfg DfConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &dfActor{cfg: cfg} }, events.WithLifecycle)
}

func (a *dfActor) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*messages.NodeDfRequest); !ok {
		return
	}
	// Walking directories and asking containerd may take seconds: off the
	// mailbox, answered in the request's context.
	blocking.Do(ctx, dfTimeout, func() (*messages.NodeDiskUsage, error) { return a.usage(), nil },
		func(u *messages.NodeDiskUsage, err error) {
			if err != nil {
				u = &messages.NodeDiskUsage{NodeId: a.cfg.NodeID, Hostname: a.cfg.Hostname, Error: err.Error()}
			}
			ctx.Respond(u)
		})
}

// usage counts the node's disk use; a part that cannot be counted is named
// in Error while the others are still given.
func (a *dfActor) usage() *messages.NodeDiskUsage {
	u := &messages.NodeDiskUsage{NodeId: a.cfg.NodeID, Hostname: a.cfg.Hostname, DataDir: a.cfg.DataDir}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), dfTimeout)
	defer cancel()
	if a.cfg.Runtime != nil {
		du, err := a.cfg.Runtime.DiskUsage(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		u.ImagesBytes, u.Images, u.ContainersBytes, u.Containers = du.ImagesBytes, uint32(du.Images), du.ContainersBytes, uint32(du.Containers)
	}
	size := func(rel string) int64 {
		n, err := runtime.DirSize(filepath.Join(a.cfg.DataDir, rel))
		if err != nil {
			errs = append(errs, err)
		}
		return n
	}
	u.LogsBytes = size("logs")
	u.RaftBytes = size("raft")
	u.EventsBytes = size("events.db")
	u.DataDirBytes = size("")
	if err := errors.Join(errs...); err != nil {
		u.Error = "partly counted: " + err.Error()
		a.cfg.Log.Warn("system df", zap.Error(err))
	}
	return u
}
