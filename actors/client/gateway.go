package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
)

// The client's end of a manager's gateway (actors/remoting/gateway.go):
// one gRPC stream over one connection the client opens to the manager's
// remoting port, carrying requests out and their replies and pushed
// messages back. Nothing dials the client, so it works behind NAT, through
// `ssh -L` and from a container.

// errNotSent marks a request that never left this process: the stream was
// gone before it was written. Like a dead letter, another manager may be
// asked without applying anything twice.
var errNotSent = errors.New("not sent")

// gatewayConn is one gateway stream to one manager.
type gatewayConn struct {
	addr   string
	system *actor.ActorSystem // pushes are delivered to its actors
	log    *zap.Logger
	cc     *grpc.ClientConn
	stream grpc.ClientStream
	cancel context.CancelFunc

	sendMu sync.Mutex // grpc allows one SendMsg at a time

	mu      sync.Mutex
	next    uint64                                 // last id handed out
	pending map[uint64]chan *messages.GatewayFrame // requests awaiting an answer
	relays  map[uint64]*actor.PID                  // by relay id: the local actor its pushes go to
	proxies []*actor.PID                           // local actors standing for manager actors; stopped with the stream
	done    chan struct{}                          // closed when the stream ended
	err     error                                  // why; set before done closes
	refused bool                                   // the manager cut the stream for a frame its rules refuse
}

// openGateway connects to addr and opens the stream; it gives up after
// timeout if the connection is not ready.
func openGateway(addr string, tlsCfg *tls.Config, timeout time.Duration, system *actor.ActorSystem, log *zap.Logger) (*gatewayConn, error) {
	cc, err := grpc.Dial(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(remoting.MaxMessageBytes), grpc.MaxCallRecvMsgSize(remoting.MaxMessageBytes)),
		// A manager that lost power sends no FIN: pings notice it, so a
		// quiet `events -f` ends instead of hanging.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: remoting.GatewayKeepalive, Timeout: 10 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if err := waitReady(cc, timeout); err != nil {
		cc.Close()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, remoting.GatewayMethod)
	if err != nil {
		cancel()
		cc.Close()
		return nil, fmt.Errorf("open gateway stream to %s: %w", addr, err)
	}
	g := &gatewayConn{addr: addr, system: system, log: log, cc: cc, stream: stream, cancel: cancel,
		pending: map[uint64]chan *messages.GatewayFrame{}, relays: map[uint64]*actor.PID{}, done: make(chan struct{})}
	go g.read()
	return g, nil
}

// waitReady waits until cc has a connection, or fails as soon as it
// cannot make one: a TLS handshake the manager refuses is not retried.
func waitReady(cc *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("no connection (%s)", s)
		}
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("no connection within %s", timeout)
		}
	}
}

// close ends the stream; the manager stops the session and its relays.
func (g *gatewayConn) close() {
	g.cancel()
	g.cc.Close()
	<-g.done
}

// read dispatches what the manager sends until the stream ends.
func (g *gatewayConn) read() {
	for {
		f := &messages.GatewayFrame{}
		if err := g.stream.RecvMsg(f); err != nil {
			g.end(err)
			return
		}
		switch f.Kind {
		case messages.GatewayKind_GATEWAY_KIND_REPLY, messages.GatewayKind_GATEWAY_KIND_FAILED, messages.GatewayKind_GATEWAY_KIND_RELAY_OPENED:
			g.mu.Lock()
			ch := g.pending[f.Id]
			delete(g.pending, f.Id)
			g.mu.Unlock()
			if ch != nil {
				ch <- f // buffered: one answer per request
			}
		case messages.GatewayKind_GATEWAY_KIND_PUSH:
			g.mu.Lock()
			local, ok := g.relays[f.Id]
			g.mu.Unlock()
			if !ok {
				continue // closed meanwhile
			}
			msg, err := remoting.Decode(f.TypeName, f.Data)
			if err != nil {
				g.log.Debug("gateway: dropped a push this client cannot decode", zap.String("type", f.TypeName), zap.Error(err))
				continue
			}
			g.system.Root.Send(local, msg)
		}
	}
}

// end records why the stream ended and stops the proxies, so whoever
// watches one learns it, as protoactor tells a watcher of an actor whose
// node went away.
func (g *gatewayConn) end(cause error) {
	err := cause
	switch {
	case status.Code(err) == codes.Canceled:
		err = errors.New("connection closed")
	case status.Code(err) == codes.PermissionDenied:
		err = fmt.Errorf("refused: %s (the admin certificate may do this; a node's may not)", status.Convert(err).Message())
	default:
		err = fmt.Errorf("connection to manager %s lost: %w", g.addr, err)
	}
	g.mu.Lock()
	g.err = err
	g.refused = status.Code(cause) == codes.PermissionDenied
	g.relays = map[uint64]*actor.PID{}
	proxies := g.proxies
	g.proxies = nil
	g.mu.Unlock()
	close(g.done)
	for _, pid := range proxies {
		g.system.Root.Stop(pid)
	}
}

