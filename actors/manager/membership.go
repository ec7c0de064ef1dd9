package manager

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/store"
)

// The membership actor's requests. They never leave the process: a peer
// manager has no wire form to send them with, so a raft configuration
// change can only be asked for by this manager's own actors (and host's
// startup and stop, through Barrier and TransferLeadership below). That is
// why they are Go values here and not messages in messages/.
type (
	// addVoter makes a manager a raft voter; it is a no-op for a server
	// already in the configuration. The caller must lead.
	addVoter struct{ id, addr string }
	// removeServer drops a manager from the raft configuration.
	removeServer struct{ id string }
	// transferLeadership hands leadership to another voter.
	transferLeadership struct{}
	// listServers asks for the raft configuration.
	listServers struct{}
	// barrier waits until everything committed before it is applied here.
	barrier struct{ timeout time.Duration }
)

// membershipReply answers every membership request.
type membershipReply struct {
	servers []store.Server // listServers only
	err     error
}

var (
	// errOnlyVoter: leadership cannot move when nobody else may take it.
	errOnlyVoter = errors.New("this manager is the only raft voter: there is nobody to hand leadership to; promote another node first")
	// errNotLeading: only the leader hands leadership over.
	errNotLeading = errors.New("this manager does not lead: only the leader can hand leadership over")
	// errChangeUnderWay: a second change for the same server while the
	// first runs would race it; the caller retries.
	errChangeUnderWay = errors.New("a raft configuration change for this manager is under way")
)

// Timeouts of the raft calls: a configuration change waits for the new
// configuration to commit (a new voter must be reachable); the blocking
// call is given up a little later than raft gives up.
const (
	changeTimeout   = 15 * time.Second
	transferTimeout = 15 * time.Second
)

// membershipActor owns raft membership: configuration changes (adding and
// removing voters), leadership transfer, barriers and the configuration
// itself. Nothing else calls those store methods (a test checks). Every
// raft call that may block runs off the mailbox, so a slow change (a new
// voter that is not reachable yet) never holds back the others' answers.
type membershipActor struct {
	st      *store.Store
	self    string // this manager's node id (its raft server id)
	log     *zap.Logger
	pending map[string]bool // server ids with a change under way
}

func newMembership(st *store.Store, self string, log *zap.Logger) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &membershipActor{st: st, self: self, log: log, pending: map[string]bool{}}
	}, events.WithLifecycle)
}

func (a *membershipActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *listServers:
		// GetConfiguration does not block: answered on the mailbox.
		servers, err := a.st.Servers()
		ctx.Respond(&membershipReply{servers: servers, err: err})
	case *addVoter:
		servers, err := a.st.Servers()
		if err != nil {
			ctx.Respond(&membershipReply{err: err})
			return
		}
		for _, s := range servers {
			if s.ID == m.id {
				ctx.Respond(&membershipReply{}) // already a member
				return
			}
		}
		a.change(ctx, m.id, func() error { return a.st.AddVoter(m.id, m.addr, changeTimeout) })
	case *removeServer:
		a.change(ctx, m.id, func() error { return a.st.RemoveServer(m.id, changeTimeout) })
	case *transferLeadership:
		a.transfer(ctx)
	case *barrier:
		st := a.st
		blocking.Do(ctx, m.timeout+time.Second, func() (struct{}, error) { return struct{}{}, st.Barrier(m.timeout) },
			func(_ struct{}, err error) { ctx.Respond(&membershipReply{err: err}) })
	}
}

// change runs one configuration change for server id off the mailbox.
func (a *membershipActor) change(ctx actor.Context, id string, fn func() error) {
	if a.pending[id] {
		ctx.Respond(&membershipReply{err: errChangeUnderWay})
		return
	}
	a.pending[id] = true
	blocking.Do(ctx, changeTimeout+5*time.Second, func() (struct{}, error) { return struct{}{}, fn() }, func(_ struct{}, err error) {
		delete(a.pending, id)
		if err != nil {
			a.log.Warn("raft configuration change", zap.String("server", id), zap.Error(err))
		}
		ctx.Respond(&membershipReply{err: err})
	})
}

func (a *membershipActor) transfer(ctx actor.Context) {
	if !a.st.IsLeader() {
		ctx.Respond(&membershipReply{err: errNotLeading})
		return
	}
	servers, err := a.st.Servers()
	if err != nil {
		ctx.Respond(&membershipReply{err: err})
		return
	}
	if otherVoters(servers, a.self) == 0 {
		ctx.Respond(&membershipReply{err: errOnlyVoter})
		return
	}
	st := a.st
	blocking.Do(ctx, transferTimeout, func() (struct{}, error) { return struct{}{}, st.TransferLeadership() },
		func(_ struct{}, err error) { ctx.Respond(&membershipReply{err: err}) })
}

// otherVoters counts the voters besides self.
func otherVoters(servers []store.Server, self string) int {
	n := 0
	for _, s := range servers {
		if s.Voter && s.ID != self {
			n++
		}
	}
	return n
}

// askMembership sends m to this manager's membership actor and calls done
// on the calling actor with the answer (an error if none came in time).
func askMembership(ctx actor.Context, m any, timeout time.Duration, done func(*membershipReply)) {
	f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameMembership), m, timeout)
	ctx.ReenterAfter(f, func(res any, err error) { done(membershipResult(res, err)) })
}

func membershipResult(res any, err error) *membershipReply {
	if err != nil {
		return &membershipReply{err: fmt.Errorf("membership actor: %w", err)}
	}
	r, ok := res.(*membershipReply)
	if !ok {
		return &membershipReply{err: fmt.Errorf("membership actor: unexpected reply %T", res)}
	}
	return r
}

// Barrier waits until this manager has applied everything committed before
// the call (a new leader serves nobody before it has). system must run a
// manager (Start).
func Barrier(system *actor.ActorSystem, timeout time.Duration) error {
	res, err := system.Root.RequestFuture(actor.NewPID(system.Address(), NameMembership), &barrier{timeout: timeout}, timeout+2*time.Second).Result()
	return membershipResult(res, err).err
}

// TransferLeadership hands leadership to another voter before a planned
// stop, so the others need not wait out an election timeout. A manager
// that does not lead, or is the only voter, has nothing to hand over: that
// is not an error.
func TransferLeadership(system *actor.ActorSystem, timeout time.Duration) error {
	res, err := system.Root.RequestFuture(actor.NewPID(system.Address(), NameMembership), &transferLeadership{}, timeout).Result()
	err = membershipResult(res, err).err
	if errors.Is(err, errNotLeading) || errors.Is(err, errOnlyVoter) {
		return nil
	}
	return err
}
