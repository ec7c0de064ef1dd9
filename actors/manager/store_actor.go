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

// storeActor is the only writer of cluster state, and this manager's one
// way to the leader. It proposes commands to raft without blocking its
// mailbox (each apply waits on its own goroutine and replies straight to
// the requester). On a follower it takes what must be handled on the
// leader — proposals, and the api's writes (leaderRequest), which must be
// decided on the leader's state — and proxies them there, under one set of
// rules: hold while no leader is in sight, resend what never reached it,
// and never resend what may have been applied unless applying it twice is
// harmless (resendable, api_leader.go).
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

// leaderRequest is a request that must be handled on the leader: a
// proposal (taken by the leader's store actor) or an api write (decided by
// the leader's api). It is a Go value, never a protobuf message: only this
// process can send it, so no peer can make a store actor proxy, or hand
// back to the api, on its behalf.
type leaderRequest struct {
	msg      any        // the request as its caller sent it
	sender   *actor.PID // the caller, answered directly; nil: nobody waits
	deadline time.Time  // held and resent until then, not after
	// target takes msg on the leader, by name: NameStore for a proposal,
	// NameAPI for an api write. When this manager leads, its own target
	// takes it (the api decides it here).
	target string
	// timeout is how long the leader has to answer one proxied send; a
	// healthy one answers in milliseconds (or, for a write that pulls an
	// image, the pull's time).
	timeout time.Duration
	// resendable: a send that got no answer may be sent again, because
	// applying msg twice is harmless (see resendable). Otherwise the
	// caller is told it may or may not have been applied.
	resendable bool
}

func (a *storeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.Propose:
		a.route(ctx, &leaderRequest{msg: m, sender: ctx.Sender(), deadline: time.Now().Add(holdWrites), target: NameStore, timeout: forwardTimeout})
	case *leaderRequest:
		a.route(ctx, m)
	}
}

// route handles r here when this manager leads, holds it while no fresh
// leader is known, and otherwise proxies it to the leader's target and
// relays the answer.
func (a *storeActor) route(ctx actor.Context, r *leaderRequest) {
	if a.st.IsLeader() {
		if p, ok := r.msg.(*messages.Propose); ok {
			a.apply(ctx, r, p)
			return
		}
		// This manager leads now (it did not when the api sent r): the
		// api decides it here, answering the caller itself.
		ctx.RequestWithCustomSender(actor.NewPID(ctx.Self().Address, r.target), r.msg, r.sender)
		return
	}
	pid := leaderPID(a.st, r.target)
	if pid == nil || pid.Address == ctx.Self().Address || !a.st.LeaderFresh(leaderQuiet) {
		// No leader, or one gone quiet: an election is due. Hold the
		// request instead of failing it.
		if !a.hold(ctx, r) {
			a.unavailable(ctx, r, "this manager is not in contact with a leader (no majority of managers reachable from it, or it is still joining): retry, or use another manager")
		}
		return
	}
	f := ctx.RequestFuture(pid, r.msg, r.timeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		switch {
		case errors.Is(err, actor.ErrDeadLetter):
			// It never reached the leader (no connection): safe to resend.
			if !a.hold(ctx, r) {
				a.unavailable(ctx, r, "the leader is unreachable: retry shortly")
			}
		case err != nil && r.resendable && a.hold(ctx, r):
			// No answer (the leader may have died with it); applying it
			// twice is harmless, so it goes to whoever leads next.
			a.log.Debug("leader did not answer a forwarded request; resending", zap.String("leader", pid.Address), zap.String("type", fmt.Sprintf("%T", r.msg)), zap.Error(err))
		case err != nil:
			a.unavailable(ctx, r, fmt.Sprintf("the leader did not answer (%v): the write may or may not have been applied; check and retry", err))
		case notAccepted(res) && a.hold(ctx, r):
			// The leader changed before it took the write: never applied.
		default:
			if r.sender != nil {
				ctx.Send(r.sender, res)
			}
		}
	})
}

// hold routes r again shortly, unless its deadline has passed (false).
func (a *storeActor) hold(ctx actor.Context, r *leaderRequest) bool {
	if !time.Now().Before(r.deadline) {
		return false
	}
	scheduler.NewTimerScheduler(ctx).SendOnce(50*time.Millisecond, ctx.Self(), r)
	return true
}

// unavailable answers r's caller with ERROR_CODE_UNAVAILABLE, in the reply
// type its request expects.
func (a *storeActor) unavailable(ctx actor.Context, r *leaderRequest, msg string) {
	if r.sender != nil {
		ctx.Send(r.sender, unavailableReply(r.msg, errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "%s", msg)))
	}
}

// notAccepted reports whether res is a leader's refusal of a write it
// never applied because it had just lost leadership.
func notAccepted(res any) bool {
	r, ok := res.(interface{ GetError() *messages.Error })
	return ok && r.GetError().GetCode() == messages.ErrorCode_ERROR_CODE_UNAVAILABLE && r.GetError().GetMessage() == errNotAccepted
}

// apply proposes p to raft on this manager, the leader.
func (a *storeActor) apply(ctx actor.Context, r *leaderRequest, p *messages.Propose) {
	root, self, sender := ctx.ActorSystem().Root, ctx.Self(), r.sender
	go func() {
		res, err := a.st.Apply(p.Command, proposeTimeout)
		if errors.Is(err, store.ErrNotLeader) && errors.Is(err, raft.ErrNotLeader) && time.Now().Before(r.deadline) {
			root.Send(self, r) // not accepted here: find the new leader
			return
		}
		if err != nil {
			code, msg := messages.ErrorCode_ERROR_CODE_INTERNAL, err.Error()
			switch {
			case errors.Is(err, raft.ErrNotLeader):
				code, msg = messages.ErrorCode_ERROR_CODE_UNAVAILABLE, errNotAccepted
			case errors.Is(err, raft.ErrLeadershipLost):
				// The entry is in the log and may still commit under the
				// next leader: the caller must not take this as "not done".
				code, msg = messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "the leader lost its leadership while committing the write: it may or may not have been applied; check and retry"
			case errors.Is(err, store.ErrNotLeader):
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

// forwardTimeout bounds a proposal proxied to the leader: a reachable
// leader commits in milliseconds; one that stays silent this long is cut
// off.
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
