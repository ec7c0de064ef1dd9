package remoting

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// rawPeer speaks protoactor's wire protocol directly, with a real cluster
// certificate, so a test can send what protoactor's own writer never would:
// the frames a hostile peer crafts.
type rawPeer struct {
	conn *grpc.ClientConn
}

func dialRaw(t testing.TB, caPEM []byte, id *pki.Identity, addr string) *rawPeer {
	t.Helper()
	cfg, err := pki.TLSConfig(caPEM, id)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawPeer{conn: conn}
}

// send opens a stream, sends msgs, closes its side and waits until the
// server has finished with the stream, so that whatever the frames did has
// happened. It returns the server's verdict: nil if it read to the end,
// else the status it cut the stream with.
func (p *rawPeer) send(msgs ...*remote.RemoteMessage) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := remote.NewRemotingClient(p.conn).Receive(ctx)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the server cut the stream; Recv below says why
		}
	}
	_ = s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func batchOf(b *remote.MessageBatch) *remote.RemoteMessage {
	return &remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: b}}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// one is a well-formed batch of a single message to target.
func one(t testing.TB, target *actor.PID, m proto.Message) *remote.MessageBatch {
	return &remote.MessageBatch{
		TypeNames: []string{wire(m)},
		Targets:   []*actor.PID{target},
		Envelopes: []*remote.MessageEnvelope{{TypeId: 0, Target: 0, MessageData: mustMarshal(t, m)}},
	}
}

// TestHostileFrames sends, with real certificates of each role, the frames
// that crashed a node or stopped its api on b7bdeb6 (issue 10, holes 5 and
// 6): every one is refused, the process lives, and the actor it aimed at
// still answers.
func TestHostileFrames(t *testing.T) {
	p := newPKI(t)
	server := start(t, p.ca.PEM, p.server)
	api, apiStopped := spawnEcho(t, server.sys, "manager/api")
	hub, hubStopped := spawnEcho(t, server.sys, "events")
	admin := start(t, p.ca.PEM, p.admin)
	remoteAPI := actor.NewPID(server.addr, api.Id)
	remoteHub := actor.NewPID(server.addr, hub.Id)
	sender := &actor.PID{Address: "10.0.0.9:4280", Id: "future$1"}

	frames := []struct {
		name  string
		batch func() *remote.MessageBatch
	}{
		{"negative type index", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].TypeId = -1
			return b
		}},
		{"type index past the table", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].TypeId = 7
			return b
		}},
		{"negative target index", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].Target = -3
			return b
		}},
		{"target index past the table", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].Target = 1
			return b
		}},
		{"sender index past the table", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].Sender = 2
			b.Senders = []*actor.PID{sender}
			return b
		}},
		{"negative sender index", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].Sender = -1
			return b
		}},
		{"serializer index past the table", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].SerializerId = 9
			return b
		}},
		{"negative serializer index", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Envelopes[0].SerializerId = -1
			return b
		}},
		{"empty target pid", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Targets = []*actor.PID{{}}
			return b
		}},
		{"terminated without who", func() *remote.MessageBatch { return one(t, remoteHub, &actor.Terminated{}) }},
		{"watch without watcher, to the api", func() *remote.MessageBatch { return one(t, remoteAPI, &actor.Watch{}) }},
		{"watch without watcher, to the hub", func() *remote.MessageBatch { return one(t, remoteHub, &actor.Watch{}) }},
		{"unwatch without watcher", func() *remote.MessageBatch { return one(t, remoteHub, &actor.Unwatch{}) }},
		{"subscribe without subscriber", func() *remote.MessageBatch { return one(t, remoteHub, &messages.SubscribeEvents{}) }},
		{"watch naming the server's own actor", func() *remote.MessageBatch {
			return one(t, remoteHub, &actor.Watch{Watcher: actor.NewPID(server.addr, "manager/store")})
		}},
		{"sender is the server's own actor", func() *remote.MessageBatch {
			b := one(t, remoteAPI, &messages.ClusterInfoRequest{})
			b.Senders = []*actor.PID{actor.NewPID(server.addr, "manager/store")}
			b.Envelopes[0].Sender = 1
			return b
		}},
	}
	roles := []struct {
		name string
		id   *pki.Identity
	}{{"admin", p.admin}, {"worker", p.worker}, {"manager", p.manager}}
	for _, role := range roles {
		peer := dialRaw(t, p.ca.PEM, role.id, server.addr)
		for _, f := range frames {
			t.Run(role.name+"/"+f.name, func(t *testing.T) {
				if role.name == "manager" && (f.name == "sender is the server's own actor" || f.name == "watch naming the server's own actor") {
					t.Skip("managers may name this node's actors: they forward and supervise")
				}
				// Twenty times: a supervisor gives up after ten restarts.
				for i := 0; i < 20; i++ {
					err := peer.send(batchOf(f.batch()))
					if status.Code(err) != codes.PermissionDenied {
						t.Fatalf("frame %d: server answered %v, want the stream cut with PermissionDenied", i, err)
					}
				}
				if r := admin.askEventually(t, remoteAPI); r.Version != pki.RoleAdmin {
					t.Fatalf("api answer after the frames seen as %q", r.Version)
				}
				if apiStopped.Load() || hubStopped.Load() {
					t.Fatal("an actor stopped")
				}
			})
		}
		t.Run(role.name+"/unary ListProcesses", func(t *testing.T) {
			_, err := remote.NewRemotingClient(peer.conn).ListProcesses(context.Background(), &remote.ListProcessesRequest{})
			if status.Code(err) != codes.Unimplemented {
				t.Fatalf("ListProcesses: %v, want Unimplemented", err)
			}
		})
	}

	// The control: a well-formed frame on the same raw path is read, so the
	// refusals above are the policy, not a harness that fails everything.
	t.Run("well-formed frame is read", func(t *testing.T) {
		peer := dialRaw(t, p.ca.PEM, p.admin, server.addr)
		if err := peer.send(batchOf(one(t, remoteAPI, &messages.ClusterInfoRequest{}))); err != nil {
			t.Fatalf("well-formed frame: %v", err)
		}
	})

	t.Run("oversized frame is refused and the node lives", func(t *testing.T) {
		peer := dialRaw(t, p.ca.PEM, p.admin, server.addr)
		big := one(t, remoteAPI, &messages.ClusterInfoRequest{})
		big.Envelopes[0].MessageData = make([]byte, MaxMessageBytes+1)
		if err := peer.send(batchOf(big)); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("oversized frame: %v, want ResourceExhausted", err)
		}
		admin.askEventually(t, remoteAPI)
	})
}

