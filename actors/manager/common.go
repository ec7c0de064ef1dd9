package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"

	"github.com/warrenorch/warren/messages"
)

// subscribeState forwards every StateChanged for which relevant returns true
// to the actor's mailbox; the subscription is cancelled in Stopping.
func subscribeState(ctx actor.Context, relevant func(*messages.StateChanged) bool) *eventstream.Subscription {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	// The filter runs in the handler: protoactor's SubscribeWithPredicate
	// sets the predicate after the subscription is visible to Publish, a
	// data race with every concurrent publisher.
	return ctx.ActorSystem().EventStream.Subscribe(func(evt any) {
		if sc, ok := evt.(*messages.StateChanged); ok && (sc.Restored || relevant(sc)) {
			root.Send(self, evt)
		}
	})
}

func unsubscribe(ctx actor.Context, s *eventstream.Subscription) {
	if s != nil {
		ctx.ActorSystem().EventStream.Unsubscribe(s)
	}
}

// storePID is the local store actor (which forwards to the leader's).
func storePID(ctx actor.Context) *actor.PID { return actor.NewPID(ctx.Self().Address, NameStore) }

// reconcileNow is a self-message: reconcile once the current burst of
// changes has been taken in.
type reconcileNow struct{}

// tick is a timer self-message.
type tick struct{ kind string }

// write proposes cmd through the local store actor and, once it is settled,
// calls done on the actor with the error to report (nil when applied).
func write(ctx actor.Context, cmd *messages.Command, timeout time.Duration, done func(*messages.Error)) {
	f := ctx.RequestFuture(storePID(ctx), &messages.Propose{Command: cmd}, timeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.CommandResult)
		switch {
		case err != nil:
			done(errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "write not committed: %v; retry", err))
		case r == nil:
			done(errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "unexpected store reply %T", res))
		default:
			done(r.Error)
		}
	})
}
