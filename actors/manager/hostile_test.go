package manager

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// presentImages is a fake image store that has every image: the hostile
// tests exercise authorisation, not images, and run without containerd.
type presentImages struct{}

func (presentImages) ImportImage(context.Context, io.Reader) ([]string, error) { return nil, nil }
func (presentImages) PullImage(context.Context, string, runtime.PullOptions) error {
	return nil
}
func (presentImages) EnsureImage(context.Context, string) error    { return nil }
func (presentImages) ListImages(context.Context) ([]string, error) { return nil, nil }

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cluster is one real manager: raft on disk, the manager actor tree, the
// events hub, and remoting with mutual TLS on loopback.
type cluster struct {
	ca   *pki.CA
	st   *store.Store
	sys  *actor.ActorSystem
	addr string
}

func startManager(t *testing.T) *cluster {
	t.Helper()
	ca, err := pki.NewCA("hostile")
	if err != nil {
		t.Fatal(err)
	}
	return startManagerWith(t, ca, ca)
}

// startManagerWith starts the manager with a certificate from signer (the
// root itself, or an intermediate of it) trusting root.
func startManagerWith(t *testing.T, root, signer *pki.CA) *cluster {
	t.Helper()
	id, err := signer.Issue("mgr-1", pki.RoleManager, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.TLSConfig(root.PEM, id)
	if err != nil {
		t.Fatal(err)
	}
	sys := quietSystem()
	raftAddr := freeAddr(t)
	st, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "raft"), NodeID: "mgr-1", Bind: raftAddr, Advertise: raftAddr,
		TLS: tlsCfg, Log: zap.NewNop(), OnChange: func(sc *messages.StateChanged) { sys.EventStream.Publish(sc) }}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Root.SpawnNamed(events.NewHub("mgr-1", filepath.Join(t.TempDir(), "events.db"), zap.NewNop(), events.Retention{}), NameEvents); err != nil {
		t.Fatal(err)
	}
	log := zap.NewNop()
	if _, err := Start(sys, Config{Store: st, Log: log,
		Leader: LeaderConfig{Store: st, Log: log, NodeDownAfter: time.Hour, ResyncEvery: time.Hour, MaxDisconnect: time.Hour},
		API:    APIConfig{Store: st, Images: presentImages{}, NodeID: "mgr-1", CA: signer, UploadDir: t.TempDir(), Log: log},
	}); err != nil {
		t.Fatal(err)
	}
	r, addr, err := remoting.Start(sys, remoting.Config{Host: "127.0.0.1", Port: 0, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(false); sys.Shutdown() })
	return &cluster{ca: signer, st: st, sys: sys, addr: addr}
}

// peer is another process's actor system holding a certificate the
// cluster's CA issued.
type peer struct {
	sys *actor.ActorSystem
	c   *cluster
}

