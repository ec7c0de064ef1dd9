package remoting

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// wire is the type name protoactor puts on the wire for m, the name
// Allowed is asked about; deriving it keeps the table from testing names
// no message has.
func wire(m proto.Message) string { return string(proto.MessageName(m)) }

func TestAllowed(t *testing.T) {
	const api, events, store, leader, agent, future = "manager/api", "events", "manager/store", "manager/leader", "agent", "future$1f"
	type row struct {
		typeName, target string
		// Whether each role may send it there.
		admin, manager, worker bool
	}
	rows := []row{
		// The management API: admins call it, workers may not.
		{typeName: wire(&messages.CreateServiceRequest{}), target: api, admin: true, manager: true},
		{typeName: wire(&messages.ClusterInfoRequest{}), target: api, admin: true, manager: true},
		{typeName: wire(&messages.RemoveNodeRequest{}), target: api, admin: true, manager: true},
		{typeName: wire(&messages.ImportImageChunk{}), target: api, admin: true, manager: true},
		{typeName: wire(&messages.DebugCrash{}), target: api, admin: true, manager: true},
		// ... and only at the api: not straight at the actors behind it.
		{typeName: wire(&messages.CreateServiceRequest{}), target: store, manager: true},
		{typeName: wire(&messages.PromoteNodeRequest{}), target: leader, manager: true},
		{typeName: wire(&messages.DebugCrash{}), target: leader, manager: true},
		{typeName: wire(&messages.ImportImageChunk{}), target: agent, manager: true},
		// Following events: the hub, and the watch on either end.
		{typeName: wire(&messages.SubscribeEvents{}), target: events, admin: true, manager: true},
		{typeName: wire(&messages.UnsubscribeEvents{}), target: events, admin: true, manager: true},
		{typeName: wire(&actor.Watch{}), target: events, admin: true, manager: true},
		{typeName: wire(&actor.Unwatch{}), target: events, admin: true, manager: true},
		{typeName: wire(&actor.Terminated{}), target: events, admin: true, manager: true},
		// A watch aimed at the api or the store: only managers.
		{typeName: wire(&actor.Watch{}), target: api, manager: true},
		{typeName: wire(&actor.Watch{}), target: store, manager: true},
		{typeName: wire(&actor.Terminated{}), target: api, manager: true},
		// Events are recorded by the hub of the node they happen on.
		{typeName: wire(&messages.Event{}), target: events, manager: true},
		// What a worker says for itself, to the api only.
		{typeName: wire(&messages.RegisterNode{}), target: api, manager: true, worker: true},
		{typeName: wire(&messages.Heartbeat{}), target: api, manager: true, worker: true},
		{typeName: wire(&messages.TaskStatusReport{}), target: api, manager: true, worker: true},
		{typeName: wire(&messages.CertificateRequest{}), target: api, manager: true, worker: true},
		{typeName: wire(&messages.NetworkProgrammed{}), target: api, manager: true, worker: true},
		{typeName: wire(&messages.DrainTask{}), target: api, manager: true, worker: true},
		{typeName: wire(&messages.RegisterNode{}), target: leader, manager: true},
		{typeName: wire(&messages.Heartbeat{}), target: leader + "/nodes/n1", manager: true},
		{typeName: wire(&messages.DrainTask{}), target: leader, manager: true},
		// Answers to a manager's requests.
		{typeName: wire(&messages.ImportImageReply{}), target: future, manager: true, worker: true},
		{typeName: wire(&actor.DeadLetterResponse{}), target: future, admin: true, manager: true, worker: true},
		{typeName: wire(&messages.ImportImageReply{}), target: api, manager: true},
		{typeName: wire(&messages.DrainTaskReply{}), target: future, manager: true},
		{typeName: wire(&messages.RegisterNodeReply{}), target: future, manager: true},
		// Only managers: the store, placement, assignments.
		{typeName: wire(&messages.Propose{}), target: store, manager: true},
		{typeName: wire(&messages.PlaceTasks{}), target: leader + "/scheduler", manager: true},
		{typeName: wire(&messages.StateChanged{}), target: events, manager: true},
		{typeName: wire(&messages.Assignments{}), target: agent, manager: true},
		{typeName: wire(&messages.ResyncRequest{}), target: api, manager: true},
		// Actor system messages that stop, kill or poke actors.
		{typeName: wire(&actor.PoisonPill{}), target: api, manager: true},
		{typeName: wire(&actor.Stop{}), target: events, manager: true},
		{typeName: wire(&actor.Touch{}), target: api, manager: true},
		// Names that only look like the API or a future.
		{typeName: "warren.v2.CreateServiceRequest", target: api, manager: true},
		{typeName: "xwarren.v1.CreateServiceRequest", target: api, manager: true},
		{typeName: "warren.v1.CreateServiceRequestX", target: api, manager: true},
		{typeName: "actor.WatchX", target: events, manager: true},
		{typeName: "", target: api, manager: true},
		{typeName: wire(&messages.ClusterInfoRequest{}), target: "manager/api/x", manager: true},
		{typeName: wire(&actor.DeadLetterResponse{}), target: "futurex", manager: true},
		{typeName: wire(&messages.ClusterInfoRequest{}), target: "", manager: true},
	}
	roles := []struct {
		role string
		want func(row) bool
	}{
		{pki.RoleAdmin, func(r row) bool { return r.admin }},
		{pki.RoleManager, func(r row) bool { return r.manager }},
		{pki.RoleWorker, func(r row) bool { return r.worker }},
		// Anything else is nobody: PeerOf refuses such certificates, and
		// Allowed must not rely on that.
		{"", func(row) bool { return false }},
		{"root", func(row) bool { return false }},
		{"Admin", func(row) bool { return false }},
		{"local", func(row) bool { return false }},
	}
	for _, role := range roles {
		for _, r := range rows {
			t.Run(fmt.Sprintf("%s/%s/%s", role.role, r.target, r.typeName), func(t *testing.T) {
				if got, want := Allowed(role.role, r.target, r.typeName), role.want(r); got != want {
					t.Fatalf("Allowed(%q, %q, %q) = %v, want %v", role.role, r.target, r.typeName, got, want)
				}
			})
		}
	}
}

