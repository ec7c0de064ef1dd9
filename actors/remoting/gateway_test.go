package remoting

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// gwStream is a raw gateway stream with a real certificate: a test sends
// the frames it likes, as a hostile client could.
type gwStream struct {
	s      grpc.ClientStream
	cancel context.CancelFunc
	in     chan *messages.GatewayFrame
	err    chan error // the stream's end, once
}

func openGW(t testing.TB, p *rawPeer) *gwStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := p.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, GatewayMethod)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g := &gwStream{s: s, cancel: cancel, in: make(chan *messages.GatewayFrame, 64), err: make(chan error, 1)}
	go func() {
		for {
			f := &messages.GatewayFrame{}
			if err := s.RecvMsg(f); err != nil {
				g.err <- err
				close(g.in)
				return
			}
			g.in <- f
		}
	}()
	t.Cleanup(cancel)
	return g
}

func (g *gwStream) send(t testing.TB, f *messages.GatewayFrame) {
	t.Helper()
	if err := g.s.SendMsg(f); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
}

// next is the next frame from the manager, or nil and the stream's end.
func (g *gwStream) next(t testing.TB) (*messages.GatewayFrame, error) {
	t.Helper()
	select {
	case f, ok := <-g.in:
		if !ok {
			return nil, <-g.err
		}
		return f, nil
	case <-time.After(10 * time.Second):
		t.Fatal("no frame from the gateway within 10s")
		return nil, nil
	}
}

func request(t testing.TB, id uint64, target string, m proto.Message) *messages.GatewayFrame {
	return &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_REQUEST, Id: id, Target: target, TypeName: wire(m), Data: mustMarshal(t, m), TimeoutMs: 5000}
}

// counter stands for state a refused request must not change: it counts
// the ScaleServiceRequests it is sent and answers ClusterInfoRequest with
// the count and who asked.
type counter struct{ n int }

func (c *counter) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *messages.ScaleServiceRequest:
		c.n++
		ctx.Respond(&messages.ServiceReply{})
	case *messages.ClusterInfoRequest:
		id := Identity(ctx)
		ctx.Respond(&messages.ClusterInfoReply{Nodes: uint32(c.n), NodeId: id.Name, Version: id.Role})
	}
}

// hubStandIn records who subscribes and, like the events hub, watches the
// subscriber, pushes it an event and notes its termination.
type hubStandIn struct {
	mu         *sync.Mutex
	subscribed *[]*actor.PID
	terminated chan *actor.PID
}

func (h *hubStandIn) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.SubscribeEvents:
		h.mu.Lock()
		*h.subscribed = append(*h.subscribed, m.Subscriber)
		h.mu.Unlock()
		ctx.Watch(m.Subscriber)
		ctx.Respond(&messages.SubscribeEventsReply{LastSeq: 7})
		ctx.Send(m.Subscriber, &messages.Event{Seq: 8, Type: "service.created", Subject: "web"})
	case *actor.Terminated:
		h.terminated <- m.Who
	}
}

