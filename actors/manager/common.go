package manager

import (
	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"

	"github.com/warrenorch/warren/messages"
)

// subscribeState forwards every StateChanged for which relevant returns true
// to the actor's mailbox; the subscription is cancelled in Stopping.
func subscribeState(ctx actor.Context, relevant func(*messages.StateChanged) bool) *eventstream.Subscription {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	return ctx.ActorSystem().EventStream.SubscribeWithPredicate(func(evt any) {
		root.Send(self, evt)
	}, func(evt any) bool {
		sc, ok := evt.(*messages.StateChanged)
		return ok && (sc.Restored || relevant(sc))
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