// echo answers a ClusterInfoRequest with who the transport said sent it:
// Name in NodeId, Role in Version, and a pass-through header in LeaderId.
type echo struct{ stopped *atomic.Bool }

func (e *echo) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Stopping:
		e.stopped.Store(true)
	case *messages.ClusterInfoRequest:
		id := Identity(ctx)
		var trace string
		if h := ctx.MessageHeader(); h != nil {
			trace = h.Get("trace-id")
		}
		ctx.Respond(&messages.ClusterInfoReply{NodeId: id.Name, Version: id.Role, LeaderId: trace})
	}
}

func spawnEcho(t testing.TB, sys *actor.ActorSystem, name string) (*actor.PID, *atomic.Bool) {
	t.Helper()
	stopped := &atomic.Bool{}
	pid, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &echo{stopped: stopped} }), name)
	if err != nil {
		t.Fatal(err)
	}
	return pid, stopped
}

type endpoint struct {
	sys  *actor.ActorSystem
	addr string
}

func quiet(*actor.ActorSystem) *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start runs an actor system with remoting on a free loopback port, as the
// identity id trusting caPEM.
func start(t testing.TB, caPEM []byte, id *pki.Identity) *endpoint {
	t.Helper()
	cfg, err := pki.TLSConfig(caPEM, id)
	if err != nil {
		t.Fatal(err)
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(quiet))
	r, addr, err := Start(sys, Config{Host: "127.0.0.1", Port: 0, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Not graceful: a graceful stop waits on endpoint writers, and a
		// refused one sleeps between its connect retries.
		r.Shutdown(false)
		sys.Shutdown()
	})
	return &endpoint{sys: sys, addr: addr}
}

// pid copies target for use from e: a PID caches the process (here, the
// remote endpoint) of the first actor system that sent to it, so one PID
// shared by the test's systems would send everything over one connection.
func (e *endpoint) pid(target *actor.PID) *actor.PID { return actor.NewPID(target.Address, target.Id) }

// ask sends a ClusterInfoRequest in an envelope carrying header, as a
// sender could forge it, and waits for the reply.
func (e *endpoint) ask(target *actor.PID, header map[string]string, timeout time.Duration) (*messages.ClusterInfoReply, error) {
	f := actor.NewFuture(e.sys, timeout)
	e.sys.Root.Send(e.pid(target), &actor.MessageEnvelope{Header: header, Message: &messages.ClusterInfoRequest{}, Sender: f.PID()})
	res, err := f.Result()
	if err != nil {
		return nil, err
	}
	r, ok := res.(*messages.ClusterInfoReply)
	if !ok {
		return nil, fmt.Errorf("reply is %T", res)
	}
	return r, nil
}