// TestGateway drives a manager's gateway with real certificates: requests
// are answered under the certificate's identity; what the rules refuse cuts
// the stream and changes nothing; a client may name its own relay as a
// subscriber, never another actor of the node; a relay passes what it is
// sent and stops with the stream.
func TestGateway(t *testing.T) {
	p := newPKI(t)
	var refusedMu sync.Mutex
	var refused []string
	cfg, err := pki.TLSConfig(p.ca.PEM, p.server)
	if err != nil {
		t.Fatal(err)
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(quiet))
	r, addr, err := Start(sys, Config{Host: "127.0.0.1", Port: 0, TLS: cfg, OnRefused: func(peer pki.Peer, target, typeName string) {
		refusedMu.Lock()
		defer refusedMu.Unlock()
		refused = append(refused, peer.Role+" "+target+" "+typeName)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(false); sys.Shutdown() })
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &counter{} }), ActorAPI); err != nil {
		t.Fatal(err)
	}
	var subMu sync.Mutex
	var subscribed []*actor.PID
	terminated := make(chan *actor.PID, 8)
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &hubStandIn{mu: &subMu, subscribed: &subscribed, terminated: terminated}
	}), ActorEvents); err != nil {
		t.Fatal(err)
	}
	admin := dialRaw(t, p.ca.PEM, p.admin, addr)
	worker := dialRaw(t, p.ca.PEM, p.worker, addr)
	count := func(t *testing.T) uint32 {
		t.Helper()
		g := openGW(t, admin)
		g.send(t, request(t, 1, ActorAPI, &messages.ClusterInfoRequest{}))
		f, err := g.next(t)
		if err != nil {
			t.Fatal(err)
		}
		var info messages.ClusterInfoReply
		if err := proto.Unmarshal(f.Data, &info); err != nil {
			t.Fatal(err)
		}
		return info.Nodes
	}

	t.Run("admin request is answered as admin", func(t *testing.T) {
		g := openGW(t, admin)
		g.send(t, request(t, 41, ActorAPI, &messages.ScaleServiceRequest{Name: "web", Replicas: 2}))
		g.send(t, request(t, 42, ActorAPI, &messages.ClusterInfoRequest{}))
		got := map[uint64]*messages.GatewayFrame{}
		for len(got) < 2 {
			f, err := g.next(t)
			if err != nil {
				t.Fatal(err)
			}
			got[f.Id] = f
		}
		if f := got[41]; f.Kind != messages.GatewayKind_GATEWAY_KIND_REPLY || f.TypeName != wire(&messages.ServiceReply{}) {
			t.Fatalf("answer to the scale: %v", f)
		}
		var info messages.ClusterInfoReply
		if err := proto.Unmarshal(got[42].Data, &info); err != nil {
			t.Fatal(err)
		}
		if info.NodeId != "admin" || info.Version != pki.RoleAdmin || info.Nodes != 1 {
			t.Fatalf("api saw %s/%s after %d scales, want admin/admin after 1", info.NodeId, info.Version, info.Nodes)
		}
	})

	t.Run("worker's admin request is refused and changes nothing", func(t *testing.T) {
		before := count(t)
		g := openGW(t, worker)
		g.send(t, request(t, 1, ActorAPI, &messages.ScaleServiceRequest{Name: "web", Replicas: 9}))
		if f, err := g.next(t); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("worker's scale: frame %v, end %v; want the stream cut with PermissionDenied", f, err)
		}
		if after := count(t); after != before {
			t.Fatalf("scales counted %d before the worker's request, %d after", before, after)
		}
		refusedMu.Lock()
		defer refusedMu.Unlock()
		if len(refused) == 0 || refused[len(refused)-1] != "worker manager/api warren.v1.ScaleServiceRequest" {
			t.Fatalf("OnRefused was told %q", refused)
		}
	})

	t.Run("missing actor answers with a dead letter", func(t *testing.T) {
		g := openGW(t, admin)
		g.send(t, request(t, 5, ActorAPI+"-gone", &messages.ClusterInfoRequest{}))
		// The rules refuse the unknown target before it could be a dead
		// letter; a manager certificate passes the rules and gets one.
		if _, err := g.next(t); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("admin to an actor outside the rules: %v", err)
		}
		m := openGW(t, dialRaw(t, p.ca.PEM, p.manager, addr))
		m.send(t, request(t, 6, "no-such-actor", &messages.ClusterInfoRequest{}))
		f, err := m.next(t)
		if err != nil || f.Id != 6 || f.TypeName != wire(&actor.DeadLetterResponse{}) {
			t.Fatalf("request to a missing actor: %v, %v; want a DeadLetterResponse", f, err)
		}
	})

	t.Run("own relay as subscriber, pushed to and dropped with the stream", func(t *testing.T) {
		g := openGW(t, admin)
		g.send(t, &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: 3})
		f, err := g.next(t)
		if err != nil || f.Kind != messages.GatewayKind_GATEWAY_KIND_RELAY_OPENED || f.Relay.GetAddress() != addr {
			t.Fatalf("open relay: %v, %v", f, err)
		}
		relayPID := f.Relay
		g.send(t, request(t, 4, ActorEvents, &messages.SubscribeEvents{Subscriber: relayPID}))
		var reply, push bool
		for !reply || !push {
			f, err := g.next(t)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case f.Kind == messages.GatewayKind_GATEWAY_KIND_REPLY && f.Id == 4:
				reply = true
			case f.Kind == messages.GatewayKind_GATEWAY_KIND_PUSH && f.Id == 3 && f.TypeName == wire(&messages.Event{}):
				push = true
			default:
				t.Fatalf("unexpected frame %v", f)
			}
		}
		g.cancel()
		select {
		case who := <-terminated:
			if !who.Equal(relayPID) {
				t.Fatalf("hub saw %v terminate, want the relay %v", who, relayPID)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the relay did not stop with its stream")
		}
	})

	// The hub must not be made to message this node's own actors: a client
	// may name its own relays, nothing else here.
	t.Run("subscriber naming another actor of the node is refused", func(t *testing.T) {
		other := openGW(t, admin)
		other.send(t, &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: 1})
		f, err := other.next(t)
		if err != nil {
			t.Fatal(err)
		}
		subMu.Lock()
		n := len(subscribed)
		subMu.Unlock()
		for _, pid := range []*actor.PID{
			actor.NewPID(addr, "manager/store"),
			actor.NewPID(addr, ActorAPI),
			f.Relay, // another session's relay
			actor.NewPID(addr, f.Relay.Id+"x"),
		} {
			g := openGW(t, admin)
			g.send(t, request(t, 1, ActorEvents, &messages.SubscribeEvents{Subscriber: pid}))
			if _, err := g.next(t); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("subscribing %v: %v, want PermissionDenied", pid, err)
			}
		}
		// The same through the transport (no gateway): refused as before.
		if err := admin.send(batchOf(one(t, actor.NewPID(addr, ActorEvents), &messages.SubscribeEvents{Subscriber: f.Relay}))); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("subscribing a relay over the transport: %v, want PermissionDenied", err)
		}
		subMu.Lock()
		defer subMu.Unlock()
		if len(subscribed) != n {
			t.Fatalf("the hub took %v", subscribed[n:])
		}
	})
}

