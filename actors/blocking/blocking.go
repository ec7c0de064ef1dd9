// Package blocking owns the one way Warren's actors do work that may block
// (an image import, a container create, a raft membership change): off the
// mailbox, so the actor keeps taking messages (a heartbeat must never wait
// behind an import), with the result handed back to the actor in the
// context of the message that started the work, so that ctx.Respond still
// answers its sender.
package blocking

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// result carries fn's outcome to the future; it never leaves the process.
type result[T any] struct {
	v   T
	err error
}

// Do runs fn on its own goroutine and then done on the actor, with fn's
// result, or with an error if fn has not returned within timeout (fn then
// runs on; its result is dropped). done runs in the context of the message
// being handled when Do was called.
func Do[T any](ctx actor.Context, timeout time.Duration, fn func() (T, error), done func(T, error)) {
	f := actor.NewFuture(ctx.ActorSystem(), timeout)
	root, pid := ctx.ActorSystem().Root, f.PID()
	go func() {
		v, err := fn()
		root.Send(pid, &result[T]{v: v, err: err})
	}()
	ctx.ReenterAfter(f, func(res any, err error) {
		var zero T
		if err != nil {
			done(zero, fmt.Errorf("gave up after %s: %w", timeout, err))
			return
		}
		r, ok := res.(*result[T])
		if !ok {
			done(zero, fmt.Errorf("unexpected result %T", res))
			return
		}
		done(r.v, r.err)
	})
}
