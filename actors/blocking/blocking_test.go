package blocking

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

type slow struct{ release chan struct{} }
type ping struct{}
type pong struct{}
type failing struct{}
type hang struct{}

// worker does a slow job off its mailbox and answers pings meanwhile.
type worker struct{}

func (worker) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *slow:
		Do(ctx, 10*time.Second, func() (string, error) {
			<-m.release
			return "done", nil
		}, func(v string, err error) {
			if err != nil {
				ctx.Respond(err.Error())
				return
			}
			ctx.Respond(v)
		})
	case *failing:
		Do(ctx, time.Second, func() (int, error) { return 0, errors.New("disk full") },
			func(_ int, err error) { ctx.Respond(err.Error()) })
	case *hang:
		Do(ctx, 100*time.Millisecond, func() (int, error) { select {} },
			func(_ int, err error) { ctx.Respond(err.Error()) })
	case *ping:
		ctx.Respond(&pong{})
	}
}

func TestDo(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	defer sys.Shutdown()
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return worker{} }))

	release := make(chan struct{})
	job := sys.Root.RequestFuture(pid, &slow{release: release}, 10*time.Second)
	// While the job blocks, the actor still answers: its mailbox is free.
	if _, err := sys.Root.RequestFuture(pid, &ping{}, 2*time.Second).Result(); err != nil {
		t.Fatalf("ping while a job blocks: %v", err)
	}
	close(release)
	// The result answers the job's own sender.
	if res, err := job.Result(); err != nil || res != "done" {
		t.Fatalf("job: %v %v", res, err)
	}
	if res, _ := sys.Root.RequestFuture(pid, &failing{}, 2*time.Second).Result(); res != "disk full" {
		t.Fatalf("failing job answered %v", res)
	}
	res, _ := sys.Root.RequestFuture(pid, &hang{}, 2*time.Second).Result()
	if s, _ := res.(string); len(s) < 10 || s[:9] != "gave up a" {
		t.Fatalf("hung job answered %v", res)
	}
}
