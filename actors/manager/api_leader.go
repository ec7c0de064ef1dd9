package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// onLeader is the api's one way to the leader, for the requests that must
// be decided there. A write is decided on state first ("not found",
// "already exists", "the last manager"), and a follower still catching up
// must not decide it from a stale replica. So the api's children decide
// writes on the leader (write): on a follower the store actor, this
// manager's one leader-forwarding path, takes them to the leader's api
// under the same hold and resend rules as proposals. Node reports,
// promotions and demotions go to the leader actor, which lives only on the
// leader (forward).
type onLeader struct {
	st *store.Store
}

func newOnLeader(cfg APIConfig) *onLeader {
	return &onLeader{st: cfg.Store}
}

// leaderQuiet: a follower that has not heard from its leader for this long
// (heartbeats come every 50 ms) stops sending it work; an election is due.
const leaderQuiet = 300 * time.Millisecond

// write runs decide when this manager leads. Otherwise it hands the
// request, its sender kept, to the local store actor, which holds it while
// no leader is in sight, passes it to the leader's api and relays the
// answer, or hands it back here if this manager has meanwhile become the
// leader.
func (l *onLeader) write(ctx actor.Context, decide func()) {
	if l.st.IsLeader() {
		decide()
		return
	}
	msg := ctx.Message()
	ctx.Send(storePID(ctx), &leaderRequest{msg: msg, sender: ctx.Sender(), deadline: time.Now().Add(holdWrites),
		target: NameAPI, timeout: proxyTimeout(msg), resendable: resendable(msg)})
}

// proxyTimeout is how long the leader's api has to answer a write: a
// healthy leader answers in milliseconds, one that pulls an image first
// takes the pull's time.
func proxyTimeout(msg any) time.Duration {
	switch msg.(type) {
	case *messages.CreateServiceRequest, *messages.UpdateServiceRequest:
		return imageTimeout + writeTimeout
	}
	return time.Second
}

// resendable says whether a write the leader did not answer may be sent
// again (to the same leader, or to the next after a failover). A request
// that got no answer may have been applied; sending it again is safe only
// when applying it twice leaves the same state:
//
//	request                                   resent  why
//	ScaleServiceRequest                       yes     sets replicas to a value
//	UpdateNodeRequest                         yes     sets availability and labels
//	UpdateServiceRequest, expected_version≠0  yes     a second apply fails the version check
//	UpdateServiceRequest, no expected version no      the resend could undo an update made in between
//	CreateServiceRequest                      no      the second answers "already exists"
//	DeleteServiceRequest                      no      the second answers "not found"
//	RemoveNodeRequest                         no      the second answers "not found"
//	JoinTokenRequest                          no      a rotation would rotate twice
//	anything else                             no      unknown: the caller is told to check
//
// A request that never reached the leader (dead letter), or that a
// leader refused because it had just lost leadership, is always resent.
func resendable(msg any) bool {
	switch m := msg.(type) {
	case *messages.ScaleServiceRequest, *messages.UpdateNodeRequest:
		return true
	case *messages.UpdateServiceRequest:
		return m.ExpectedVersion != 0
	}
	return false
}

// unavailableReply is the answer to a request the leader could not be
// asked, in the reply type the request expects.
func unavailableReply(msg any, e *messages.Error) any {
	switch msg.(type) {
	case *messages.Propose:
		return &messages.CommandResult{Error: e}
	case *messages.UpdateNodeRequest, *messages.RemoveNodeRequest, *messages.PromoteNodeRequest, *messages.DemoteNodeRequest:
		return &messages.NodeReply{Error: e}
	case *messages.JoinTokenRequest:
		return &messages.JoinTokenReply{Error: e}
	}
	return &messages.ServiceReply{Error: e}
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
