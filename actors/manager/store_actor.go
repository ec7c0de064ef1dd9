package manager

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

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
	retry := func() bool {
		if time.Now().Before(h.deadline) {
			scheduler.NewTimerScheduler(ctx).SendOnce(50*time.Millisecond, ctx.Self(), h)
			return true
		}
		return false
	}
	unavailable := func(msg string) {
		if sender != nil {
			ctx.Send(sender, &messages.CommandResult{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: msg}})
		}
	}
	if !a.st.IsLeader() {
		pid := leaderPID(a.st, NameStore)
		if pid == nil || pid.Address == ctx.Self().Address || !a.st.LeaderFresh(leaderQuiet) {
			// No leader, or one gone quiet: an election is due. Hold the
			// write instead of failing it.
			if !retry() {
				unavailable("no leader: a majority of managers must be reachable for writes; retry shortly")
			}
			return
		}
		// Proxy to the leader's store actor. A write that never reached it
		// (dead letter: no connection) is safe to resend; one that got no
		// answer may have been applied, so that is reported, not retried.
		f := ctx.RequestFuture(pid, m, forwardTimeout)
		ctx.ReenterAfter(f, func(res any, err error) {
			switch {
			case errors.Is(err, actor.ErrDeadLetter):
				if !retry() {
					unavailable("the leader is unreachable: retry shortly")
				}
			case err != nil:
				unavailable(fmt.Sprintf("the leader did not answer (%v): the write may or may not have been applied; check and retry", err))
			default:
				if r, _ := res.(*messages.CommandResult); r != nil && r.Error.GetCode() == messages.ErrorCode_ERROR_CODE_UNAVAILABLE && r.Error.GetMessage() == errNotAccepted && retry() {
					return // the leader changed before it took the write
				}
				if sender != nil {
					ctx.Send(sender, res)
				}
			}
		})
		return
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	go func() {
		res, err := a.st.Apply(m.Command, proposeTimeout)
		if errors.Is(err, store.ErrNotLeader) && errors.Is(err, raft.ErrNotLeader) && time.Now().Before(h.deadline) {
			root.Send(self, h) // not accepted here: find the new leader
			return
		}
		if err != nil {
			code, msg := messages.ErrorCode_ERROR_CODE_INTERNAL, err.Error()
			if errors.Is(err, raft.ErrNotLeader) {
				code, msg = messages.ErrorCode_ERROR_CODE_UNAVAILABLE, errNotAccepted
			} else if errors.Is(err, store.ErrNotLeader) {
				code = messages.ErrorCode_ERROR_CODE_UNAVAILABLE
			}
			a.log.Warn("propose", zap.Error(err))
			res = &messages.CommandResult{Error: &messages.Error{Code: code, Message: msg}}
		}
		if sender != nil {
			root.Send(sender, res)
		}
	}()
}

// forwardTimeout bounds a write proxied to the leader: a reachable leader
// commits in milliseconds; one that stays silent this long is cut off.
const forwardTimeout = 5 * time.Second

// errNotAccepted marks a write a manager refused because it had just lost
// leadership: it was never applied, so the proxy may resend it.
const errNotAccepted = "not the leader any more: write not accepted"

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
