package manager

import (
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/scheduler"
	"github.com/warrenorch/warren/actors/events"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// storeActor is the only writer of cluster state. It proposes commands to
// raft without blocking its mailbox (each apply waits on its own goroutine
// and replies straight to the requester), and forwards proposals to the
// leader's store actor when this manager is a follower.
type storeActor struct {
	st  *store.Store
	log *zap.Logger
}

func newStoreActor(st *store.Store, log *zap.Logger) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &storeActor{st: st, log: log} }, events.WithLifecycle)
}

// holdWrites is how long a write waits for a leader during an election
// before it fails: callers see a short delay, not an error, when a leader
// change is quick.
const holdWrites = 5 * time.Second

// heldProposal is a write waiting for a leader.
type heldProposal struct {
	m        *messages.Propose
	sender   *actor.PID
	deadline time.Time
}

func (a *storeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.Propose:
		a.propose(ctx, &heldProposal{m: m, sender: ctx.Sender(), deadline: time.Now().Add(holdWrites)})
	case *heldProposal:
		a.propose(ctx, m)
	}
}

func (a *storeActor) propose(ctx actor.Context, h *heldProposal) {
	m, sender := h.m, h.sender
	if !a.st.IsLeader() {
		if pid := leaderPID(a.st, NameStore); pid != nil && pid.Address != ctx.Self().Address {
			ctx.RequestWithCustomSender(pid, m, sender)
			return
		}
		if time.Now().Before(h.deadline) {
			scheduler.NewTimerScheduler(ctx).SendOnce(50*time.Millisecond, ctx.Self(), h)
			return
		}
		if sender != nil {
			ctx.Send(sender, &messages.CommandResult{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNAVAILABLE,
				Message: "no leader: a majority of managers must be reachable for writes; retry shortly"}})
		}
		return
	}
	root := ctx.ActorSystem().Root
	go func() {
		res, err := a.st.Apply(m.Command, proposeTimeout)
		if err != nil {
			code := messages.ErrorCode_ERROR_CODE_INTERNAL
			if errors.Is(err, store.ErrNotLeader) {
				code = messages.ErrorCode_ERROR_CODE_UNAVAILABLE
			}
			a.log.Warn("propose", zap.Error(err))
			res = &messages.CommandResult{Error: &messages.Error{Code: code, Message: err.Error()}}
		}
		if sender != nil {
			root.Send(sender, res)
		}
	}()
}

// leaderPID returns the PID named name on the current leader, from the
// leader's node record (its actor address), or nil if unknown.
func leaderPID(st *store.Store, name string) *actor.PID {
	_, id := st.Leader()
	if id == "" {
		return nil
	}
	n := st.State.Node(id)
	if n == nil || n.Description.GetAddr() == "" {
		return nil
	}
	return actor.NewPID(n.Description.Addr, name)
}