// send writes f; an error means it was not written.
func (g *gatewayConn) send(f *messages.GatewayFrame) error {
	select {
	case <-g.done:
		return g.err
	default:
	}
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	return g.stream.SendMsg(f)
}

// call sends f with a fresh id and waits for the answer to it.
func (g *gatewayConn) call(f *messages.GatewayFrame, timeout time.Duration) (*messages.GatewayFrame, error) {
	ch := make(chan *messages.GatewayFrame, 1)
	g.mu.Lock()
	g.next++
	f.Id = g.next
	g.pending[f.Id] = ch
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.pending, f.Id)
		g.mu.Unlock()
	}()
	if err := g.send(f); err != nil {
		return nil, fmt.Errorf("%w (%v)", errNotSent, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-ch:
		return a, nil
	case <-t.C:
		return nil, actor.ErrTimeout
	case <-g.done:
		if g.refused {
			return nil, g.err
		}
		return nil, fmt.Errorf("%w: the request may have been applied; check before sending it again", g.err)
	}
}

// request sends msg to the actor target on the manager and returns its
// answer. actor.ErrDeadLetter means no such actor there: nothing happened.
func (g *gatewayConn) request(target string, msg any, timeout time.Duration) (any, error) {
	data, typeName, err := remote.Serialize(msg, 0)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", msg, err)
	}
	a, err := g.call(&messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_REQUEST, Target: target, TypeName: typeName, Data: data,
		TimeoutMs: uint32(min(timeout.Milliseconds(), int64(^uint32(0))))}, timeout)
	if err != nil {
		return nil, err
	}
	if a.Kind == messages.GatewayKind_GATEWAY_KIND_FAILED {
		return nil, fmt.Errorf("manager %s: %s", g.addr, a.Error)
	}
	res, err := remoting.Decode(a.TypeName, a.Data)
	if err != nil {
		return nil, fmt.Errorf("decode the answer (%s): %w", a.TypeName, err)
	}
	if _, ok := res.(*actor.DeadLetterResponse); ok {
		return nil, actor.ErrDeadLetter
	}
	return res, nil
}

// tell sends msg to the actor target on the manager; nothing answers.
func (g *gatewayConn) tell(target string, msg any) error {
	data, typeName, err := remote.Serialize(msg, 0)
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	return g.send(&messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_SEND, Target: target, TypeName: typeName, Data: data})
}

// openRelay makes an actor on the manager that passes everything it is
// sent to local, an actor of this process (which need not exist yet: what
// the relay is sent before it does is lost). close stops the relay; the
// stream's end stops it too.
func (g *gatewayConn) openRelay(local *actor.PID, timeout time.Duration) (*actor.PID, func(), error) {
	a, err := g.call(&messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY}, timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("open a relay on %s: %w", g.addr, err)
	}
	if a.Kind != messages.GatewayKind_GATEWAY_KIND_RELAY_OPENED || a.Relay == nil {
		return nil, nil, fmt.Errorf("open a relay on %s: %s", g.addr, a.Error)
	}
	g.mu.Lock()
	ended := g.err != nil
	if !ended {
		g.relays[a.Id] = local
	}
	g.mu.Unlock()
	if ended {
		return nil, nil, fmt.Errorf("open a relay on %s: %w", g.addr, g.err)
	}
	closeRelay := func() {
		g.mu.Lock()
		delete(g.relays, a.Id)
		g.mu.Unlock()
		_ = g.send(&messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_CLOSE_RELAY, Id: a.Id})
	}
	return a.Relay, closeRelay, nil
}

// proxy is a local actor that tells everything it is sent to the actor
// target on the manager, over the stream; it stops when the stream ends,
// so a local actor can watch it as it would watch the remote actor.
func (g *gatewayConn) proxy(target string) (*actor.PID, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	pid := g.system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		default:
			if err := g.tell(target, m); err != nil {
				g.log.Debug("gateway: not sent", zap.String("target", target), zap.String("type", fmt.Sprintf("%T", m)), zap.Error(err))
			}
		}
	}))
	g.proxies = append(g.proxies, pid)
	return pid, nil
}