// askEventually retries ask: after a refused message the server has cut
// the stream, and the client's endpoint reconnects on the next send.
func (e *endpoint) askEventually(t *testing.T, target *actor.PID) *messages.ClusterInfoReply {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := e.ask(target, nil, time.Second)
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from %v: %v", target, err)
		}
	}
}

type pkiSet struct {
	ca, other                                     *pki.CA
	server, manager, admin, worker, foreign, root *pki.Identity
}

func newPKI(t testing.TB) *pkiSet {
	t.Helper()
	ca, err := pki.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("c2")
	if err != nil {
		t.Fatal(err)
	}
	iss := func(ca *pki.CA, name, role string) *pki.Identity {
		id, err := ca.Issue(name, role, nil, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	return &pkiSet{
		ca: ca, other: other,
		server:  iss(ca, "mgr-1", pki.RoleManager),
		manager: iss(ca, "mgr-2", pki.RoleManager),
		admin:   iss(ca, "admin", pki.RoleAdmin),
		worker:  iss(ca, "wrk-1", pki.RoleWorker),
		foreign: iss(other, "admin", pki.RoleAdmin),
		root:    iss(ca, "root-1", "root"),
	}
}

func TestRemotingMutualTLS(t *testing.T) {
	p := newPKI(t)
	server := start(t, p.ca.PEM, p.server)
	// The echo actor stands where admins may send: the api's name.
	target, stopped := spawnEcho(t, server.sys, "manager/api")
	remoteTarget := actor.NewPID(server.addr, target.Id)
	admin := start(t, p.ca.PEM, p.admin)
	manager := start(t, p.ca.PEM, p.manager)
	worker := start(t, p.ca.PEM, p.worker)

	t.Run("identity comes from the certificate", func(t *testing.T) {
		tests := []struct {
			name   string
			from   *endpoint
			header map[string]string
			want   pki.Peer
			trace  string
		}{
			{name: "admin", from: admin, want: pki.Peer{Name: "admin", Role: pki.RoleAdmin}},
			{name: "admin forging manager role", from: admin, header: map[string]string{HeaderRole: pki.RoleManager},
				want: pki.Peer{Name: "admin", Role: pki.RoleAdmin}},
			{name: "admin forging role and name", from: admin, header: map[string]string{HeaderRole: pki.RoleManager, HeaderName: "mgr-1"},
				want: pki.Peer{Name: "admin", Role: pki.RoleAdmin}},
			// Only Warren's keys are replaced; other headers pass through.
			{name: "admin with other header", from: admin, header: map[string]string{HeaderRole: "local", "trace-id": "abc"},
				want: pki.Peer{Name: "admin", Role: pki.RoleAdmin}, trace: "abc"},
			{name: "manager forging admin", from: manager, header: map[string]string{HeaderRole: pki.RoleAdmin, HeaderName: "admin"},
				want: pki.Peer{Name: "mgr-2", Role: pki.RoleManager}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := tt.from.ask(remoteTarget, tt.header, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if got := (pki.Peer{Name: r.NodeId, Role: r.Version}); got != tt.want {
					t.Fatalf("server saw %+v, want %+v", got, tt.want)
				}
				if r.LeaderId != tt.trace {
					t.Fatalf("trace-id header = %q, want %q", r.LeaderId, tt.trace)
				}
			})
		}
		// In-process senders have no transport identity, whatever they
		// claim; only the interceptor may speak for a remote peer.
		r, err := server.ask(target, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := (pki.Peer{Name: r.NodeId, Role: r.Version}); got != (pki.Peer{Name: "local", Role: "local"}) {
			t.Fatalf("local sender seen as %+v, want local/local", got)
		}
	})

	t.Run("admin cannot stop actors", func(t *testing.T) {
		// The client learns of the refusal when the server cuts the stream.
		cut := make(chan struct{}, 16)
		sub := admin.sys.EventStream.Subscribe(func(evt any) {
			if e, ok := evt.(*remote.EndpointTerminatedEvent); ok && e.Address == server.addr {
				select {
				case cut <- struct{}{}:
				default:
				}
			}
		})
		defer admin.sys.EventStream.Unsubscribe(sub)
		tests := []struct {
			name string
			send func()
		}{
			{"poison pill", func() { admin.sys.Root.Poison(admin.pid(remoteTarget)) }},
			{"stop", func() { admin.sys.Root.Stop(admin.pid(remoteTarget)) }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				admin.askEventually(t, remoteTarget) // a live stream to refuse
				for len(cut) > 0 {
					<-cut
				}
				tt.send()
				select {
				case <-cut:
				case <-time.After(10 * time.Second):
					t.Fatal("server did not cut the stream carrying the refused message")
				}
				r := admin.askEventually(t, remoteTarget)
				if r.Version != pki.RoleAdmin {
					t.Fatalf("answer after refusal seen as role %q", r.Version)
				}
				if stopped.Load() {
					t.Fatal("echo actor stopped")
				}
			})
		}
	})

	// The control: the same message from a manager is delivered, so the
	// refusal above is the policy and not a message lost on the way.
	t.Run("manager poison pill is delivered", func(t *testing.T) {
		victim, victimStopped := spawnEcho(t, server.sys, "victim")
		remoteVictim := actor.NewPID(server.addr, victim.Id)
		manager.askEventually(t, remoteVictim)
		manager.sys.Root.Poison(manager.pid(remoteVictim))
		deadline := time.Now().Add(10 * time.Second)
		for !victimStopped.Load() {
			if time.Now().After(deadline) {
				t.Fatal("manager's poison pill did not stop the victim")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if stopped.Load() {
			t.Fatal("echo actor stopped")
		}
	})

	t.Run("worker cannot call the API", func(t *testing.T) {
		if r, err := worker.ask(remoteTarget, map[string]string{HeaderRole: pki.RoleAdmin}, 2*time.Second); err == nil {
			t.Fatalf("worker got an API answer: %v", r)
		}
		if r, err := admin.ask(remoteTarget, nil, 5*time.Second); err != nil || r.Version != pki.RoleAdmin {
			t.Fatalf("admin after worker: %v, %v", r, err)
		}
	})

	// A request to an actor that is gone is answered by the receiver's
	// dead-letter process with actor.DeadLetterResponse, so the asker fails
	// fast instead of waiting out its timeout. When a manager asks a worker
	// (an image import to an agent that is restarting, say), that answer
	// must not cost the worker its connection to the manager: heartbeats
	// and status reports ride the same stream.
	t.Run("worker answers a request for a missing actor", func(t *testing.T) {
		cut := make(chan struct{}, 1)
		sub := worker.sys.EventStream.Subscribe(func(evt any) {
			if e, ok := evt.(*remote.EndpointTerminatedEvent); ok && e.Address == server.addr {
				select {
				case cut <- struct{}{}:
				default:
				}
			}
		})
		defer worker.sys.EventStream.Unsubscribe(sub)
		missing := actor.NewPID(worker.addr, "no-such-actor")
		_, err := server.ask(missing, nil, 3*time.Second)
		select {
		case <-cut:
			t.Fatalf("the worker's stream was cut for answering with a dead letter: %v", err)
		default:
		}
		if !errors.Is(err, actor.ErrDeadLetter) {
			t.Fatalf("request to a missing actor on a worker: %v, want %v", err, actor.ErrDeadLetter)
		}
	})

	t.Run("untrusted clients get no answer", func(t *testing.T) {
		tests := []struct {
			name  string
			caPEM []byte
			id    *pki.Identity
		}{
			// Trusts the cluster CA, but its own leaf is another CA's.
			{"leaf from another CA", p.ca.PEM, p.foreign},
			{"member of another cluster", p.other.PEM, p.foreign},
			{"cluster CA leaf without a Warren role", p.ca.PEM, p.root},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				intruder := start(t, tt.caPEM, tt.id)
				r, err := intruder.ask(remoteTarget, nil, 2*time.Second)
				if err == nil {
					t.Fatalf("intruder got an answer: %v", r)
				}
				if !errors.Is(err, actor.ErrTimeout) && !errors.Is(err, actor.ErrDeadLetter) {
					t.Fatalf("intruder's request failed with %v, want a timeout or dead letter", err)
				}
				intruder.sys.Root.Poison(intruder.pid(remoteTarget))
				// The server still answers its members.
				if r, err := admin.ask(remoteTarget, nil, 5*time.Second); err != nil || r.Version != pki.RoleAdmin {
					t.Fatalf("admin after intruder: %v, %v", r, err)
				}
				if stopped.Load() {
					t.Fatal("echo actor stopped")
				}
			})
		}
	})
}