func (c *cluster) peer(t *testing.T, name, role string) *peer {
	t.Helper()
	id, err := c.ca.Issue(name, role, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.TLSConfig(c.ca.PEM, id)
	if err != nil {
		t.Fatal(err)
	}
	sys := quietSystem()
	r, _, err := remoting.Start(sys, remoting.Config{Host: "127.0.0.1", Port: 0, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(false); sys.Shutdown() })
	return &peer{sys: sys, c: c}
}

// ask sends m to the manager's actor id and waits for an answer; a refused
// message gets none (the stream is cut), which is a timeout here.
func (p *peer) ask(id string, m proto.Message, timeout time.Duration) (any, error) {
	return p.sys.Root.RequestFuture(actor.NewPID(p.c.addr, id), m, timeout).Result()
}

func (p *peer) send(id string, m any) { p.sys.Root.Send(actor.NewPID(p.c.addr, id), m) }

// local asks as the node's own process does (trusted, role "local").
func (c *cluster) local(t *testing.T, id string, m proto.Message) any {
	t.Helper()
	res, err := c.sys.Root.RequestFuture(actor.NewPID(c.sys.Address(), id), m, 10*time.Second).Result()
	if err != nil {
		t.Fatalf("local %T: %v", m, err)
	}
	return res
}

func (c *cluster) register(t *testing.T, node string) {
	t.Helper()
	desc := &messages.NodeDescription{Hostname: node, Addr: freeAddr(t), Os: "linux", Arch: "amd64", WgPublicKey: "wg-key-of-" + node,
		Resources: &messages.Resources{NanoCpus: 2e9, MemoryBytes: 1 << 30}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The manager's actors start in the background: retry until the
		// leader's take the registration.
		res, err := c.sys.Root.RequestFuture(actor.NewPID(c.sys.Address(), NameAPI),
			&messages.RegisterNode{NodeId: node, Role: messages.NodeRole_NODE_ROLE_WORKER, Description: desc}, 5*time.Second).Result()
		r, _ := res.(*messages.RegisterNodeReply)
		if err == nil && r != nil && r.Error == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("register %s: %v", node, r.GetError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func voters(t *testing.T, st *store.Store) []string {
	t.Helper()
	servers, err := st.Servers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range servers {
		if s.Voter {
			out = append(out, s.ID)
		}
	}
	return out
}

// snapshot is what a hostile message must not change.
func snapshot(t *testing.T, c *cluster) string {
	t.Helper()
	st := c.st.State
	s := fmt.Sprintf("index=%d voters=%v nodes=%d", st.Index(), voters(t, c.st), len(st.Nodes()))
	for _, n := range st.Nodes() {
		s += fmt.Sprintf(" %s:%v/%v/%s", n.Id, n.Spec.GetRole(), n.GetStatus().GetState(), n.Description.GetWgPublicKey())
	}
	for _, tk := range st.Tasks(store.TaskFilter{}) {
		s += fmt.Sprintf(" %s@%s:%v/%s", tk.Id[:6], tk.NodeId, tk.GetStatus().GetState(), tk.GetStatus().GetIp())
	}
	return s
}

// TestHostilePeer is issue 10's trust holes, tried by peers holding real
// certificates this cluster issued, against a real manager (raft on disk,
// the actor tree, mTLS remoting). Each attack is refused and leaves the
// replicated state exactly as it was; each control shows the same path
// works for the rightful sender, so a refusal is the policy and not a
// broken harness.
func TestHostilePeer(t *testing.T) {
	c := startManager(t)
	c.register(t, "wrk-1")
	c.register(t, "wrk-2")
	svc := c.local(t, NameAPI, &messages.CreateServiceRequest{Spec: &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 2,
		Constraints: []string{"node.role==worker"}}}).(*messages.ServiceReply)
	if svc.Error != nil {
		t.Fatal(svc.Error)
	}
	// Wait for one task on each worker, and make wrk-2's run with an
	// address in its subnet, as its agent would report it.
	var victim *messages.Task
	deadline := time.Now().Add(15 * time.Second)
	for victim == nil {
		for _, tk := range c.st.State.Tasks(store.TaskFilter{NodeID: "wrk-2"}) {
			victim = tk
		}
		if time.Now().After(deadline) {
			t.Fatalf("no task placed on wrk-2: %s", snapshot(t, c))
		}
		time.Sleep(20 * time.Millisecond)
	}
	subnet2 := c.st.State.Node("wrk-2").Subnet
	ip2 := hostIn(t, subnet2, 5)
	c.local(t, NameAPI, &messages.Heartbeat{NodeId: "wrk-2"}) // the leader's node actor is up
	c.sys.Root.Send(actor.NewPID(c.sys.Address(), NameAPI), &messages.TaskStatusReport{NodeId: "wrk-2", Updates: []*messages.TaskStatusUpdate{
		{TaskId: victim.Id, Epoch: victim.Epoch, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Ip: ip2}}}})
	waitFor(t, "wrk-2's task running", func() bool { return c.st.State.Task(victim.Id).GetStatus().GetIp() == ip2 })
	var own *messages.Task
	for _, tk := range c.st.State.Tasks(store.TaskFilter{NodeID: "wrk-1"}) {
		own = tk
	}
	if own == nil {
		t.Fatalf("no task placed on wrk-1: %s", snapshot(t, c))
	}

	worker := c.peer(t, "wrk-1", pki.RoleWorker)
	admin := c.peer(t, "admin", pki.RoleAdmin)

	// control is a request the worker may make: its own heartbeat. Its
	// answer also means every message it sent before has been handled.
	control := func(t *testing.T) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			res, err := worker.ask(NameAPI, &messages.Heartbeat{NodeId: "wrk-1"}, time.Second)
			if _, ok := res.(*messages.Heartbeat); err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the worker's own heartbeat is not answered: %v %v", res, err)
			}
		}
	}
	control(t)

	status := func(tk *messages.Task, state messages.TaskState, ip string) *messages.TaskStatusReport {
		return &messages.TaskStatusReport{NodeId: tk.NodeId, Updates: []*messages.TaskStatusUpdate{
			{TaskId: tk.Id, Epoch: tk.Epoch, Status: &messages.TaskStatus{State: state, Ip: ip}}}}
	}
	const failed, running = messages.TaskState_TASK_STATE_FAILED, messages.TaskState_TASK_STATE_RUNNING
	mgrRole := messages.NodeRole_NODE_ROLE_MANAGER
	attacks := []struct {
		name   string
		from   *peer
		target string
		msg    proto.Message
	}{
		// Hole 1 and 2: worker to manager (and raft voter) in one message.
		{"worker registers itself as a manager, at the leader", worker, NameLeader, &messages.RegisterNode{NodeId: "wrk-1", Role: mgrRole, Description: &messages.NodeDescription{RaftAddr: "127.0.0.1:1"}}},
		{"worker registers itself as a manager, at the api", worker, NameAPI, &messages.RegisterNode{NodeId: "wrk-1", Role: mgrRole, Description: &messages.NodeDescription{RaftAddr: "127.0.0.1:1"}}},
		{"worker adds a phantom manager", worker, NameLeader, &messages.RegisterNode{NodeId: "phantom", Role: mgrRole, Description: &messages.NodeDescription{RaftAddr: "127.0.0.1:2"}}},
		// Hole 3: speaking for another node.
		{"worker registers a fake node", worker, NameAPI, &messages.RegisterNode{NodeId: "fake-1", Description: &messages.NodeDescription{Addr: "127.0.0.1:3"}}},
		{"worker fails another node's task, at the api", worker, NameAPI, status(victim, failed, "")},
		{"worker fails another node's task, at the leader", worker, NameLeader, status(victim, failed, "")},
		{"worker fails another node's task, at its node actor", worker, NameLeader + "/nodes/wrk-2", status(victim, failed, "")},
		{"worker drains another node's task", worker, NameLeader, &messages.DrainTask{NodeId: "wrk-2", TaskId: victim.Id}},
		{"worker confirms programming for another node", worker, NameAPI, &messages.NetworkProgrammed{NodeId: "wrk-2", Index: 1 << 40}},
		{"worker re-registers another node with its own key", worker, NameAPI, &messages.RegisterNode{NodeId: "wrk-2", Description: &messages.NodeDescription{Addr: "127.0.0.1:4", WgPublicKey: "AAAA"}}},
		{"worker announces another node's WireGuard key for itself", worker, NameAPI, &messages.RegisterNode{NodeId: "wrk-1", Description: &messages.NodeDescription{Addr: "127.0.0.1:6", WgPublicKey: "wg-key-of-wrk-2"}}},
		// Hole 4: traffic redirection through a reported address.
		{"worker reports its task at another node's address", worker, NameAPI, status(own, running, ip2)},
		{"worker reports its task at a host address", worker, NameAPI, status(own, running, "127.0.0.1")},
		{"worker reports an IPv6 task address", worker, NameAPI, status(own, running, "fd00::5")},
		// The store and the leader's actors are not the node protocol.
		{"worker proposes to the store", worker, NameStore, &messages.Propose{Command: &messages.Command{Op: &messages.Command_RemoveNode{RemoveNode: &messages.RemoveNode{NodeId: "wrk-2"}}}}},
		{"worker calls the management API", worker, NameAPI, &messages.RemoveNodeRequest{Node: "wrk-2", Force: true}},
		{"worker promotes itself", worker, NameAPI, &messages.PromoteNodeRequest{Node: "wrk-1"}},
		{"admin proposes to the store", admin, NameStore, &messages.Propose{Command: &messages.Command{Op: &messages.Command_RemoveNode{RemoveNode: &messages.RemoveNode{NodeId: "wrk-2"}}}}},
		{"admin speaks the node protocol", admin, NameAPI, &messages.RegisterNode{NodeId: "admin", Role: mgrRole, Description: &messages.NodeDescription{RaftAddr: "127.0.0.1:5"}}},
		{"admin goes around the api to the leader", admin, NameLeader, &messages.PromoteNodeRequest{Node: "wrk-1"}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			before := snapshot(t, c)
			res, _ := a.from.ask(a.target, a.msg, time.Second)
			if r, ok := res.(*messages.RegisterNodeReply); ok && r.Error == nil {
				t.Fatalf("registration accepted: %v", r)
			}
			if r, ok := res.(*messages.NodeReply); ok && r.Error == nil {
				t.Fatalf("node request accepted: %v", r)
			}
			control(t)
			time.Sleep(100 * time.Millisecond) // a write it started would have committed by now
			if after := snapshot(t, c); after != before {
				t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	// Hole 6: a watch without a watcher, twenty times (a supervisor gives
	// up after ten restarts), at the api and the store; then the api still
	// answers.
	t.Run("watch without a watcher does not stop the api", func(t *testing.T) {
		for _, from := range []*peer{worker, admin} {
			for i := 0; i < 20; i++ {
				from.send(NameAPI, &actor.Watch{})
				from.send(NameStore, &actor.Watch{})
			}
		}
		control(t)
		res, err := admin.ask(NameAPI, &messages.ClusterInfoRequest{}, 5*time.Second)
		if _, ok := res.(*messages.ClusterInfoReply); err != nil || !ok {
			t.Fatalf("api after the watches: %v %v", res, err)
		}
	})

	// Hole 3's "keep a dead node up": wrk-2 is down; a heartbeat in its
	// name from wrk-1 must not bring it back.
	t.Run("worker keeps another, down, node up", func(t *testing.T) {
		n := c.st.State.Node("wrk-2")
		n.Status = &messages.NodeStatus{State: messages.NodeState_NODE_STATE_DOWN, Message: "no heartbeat (test)"}
		if r, err := c.st.Apply(&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n}}}, 5*time.Second); err != nil || r.Error != nil {
			t.Fatalf("mark wrk-2 down: %v %v", err, r.GetError())
		}
		// Its task is replaced on wrk-1: wait until the state is still.
		for last := uint64(0); last != c.st.State.Index(); {
			last = c.st.State.Index()
			time.Sleep(500 * time.Millisecond)
		}
		before := snapshot(t, c)
		for _, target := range []string{NameAPI, NameLeader, NameLeader + "/nodes/wrk-2"} {
			worker.send(target, &messages.Heartbeat{NodeId: "wrk-2"})
		}
		control(t)
		time.Sleep(100 * time.Millisecond)
		if after := snapshot(t, c); after != before {
			t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	// Hole 7: events attributed to anyone. Only managers may send events to
	// a hub; a local subscriber sees none of the peers' forged ones, and
	// does see one published on the node itself (the control).
	t.Run("peers cannot forge events", func(t *testing.T) {
		got := make(chan string, 64)
		collector := c.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
			// The hub sends batches; a few need no ack.
			if b, ok := ctx.Message().(*messages.EventBatch); ok {
				for _, ev := range b.Events {
					got <- ev.Type
				}
			}
		}))
		if _, err := c.sys.Root.RequestFuture(actor.NewPID(c.sys.Address(), NameEvents),
			&messages.SubscribeEvents{Subscriber: collector, TypePrefixes: []string{"forged"}}, 5*time.Second).Result(); err != nil {
			t.Fatal(err)
		}
		for _, from := range []*peer{worker, admin} {
			for i := 0; i < 10; i++ {
				from.send(NameEvents, &messages.Event{Type: "forged.by-peer", Node: "mgr-1", Message: strings.Repeat("x", 1<<20)})
			}
		}
		control(t)
		c.sys.EventStream.Publish(&messages.Event{Type: "forged.control"})
		select {
		case typ := <-got:
			if typ != "forged.control" {
				t.Fatalf("the hub took a peer's event %q", typ)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the control event did not arrive")
		}
	})

	// Hole 1's second half: after all that the worker's certificate
	// request still gets a worker certificate and no key.
	t.Run("certificate request gets the state's role", func(t *testing.T) {
		res, err := worker.ask(NameAPI, &messages.CertificateRequest{NodeId: "wrk-1", CsrPem: csr(t, "wrk-1")}, 5*time.Second)
		r, _ := res.(*messages.CertificateReply)
		if err != nil || r == nil || r.Error != nil {
			t.Fatalf("certificate request: %v %v", res, err)
		}
		if r.Role != messages.NodeRole_NODE_ROLE_WORKER {
			t.Fatalf("worker got role %v", r.Role)
		}
		if b, _ := proto.Marshal(r); strings.Contains(string(b), "PRIVATE KEY") {
			t.Fatal("worker's certificate reply carries a private key")
		}
		res, _ = worker.ask(NameAPI, &messages.CertificateRequest{NodeId: "wrk-2", CsrPem: csr(t, "wrk-2")}, 5*time.Second)
		if r, _ := res.(*messages.CertificateReply); r == nil || r.Error == nil || len(r.CertPem) > 0 {
			t.Fatalf("worker got another node's certificate: %v", res)
		}
	})

	// The controls for the node protocol: the rightful node's reports do
	// change the state, through the same path.
	t.Run("control: wrk-1 reports its own task", func(t *testing.T) {
		ip1 := hostIn(t, c.st.State.Node("wrk-1").Subnet, 7)
		worker.send(NameAPI, status(own, running, ip1))
		waitFor(t, "own report applied", func() bool { return c.st.State.Task(own.Id).GetStatus().GetIp() == ip1 })
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hostIn(t *testing.T, subnet string, n byte) string {
	t.Helper()
	_, ipn, err := net.ParseCIDR(subnet)
	if err != nil {
		t.Fatalf("subnet %q: %v", subnet, err)
	}
	ip := ipn.IP.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+n).String()
}

func csr(t *testing.T, name string) []byte {
	t.Helper()
	_, csrPEM, err := pki.NewCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	return csrPEM
}

// TestReservedPorts: a service may not publish a port Warren itself uses
// on any node (issue 10, hole 8): the defaults, and the ports a node was
// started with. A refusal changes nothing.
func TestReservedPorts(t *testing.T) {
	c := startManager(t)
	c.register(t, "wrk-1")
	// A node started with --port 7000 and a WireGuard endpoint on 7001.
	desc := &messages.NodeDescription{Hostname: "odd", Addr: "127.0.0.1:7000", RaftAddr: "127.0.0.1:7002", WgEndpoint: "127.0.0.1:7001"}
	if r := c.local(t, NameAPI, &messages.RegisterNode{NodeId: "odd", Description: desc}).(*messages.RegisterNodeReply); r.Error != nil {
		t.Fatal(r.Error)
	}
	tests := []struct {
		name  string
		port  uint32
		proto string
		want  string // "" when accepted
	}{
		{"remoting default", 4280, "", "reserved"},
		{"raft default", 4281, "tcp", "reserved"},
		{"join default", 4282, "", "reserved"},
		{"wireguard default", 51820, "udp", "reserved"},
		{"dns", 53, "udp", "reserved"},
		{"a node's --port", 7000, "", "reserved"},
		{"a node's raft port", 7002, "", "reserved"},
		{"a node's WireGuard endpoint", 7001, "udp", "reserved"},
		{"the WireGuard port over tcp is free", 7001, "tcp", ""},
		{"an ordinary port", 8080, "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.st.State.Index()
			r := c.local(t, NameAPI, &messages.CreateServiceRequest{Spec: &messages.ServiceSpec{Name: fmt.Sprintf("svc%d", i), Image: "demo:v1", Replicas: 1,
				Ports: []*messages.PortConfig{{TargetPort: 80, PublishedPort: tt.port, Protocol: tt.proto}}}}).(*messages.ServiceReply)
			switch {
			case tt.want == "" && r.Error != nil:
				t.Fatalf("refused: %v", r.Error)
			case tt.want != "" && (r.Error == nil || !strings.Contains(r.Error.Message, tt.want)):
				t.Fatalf("got %v, want an error containing %q", r.Error, tt.want)
			case tt.want != "" && c.st.State.Index() != before:
				t.Fatalf("a refused spec changed the state: index %d -> %d", before, c.st.State.Index())
			}
		})
	}
}