// TestGatewayHostileFrames: malformed or oversized gateway frames, from a
// certificate of each role, cut the stream; the node lives and answers.
func TestGatewayHostileFrames(t *testing.T) {
	p := newPKI(t)
	server := start(t, p.ca.PEM, p.server)
	_, apiStopped := spawnEcho(t, server.sys, ActorAPI)
	_, hubStopped := spawnEcho(t, server.sys, ActorEvents)
	req := func(m proto.Message) *messages.GatewayFrame { return request(t, 1, ActorAPI, m) }
	frames := []struct {
		name   string
		frames []*messages.GatewayFrame
	}{
		{"no kind", []*messages.GatewayFrame{{Id: 1, Target: ActorAPI}}},
		{"a kind only the manager sends", []*messages.GatewayFrame{{Kind: messages.GatewayKind_GATEWAY_KIND_REPLY, Id: 1}}},
		{"an unknown kind", []*messages.GatewayFrame{{Kind: 99, Id: 1}}},
		{"no target", []*messages.GatewayFrame{func() *messages.GatewayFrame { f := req(&messages.ClusterInfoRequest{}); f.Target = ""; return f }()}},
		{"no type name", []*messages.GatewayFrame{func() *messages.GatewayFrame { f := req(&messages.ClusterInfoRequest{}); f.TypeName = ""; return f }()}},
		{"garbage bytes", []*messages.GatewayFrame{func() *messages.GatewayFrame {
			f := req(&messages.ClusterInfoRequest{})
			f.Data = []byte{0xff, 0xff, 0xff}
			return f
		}()}},
		{"watch without watcher", []*messages.GatewayFrame{request(t, 1, ActorEvents, &actor.Watch{})}},
		{"subscribe without subscriber", []*messages.GatewayFrame{request(t, 1, ActorEvents, &messages.SubscribeEvents{})}},
		{"stop the api", []*messages.GatewayFrame{request(t, 1, ActorAPI, &actor.Stop{})}},
		{"poison the hub", []*messages.GatewayFrame{request(t, 1, ActorEvents, &actor.PoisonPill{})}},
		{"the same relay twice", []*messages.GatewayFrame{
			{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: 1}, {Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: 1}}},
		{"too many relays", func() []*messages.GatewayFrame {
			var fs []*messages.GatewayFrame
			for i := 0; i <= maxGatewayRelays; i++ {
				fs = append(fs, &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: uint64(i)})
			}
			return fs
		}()},
		{"over the size limit", []*messages.GatewayFrame{func() *messages.GatewayFrame {
			f := req(&messages.ClusterInfoRequest{})
			f.Data = make([]byte, MaxMessageBytes+1)
			return f
		}()}},
	}
	roles := []struct {
		name string
		id   *pki.Identity
	}{{"admin", p.admin}, {"worker", p.worker}, {"manager", p.manager}}
	admin := dialRaw(t, p.ca.PEM, p.admin, server.addr)
	for _, role := range roles {
		peer := dialRaw(t, p.ca.PEM, role.id, server.addr)
		for _, fr := range frames {
			t.Run(role.name+"/"+fr.name, func(t *testing.T) {
				if role.name == "manager" && (fr.name == "stop the api" || fr.name == "poison the hub") {
					t.Skip("managers may stop actors: they supervise")
				}
				g := openGW(t, peer)
				for _, f := range fr.frames {
					g.send(t, f)
				}
				var err error
				for err == nil {
					_, err = g.next(t)
				}
				if c := status.Code(err); c != codes.PermissionDenied && c != codes.ResourceExhausted {
					t.Fatalf("stream ended with %v, want it cut", err)
				}
				a := openGW(t, admin)
				a.send(t, req(&messages.ClusterInfoRequest{}))
				if f, err := a.next(t); err != nil || f.Kind != messages.GatewayKind_GATEWAY_KIND_REPLY {
					t.Fatalf("api after the frames: %v, %v", f, err)
				}
				if apiStopped.Load() || hubStopped.Load() {
					t.Fatal("an actor stopped")
				}
			})
		}
	}
	t.Run("another method on the port", func(t *testing.T) {
		s, err := admin.conn.NewStream(context.Background(), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/warren.v1.Gateway/Other")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RecvMsg(&messages.GatewayFrame{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("unknown method: %v, want Unimplemented", err)
		}
	})
}

