package manager

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/store"
)

// Config configures a manager's actors.
type Config struct {
	Store  *store.Store
	API    APIConfig
	Leader LeaderConfig
	Log    *zap.Logger
}

// leadership is sent to the manager actor when raft leadership changes here.
type leadership struct{ leader bool }

// started asks the manager actor whether it has spawned its children.
type started struct{}

// managerActor supervises the store, membership and api actors, and the
// leader actor while this manager leads.
type managerActor struct {
	cfg    Config
	leader *actor.PID
}

// Start spawns the manager actor tree on system and relays raft's leadership
// notifications to it. It returns the manager's PID once the manager's
// children exist, so the caller may ask them at once (Barrier).
func Start(system *actor.ActorSystem, cfg Config) (*actor.PID, error) {
	props := actor.PropsFromProducer(func() actor.Actor { return &managerActor{cfg: cfg} }, events.WithLifecycle)
	pid, err := system.Root.SpawnNamed(props, NameManager)
	if err != nil {
		return nil, err
	}
	if _, err := system.Root.RequestFuture(pid, &started{}, 10*time.Second).Result(); err != nil {
		return nil, fmt.Errorf("manager actor did not start: %w", err)
	}
	go func() {
		for l := range cfg.Store.LeaderCh() {
			system.Root.Send(pid, &leadership{leader: l})
		}
	}()
	return pid, nil
}

func (a *managerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.SpawnNamed(newStoreActor(a.cfg.Store, a.cfg.Log.Named("store")), "store")
		ctx.SpawnNamed(newMembership(a.cfg.Store, a.cfg.API.NodeID, a.cfg.Log.Named("membership")), "membership")
		ctx.SpawnNamed(newAPI(a.cfg.API), "api")
		ctx.SpawnNamed(newAuditLog(a.cfg.API), "audit") // audit.go
		// Leadership may have been won before this actor started.
		if a.cfg.Store.IsLeader() {
			a.lead(ctx, true)
		}
	case *started:
		ctx.Respond(m)
	case *leadership:
		a.lead(ctx, m.leader && a.cfg.Store.IsLeader())
	}
}

func (a *managerActor) lead(ctx actor.Context, on bool) {
	switch {
	case on && a.leader == nil:
		a.cfg.Log.Info("became leader: starting leader-only actors")
		ctx.ActorSystem().EventStream.Publish(&messages.Event{UnixNano: time.Now().UnixNano(), Type: "leader.elected", Subject: a.cfg.API.NodeID, Message: "this manager leads the cluster"})
		pid, err := ctx.SpawnNamed(newLeader(a.cfg.Leader), "leader")
		if err != nil {
			a.cfg.Log.Error("spawn leader actor", zap.Error(err))
			return
		}
		a.leader = pid
	case !on && a.leader != nil:
		a.cfg.Log.Info("lost leadership: stopping leader-only actors")
		ctx.ActorSystem().EventStream.Publish(&messages.Event{UnixNano: time.Now().UnixNano(), Type: "leader.lost", Subject: a.cfg.API.NodeID, Message: "this manager no longer leads"})
		ctx.Stop(a.leader)
		a.leader = nil
	}
}