// FuzzRemotingFrame feeds arbitrary frames through the real remoting path:
// TLS, the guard, and protoactor's endpoint reader, with a certificate of
// each role. A panic anywhere in handling a frame crashes the fuzzer. The
// server lives across inputs, so a frame that breaks it for later ones
// shows too.
func FuzzRemotingFrame(f *testing.F) {
	p := newPKI(f)
	server := start(f, p.ca.PEM, p.server)
	api, _ := spawnEcho(f, server.sys, "manager/api")
	spawnEcho(f, server.sys, "events")
	remoteAPI := actor.NewPID(server.addr, api.Id)
	peers := []*rawPeer{
		dialRaw(f, p.ca.PEM, p.admin, server.addr),
		dialRaw(f, p.ca.PEM, p.worker, server.addr),
		dialRaw(f, p.ca.PEM, p.manager, server.addr),
	}
	seeds := []*remote.MessageBatch{
		one(f, remoteAPI, &messages.ClusterInfoRequest{}),
		one(f, actor.NewPID(server.addr, "events"), &actor.Terminated{Who: actor.NewPID("10.0.0.9:1", "x")}),
		one(f, remoteAPI, &actor.Watch{Watcher: actor.NewPID("10.0.0.9:1", "x")}),
		one(f, remoteAPI, &messages.RegisterNode{NodeId: "wrk-1"}),
		one(f, remoteAPI, &messages.Heartbeat{NodeId: "wrk-1"}),
	}
	for _, b := range seeds {
		for role := range peers {
			f.Add(byte(role), mustMarshal(f, batchOf(b)))
		}
	}
	f.Add(byte(0), mustMarshal(f, &remote.RemoteMessage{MessageType: &remote.RemoteMessage_ConnectRequest{
		ConnectRequest: &remote.ConnectRequest{ConnectionType: &remote.ConnectRequest_ServerConnection{ServerConnection: &remote.ServerConnection{SystemId: "x", Address: "y"}}}}}))
	f.Fuzz(func(t *testing.T, role byte, frame []byte) {
		m := &remote.RemoteMessage{}
		if err := proto.Unmarshal(frame, m); err != nil {
			return
		}
		_ = peers[int(role)%len(peers)].send(m)
	})
}
