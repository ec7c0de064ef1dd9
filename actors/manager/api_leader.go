package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// onLeader is the api's one way to the leader, for the requests that must
// be decided there. Commands themselves reach raft through the store actor
// (which holds them during an election and forwards them to the leader's);
// but a write is decided on state first ("not found", "already exists",
// "the last manager"), and a follower still catching up must not decide it
// from a stale replica. So the api's children decide writes on the leader
// (write), and hand node reports, promotions and demotions to the leader
// actor (forward), which lives only there.
type onLeader struct {
	st   *store.Store
	log  *zap.Logger
	held map[any]time.Time // writes waiting for a leader, until when
}

func newOnLeader(cfg APIConfig) *onLeader {
	return &onLeader{st: cfg.Store, log: cfg.Log, held: map[any]time.Time{}}
}

// leaderQuiet: a follower that has not heard from its leader for this long
// (heartbeats come every 50 ms) stops sending it work; an election is due.
const leaderQuiet = 300 * time.Millisecond

// write runs decide when this manager leads. Otherwise it passes the
// request to the leader's api and relays the answer; while no leader is in
// sight (an election may be under way) it holds the request a few seconds,
// as the store actor holds writes, then gives up.
func (l *onLeader) write(ctx actor.Context, decide func()) {
	msg := ctx.Message()
	if l.st.IsLeader() {
		delete(l.held, msg)
		decide()
		return
	}
	dl, ok := l.held[msg]
	if !ok {
		dl = time.Now().Add(holdWrites)
		l.held[msg] = dl
	}
	if pid := leaderPID(l.st, NameAPI); pid != nil && pid.Address != ctx.Self().Address && l.st.LeaderFresh(leaderQuiet) {
		l.proxy(ctx, pid, dl, decide)
		return
	}
	if time.Now().Before(dl) {
		after(ctx, 50*time.Millisecond, func() { l.write(ctx, decide) })
		return
	}
	delete(l.held, msg)
	ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE,
		"this manager is not in contact with a leader (no majority of managers reachable from it, or it is still joining): retry, or use another manager")})
}

// proxy passes a write to the leader's api and relays the answer. A leader
// that does not answer in time (it died: a healthy one answers in
// milliseconds) is given up on and the request decided again, until the
// hold deadline: writes survive a failover with a short delay.
func (l *onLeader) proxy(ctx actor.Context, leader *actor.PID, deadline time.Time, decide func()) {
	msg := ctx.Message()
	timeout := time.Second
	switch msg.(type) {
	case *messages.CreateServiceRequest, *messages.UpdateServiceRequest:
		timeout = imageTimeout + writeTimeout // the leader may pull the image
	}
	f := ctx.RequestFuture(leader, msg, timeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		if err == nil {
			delete(l.held, msg)
			ctx.Respond(res)
			return
		}
		if time.Now().Before(deadline) {
			l.log.Debug("leader did not answer a forwarded write; deciding again", zap.String("leader", leader.Address), zap.Error(err))
			after(ctx, 20*time.Millisecond, func() { l.write(ctx, decide) })
			return
		}
		delete(l.held, msg)
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE,
			"the leader did not answer (%v): the write may or may not have been applied; check and retry", err)})
	})
}

// forward hands the request, its sender kept, to the leader actor: here,
// or through the leader manager's api. Without a leader (or while the
// leader's actors start) the requests that expect an answer get one
// saying so; the caller retries.
func (l *onLeader) forward(ctx actor.Context) {
	if l.st.IsLeader() {
		if _, ok := ctx.ActorSystem().ProcessRegistry.GetLocal(NameLeader); ok {
			ctx.Forward(actor.NewPID(ctx.Self().Address, NameLeader))
			return
		}
		// Leader-only actors are still starting; the caller retries.
		switch ctx.Message().(type) {
		case *messages.PromoteNodeRequest, *messages.DemoteNodeRequest:
			ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "leader starting: retry")})
		case *messages.RegisterNode:
			ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "leader starting: retrying")})
		case *messages.DrainTask:
			ctx.Respond(&messages.DrainTaskReply{Unconfirmed: []string{"(leader starting)"}})
		}
		return
	}
	if pid := leaderPID(l.st, NameAPI); pid != nil && pid.Address != ctx.Self().Address {
		ctx.Forward(pid)
		return
	}
	switch ctx.Message().(type) {
	case *messages.RegisterNode:
		ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "no leader yet: retrying")})
	case *messages.PromoteNodeRequest, *messages.DemoteNodeRequest:
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "no leader: a majority of managers must be reachable; retry shortly")})
	case *messages.DrainTask:
		// Nobody can confirm anything: the task stops unconfirmed rather
		// than wait out a partition.
		ctx.Respond(&messages.DrainTaskReply{Unconfirmed: []string{"(no leader)"}})
	}
}

// after runs fn on the actor after d, in the context of the message being
// handled now (same sender), without blocking the mailbox meanwhile.
func after(ctx actor.Context, d time.Duration, fn func()) {
	f := actor.NewFuture(ctx.ActorSystem(), d+time.Second)
	root, pid := ctx.ActorSystem().Root, f.PID()
	time.AfterFunc(d, func() { root.Send(pid, &messages.Error{}) })
	ctx.ReenterAfter(f, func(any, error) { fn() })
}