// FuzzGatewayFrame feeds arbitrary gateway frames through the real path:
// TLS, the interceptor, the gateway's checks and decoding, the session and
// delivery to local actors, with a certificate of each role. A panic
// anywhere crashes the fuzzer; the server lives across inputs.
func FuzzGatewayFrame(f *testing.F) {
	p := newPKI(f)
	server := start(f, p.ca.PEM, p.server)
	spawnEcho(f, server.sys, ActorAPI)
	spawnEcho(f, server.sys, ActorEvents)
	peers := []*rawPeer{
		dialRaw(f, p.ca.PEM, p.admin, server.addr),
		dialRaw(f, p.ca.PEM, p.worker, server.addr),
		dialRaw(f, p.ca.PEM, p.manager, server.addr),
	}
	seeds := []*messages.GatewayFrame{
		request(f, 1, ActorAPI, &messages.ClusterInfoRequest{}),
		request(f, 2, ActorEvents, &messages.SubscribeEvents{Subscriber: actor.NewPID(server.addr, "gateway/1/relay-1")}),
		request(f, 3, ActorEvents, &actor.Watch{Watcher: actor.NewPID("10.0.0.9:1", "x")}),
		request(f, 4, ActorAPI, &messages.RegisterNode{NodeId: "wrk-1"}),
		{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: 1},
		{Kind: messages.GatewayKind_GATEWAY_KIND_CLOSE_RELAY, Id: 1},
		{Kind: messages.GatewayKind_GATEWAY_KIND_SEND, Target: ActorEvents, TypeName: wire(&messages.UnsubscribeEvents{}), Data: []byte{10, 0}},
	}
	for _, s := range seeds {
		for role := range peers {
			f.Add(byte(role), mustMarshal(f, s), mustMarshal(f, &messages.GatewayFrame{Kind: messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY, Id: 1}))
		}
	}
	f.Fuzz(func(t *testing.T, role byte, a, b []byte) {
		var frames []*messages.GatewayFrame
		for _, data := range [][]byte{b, a} {
			m := &messages.GatewayFrame{}
			if proto.Unmarshal(data, m) == nil {
				frames = append(frames, m)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := peers[int(role)%len(peers)].conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, GatewayMethod)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range frames {
			if s.SendMsg(m) != nil {
				break
			}
		}
		_ = s.CloseSend()
		// Read until the server ends the stream; an answer that never
		// comes (a request to an actor that does not reply) ends with
		// the context.
		for s.RecvMsg(&messages.GatewayFrame{}) == nil {
		}
	})
}
