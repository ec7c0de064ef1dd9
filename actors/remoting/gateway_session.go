package remoting

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// sessionActor stands on a manager for one client's gateway stream: it
// delivers what the stream's reader admitted, each request with a child of
// its own as the sender, and keeps the client's relays as children. It is
// stopped when the stream ends, and its children with it.
type sessionActor struct {
	out      chan<- *messages.GatewayFrame
	done     <-chan struct{} // closed when the stream ended
	inFlight *atomic.Int64
	who      pki.Peer // from the stream's certificate
	log      *zap.Logger
}

func (a *sessionActor) Receive(ctx actor.Context) {
	in, ok := ctx.Message().(*admitted)
	if !ok {
		return // lifecycle, and nothing else reaches a session
	}
	f := in.frame
	switch f.Kind {
	case messages.GatewayKind_GATEWAY_KIND_REQUEST:
		// The client gives up at its timeout; the sender waits a little
		// longer, only so that it is stopped when no answer comes.
		timeout := defaultGatewayTimeout
		if f.TimeoutMs > 0 {
			timeout = min(time.Duration(f.TimeoutMs)*time.Millisecond, maxGatewayTimeout)
		}
		timeout += 5 * time.Second
		sender := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor {
			return &answer{id: f.Id, timeout: timeout, target: f.Target, out: a.out, done: a.done, inFlight: a.inFlight}
		}))
		a.deliver(ctx, f.Target, in.msg, sender)
	case messages.GatewayKind_GATEWAY_KIND_SEND:
		a.deliver(ctx, f.Target, in.msg, nil)
	case messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY:
		pid, err := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
			return &relay{id: f.Id, out: a.out, done: a.done, log: a.log}
		}), relayName(f.Id))
		if err != nil {
			a.write(&messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_FAILED, Id: f.Id, Error: fmt.Sprintf("open relay: %v", err)})
			return
		}
		a.write(&messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_RELAY_OPENED, Id: f.Id, Relay: pid})
	case messages.GatewayKind_GATEWAY_KIND_CLOSE_RELAY:
		ctx.Stop(actor.NewPID(ctx.Self().Address, ctx.Self().Id+"/"+relayName(f.Id)))
	}
}

// deliver sends msg to the local actor target as the endpoint reader
// delivers a remote message: stamped with the identity of the stream's
// certificate, which admit authorised it for.
func (a *sessionActor) deliver(ctx actor.Context, target string, msg any, sender *actor.PID) {
	pid := actor.NewPID(ctx.Self().Address, target)
	header := map[string]string{HeaderRole: a.who.Role, HeaderName: a.who.Name}
	switch m := msg.(type) {
	case *actor.Terminated:
		// Only protoactor's endpoint watcher acts on a remote Terminated;
		// nothing watches through a gateway, so there is nothing to tell.
		return
	case actor.SystemMessage:
		if ref, ok := ctx.ActorSystem().ProcessRegistry.GetLocal(target); ok {
			ref.SendSystemMessage(pid, m)
		}
		return
	}
	ctx.Send(pid, &actor.MessageEnvelope{Header: header, Message: msg, Sender: sender})
}

func (a *sessionActor) write(f *messages.GatewayFrame) { writeFrame(a.out, a.done, f) }

// writeFrame queues f for the stream's writer, waiting while the queue is
// full (the client reads slowly: its actors wait, their mailboxes grow, as
// protoactor's endpoint writer would); after the stream ended, f is dropped.
func writeFrame(out chan<- *messages.GatewayFrame, done <-chan struct{}, f *messages.GatewayFrame) {
	select {
	case out <- f:
	case <-done:
	}
}

// frameOf serializes msg as protoactor does for the wire.
func frameOf(kind messages.GatewayKind, id uint64, msg any) (*messages.GatewayFrame, error) {
	data, typeName, err := remote.Serialize(msg, 0)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxMessageBytes-1024 {
		return nil, fmt.Errorf("%s of %d bytes is over the limit of %d", typeName, len(data), MaxMessageBytes)
	}
	return &messages.GatewayFrame{Kind: kind, Id: id, TypeName: typeName, Data: data}, nil
}

// answer is the sender of one request: it writes the first message it gets
// (the answer, or the dead letter response of a target that does not exist)
// back to the client and stops, or says the target did not answer in time.
type answer struct {
	id       uint64
	timeout  time.Duration
	target   string
	out      chan<- *messages.GatewayFrame
	done     <-chan struct{}
	inFlight *atomic.Int64
	finished bool
}

func (a *answer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(a.timeout)
	case *actor.Stopping, *actor.Stopped, *actor.Restarting:
		if _, ok := m.(*actor.Stopped); ok && !a.finished {
			a.inFlight.Add(-1) // the session ended first
		}
	case *actor.ReceiveTimeout:
		a.finish(ctx, &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_FAILED, Id: a.id,
			Error: fmt.Sprintf("%s did not answer within %s", a.target, a.timeout)})
	default:
		f, err := frameOf(messages.GatewayKind_GATEWAY_KIND_REPLY, a.id, m)
		if err != nil {
			f = &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_FAILED, Id: a.id, Error: fmt.Sprintf("answer from %s cannot be sent back: %v", a.target, err)}
		}
		a.finish(ctx, f)
	}
}

func (a *answer) finish(ctx actor.Context, f *messages.GatewayFrame) {
	if a.finished {
		return
	}
	a.finished = true
	a.inFlight.Add(-1)
	ctx.CancelReceiveTimeout()
	writeFrame(a.out, a.done, f)
	ctx.Stop(ctx.Self())
}

// relay writes whatever it is sent back to the client as a push.
type relay struct {
	id   uint64
	out  chan<- *messages.GatewayFrame
	done <-chan struct{}
	log  *zap.Logger
}

func (r *relay) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
	default:
		f, err := frameOf(messages.GatewayKind_GATEWAY_KIND_PUSH, r.id, m)
		if err != nil {
			r.log.Debug("remoting: gateway relay dropped a message it cannot send", zap.String("relay", ctx.Self().Id), zap.Error(err))
			return
		}
		writeFrame(r.out, r.done, f)
	}
}
