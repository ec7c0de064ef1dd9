package manager

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// The multi-manager harness: several real managers in one test process,
// each with its own actor system, raft on disk (store.Open in t.TempDir over
// the real mutual-TLS transport on loopback), the manager actor tree from
// Start and remoting with mutual TLS, all with certificates from one cluster
// CA. Managers join the way a joined manager does: by registering at the
// leader's api, which makes them raft voters. Nodes that run tasks are fake
// worker agents (fakeWorker), since the manager's actors only talk to them.

// harnessOpts tunes a test cluster.
type harnessOpts struct {
	managers      int
	workers       []string      // fake worker agents, registered once the managers are
	nodeDownAfter time.Duration // 0: an hour (no node goes down by itself)
}

// testCluster is a set of real managers sharing one CA, the fake workers
// registered with them, and an admin (the CLI).
type testCluster struct {
	t       *testing.T
	ca      *pki.CA
	opts    harnessOpts
	mgrs    []*testManager
	workers map[string]*fakeWorker
	cli     *admin
}

// testManager is one manager. stop and restart take its manager down and
// up again on the same raft data, as a process restart would, except that
// its actor system and remoting endpoint stay (see endpointPool).
type testManager struct {
	c        *testCluster
	id       string
	raftDir  string
	raftAddr string
	addr     string // actor address, host:port
	tls      *tls.Config
	sys      *actor.ActorSystem

	mu  sync.Mutex // guards the fields below against Cleanup racing a test
	up  bool
	st  *store.Store
	pid *actor.PID // the manager actor
}

func startCluster(t *testing.T, opts harnessOpts) *testCluster {
	t.Helper()
	if opts.managers == 0 {
		opts.managers = 1
	}
	if opts.nodeDownAfter == 0 {
		opts.nodeDownAfter = time.Hour
	}
	pool := endpoints(t)
	if opts.managers > len(pool.mgrs) {
		t.Fatalf("the endpoint pool has %d managers", len(pool.mgrs))
	}
	c := &testCluster{t: t, ca: pool.ca, opts: opts, workers: map[string]*fakeWorker{}, cli: &admin{sys: pool.admin.sys}}
	for i, ep := range pool.mgrs[:opts.managers] {
		m := &testManager{c: c, id: fmt.Sprintf("mgr-%d", i+1), raftDir: filepath.Join(t.TempDir(), "raft"), raftAddr: freeAddr(t),
			addr: ep.addr, tls: ep.tls, sys: ep.sys}
		c.mgrs = append(c.mgrs, m)
		t.Cleanup(m.stop)
	}
	for _, name := range opts.workers {
		ep, ok := pool.workers[name]
		if !ok {
			t.Fatalf("no worker %s in the endpoint pool", name)
		}
		c.workers[name] = c.newWorker(t, name, ep)
	}

	first := c.mgrs[0]
	first.start(t, true)
	if err := first.store().WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.registerManager(t, first, first)
	for _, m := range c.mgrs[1:] {
		m.start(t, false)
		c.registerManager(t, first, m)
	}
	for _, name := range opts.workers {
		c.workers[name].register(t, first)
	}
	c.settle(t)
	return c
}

// endpointPool is the remoting endpoints every harness test shares: the
// actor systems of three managers, three workers and an admin, each with
// its certificate from one CA, started once per test process before any
// message is sent. Tests start and stop managers and fake agents on them,
// never endpoints: protoactor's remote.Start writes grpc's global logger,
// a data race with every gRPC connection already at work in the process,
// so a second round of endpoints would make -race fail.
type endpointPool struct {
	ca      *pki.CA
	mgrs    []*endpoint
	workers map[string]*endpoint
	admin   *endpoint
}

type endpoint struct {
	sys  *actor.ActorSystem
	addr string
	tls  *tls.Config
}

var (
	poolOnce sync.Once
	pool     *endpointPool
	poolErr  error
)

func endpoints(t *testing.T) *endpointPool {
	t.Helper()
	poolOnce.Do(func() { pool, poolErr = newEndpointPool() })
	if poolErr != nil {
		t.Fatal(poolErr)
	}
	return pool
}

func newEndpointPool() (*endpointPool, error) {
	ca, err := pki.NewCA("harness")
	if err != nil {
		return nil, err
	}
	p := &endpointPool{ca: ca, workers: map[string]*endpoint{}}
	start := func(name, role string) (*endpoint, error) {
		var ips []net.IP
		if role != pki.RoleAdmin {
			ips = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		cert, err := ca.Issue(name, role, ips, nil, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		cfg, err := pki.TLSConfig(ca.PEM, cert)
		if err != nil {
			return nil, err
		}
		ep := &endpoint{sys: quietSystem(), tls: cfg}
		// Refusals go to the audit log, as a node's host wires it (none
		// runs on a worker's or the admin's system: nothing is recorded).
		if _, ep.addr, err = remoting.Start(ep.sys, remoting.Config{Host: "127.0.0.1", Port: 0, TLS: cfg, OnRefused: AuditRefusals(ep.sys)}); err != nil {
			return nil, fmt.Errorf("start %s's endpoint: %w", name, err)
		}
		return ep, nil
	}
	for i := 1; i <= 3; i++ {
		ep, err := start(fmt.Sprintf("mgr-%d", i), pki.RoleManager)
		if err != nil {
			return nil, err
		}
		p.mgrs = append(p.mgrs, ep)
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("wrk-%d", i)
		if p.workers[name], err = start(name, pki.RoleWorker); err != nil {
			return nil, err
		}
	}
	if p.admin, err = start("admin", pki.RoleAdmin); err != nil {
		return nil, err
	}
	return p, nil
}

// start opens m's raft store and starts its manager actor tree.
func (m *testManager) start(t *testing.T, bootstrap bool) {
	t.Helper()
	sys := m.sys
	st, err := store.Open(store.Config{Dir: m.raftDir, NodeID: m.id, Bind: m.raftAddr, Advertise: m.raftAddr, TLS: m.tls, Log: zap.NewNop(),
		OnChange: func(sc *messages.StateChanged) { sys.EventStream.Publish(sc) }}, bootstrap)
	if err != nil {
		t.Fatalf("open %s's store: %v", m.id, err)
	}
	log := zap.NewNop()
	if os.Getenv("HLOG") != "" { // HLOG=1 go test ...: the managers' logs, to debug a harness test
		log, _ = zap.NewDevelopment()
		log = log.With(zap.String("mgr", m.id))
	}
	pid, err := Start(sys, Config{Store: st, Log: log,
		Leader: LeaderConfig{Store: st, Log: log, NodeDownAfter: m.c.opts.nodeDownAfter, ResyncEvery: time.Hour, MaxDisconnect: time.Hour},
		API:    APIConfig{Store: st, Images: presentImages{}, NodeID: m.id, CA: m.c.ca, UploadDir: t.TempDir(), Log: log},
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	m.mu.Lock()
	m.up, m.st, m.pid = true, st, pid
	m.mu.Unlock()
}

// stop takes m's manager down at once: raft stops (its peers see it die)
// and every manager actor goes, so nothing it held in memory survives; its
// raft data does. Messages to its actors become dead letters.
func (m *testManager) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.up {
		return
	}
	m.up = false
	m.st.Close()
	// The closed store's leadership relay may still send its last "lost"
	// to the manager actor's id: the actor it reaches is this one (or, once
	// restarted, a follower, which it does not affect).
	_ = m.sys.Root.StopFuture(m.pid).Wait()
}

// restart starts a stopped m again from its raft data.
func (m *testManager) restart(t *testing.T) {
	t.Helper()
	m.start(t, false)
}

func (m *testManager) isUp() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.up
}

func (m *testManager) store() *store.Store {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

func (m *testManager) system() *actor.ActorSystem { return m.sys }

// pidOf is the actor id on m, addressed from inside m's process.
func pidOf(m *testManager, id string) *actor.PID { return actor.NewPID(m.sys.Address(), id) }

// ask sends msg to the actor id on m from inside m's process (trusted,
// as the node's own agent or CLI-less tooling).
func (m *testManager) ask(id string, msg proto.Message, timeout time.Duration) (any, error) {
	sys := m.system()
	return sys.Root.RequestFuture(actor.NewPID(sys.Address(), id), msg, timeout).Result()
}

// leaderIDs lists the ids of m's leader-only actors (manager/leader and
// everything under it) that are alive now.
func (m *testManager) leaderIDs() []string {
	var ids []string
	for _, bucket := range m.system().ProcessRegistry.LocalPIDs.LocalPIDs {
		for _, id := range bucket.Keys() {
			if id == NameLeader || strings.HasPrefix(id, NameLeader+"/") {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// registerManager registers m as a manager at via's api, which makes it a
// raft voter first, as `warren cluster join` does.
func (c *testCluster) registerManager(t *testing.T, via, m *testManager) {
	t.Helper()
	desc := &messages.NodeDescription{Hostname: m.id, Addr: m.addr, RaftAddr: m.raftAddr, Os: "linux", Arch: "amd64"}
	deadline := time.Now().Add(15 * time.Second)
	for {
		// The leader's actors start in the background: retry until they
		// take the registration.
		res, err := via.ask(NameAPI, &messages.RegisterNode{NodeId: m.id, Role: messages.NodeRole_NODE_ROLE_MANAGER, Description: desc}, 10*time.Second)
		r, _ := res.(*messages.RegisterNodeReply)
		if err == nil && r != nil && r.Error == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("register manager %s: %v %v", m.id, err, r.GetError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// up lists the managers running now.
func (c *testCluster) up() []*testManager {
	var out []*testManager
	for _, m := range c.mgrs {
		if m.isUp() {
			out = append(out, m)
		}
	}
	return out
}

// leader waits until one running manager leads and runs its leader actor,
// and returns it.
func (c *testCluster) leader(t *testing.T) *testManager {
	t.Helper()
	var l *testManager
	within(t, 15*time.Second, "a leader with its leader actor", func() bool {
		for _, m := range c.up() {
			if m.store().IsLeader() {
				if _, ok := m.system().ProcessRegistry.GetLocal(NameLeader); ok {
					l = m
					return true
				}
			}
		}
		return false
	})
	return l
}

// followers are the running managers other than l.
func (c *testCluster) followers(l *testManager) []*testManager {
	var out []*testManager
	for _, m := range c.up() {
		if m != l {
			out = append(out, m)
		}
	}
	return out
}

// settle waits until every running manager has applied the same index and
// no write has happened for a while: whatever the actors were converging
// to, they have reached.
func (c *testCluster) settle(t *testing.T) {
	t.Helper()
	const quiet = 300 * time.Millisecond
	var last string
	since := time.Now()
	within(t, 20*time.Second, "the managers to agree and go quiet", func() bool {
		var idx []string
		for _, m := range c.up() {
			idx = append(idx, strconv.FormatUint(m.store().State.Index(), 10))
		}
		now := strings.Join(idx, ",")
		same := len(idx) > 0
		for _, i := range idx {
			same = same && i == idx[0]
		}
		if now != last || !same {
			last, since = now, time.Now()
			return false
		}
		return time.Since(since) >= quiet
	})
}

// within polls ok every 10 ms until it holds, failing the test after d.
func within(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeWorker is a FAKE worker agent: an actor system with remoting and a
// real worker certificate, whose `agent` actor records the assignment sets
// the leader's node actor pushes and runs nothing. It speaks the node
// protocol to a manager's api as a real agent does.
type fakeWorker struct {
	c    *testCluster
	name string
	sys  *actor.ActorSystem
	addr string

	mu      sync.Mutex
	pushes  int
	last    *messages.Assignments
	started map[string]int // task id -> slot, every task ever pushed to run
}

// newWorker starts a fake worker agent named name on its pool endpoint;
// register makes it a node of the cluster.
func (c *testCluster) newWorker(t *testing.T, name string, ep *endpoint) *fakeWorker {
	t.Helper()
	w := &fakeWorker{c: c, name: name, sys: ep.sys, addr: ep.addr, started: map[string]int{}}
	pid, err := w.sys.Root.SpawnNamed(actor.PropsFromFunc(w.receive), NameAgent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.sys.Root.StopFuture(pid).Wait() })
	return w
}

// register registers the worker at the api of via, as its agent does.
func (w *fakeWorker) register(t *testing.T, via *testManager) {
	t.Helper()
	desc := &messages.NodeDescription{Hostname: w.name, Addr: w.addr, Os: "linux", Arch: "amd64", WgPublicKey: "wg-key-of-" + w.name,
		Resources: &messages.Resources{NanoCpus: 4e9, MemoryBytes: 4 << 30}}
	within(t, 15*time.Second, "registration of "+w.name, func() bool {
		res, err := w.ask(via, &messages.RegisterNode{NodeId: w.name, Role: messages.NodeRole_NODE_ROLE_WORKER, Description: desc}, 5*time.Second)
		r, _ := res.(*messages.RegisterNodeReply)
		return err == nil && r != nil && r.Error == nil
	})
}

func (w *fakeWorker) receive(ctx actor.Context) {
	as, ok := ctx.Message().(*messages.Assignments)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pushes++
	w.last = as
	for _, t := range as.Tasks {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING {
			w.started[t.Id] = int(t.Slot)
		}
	}
}

// startedIDs is every task id the fake was ever told to run.
func (w *fakeWorker) startedIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for id := range w.started {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// ask sends msg to m's api over remoting, as the worker.
func (w *fakeWorker) ask(m *testManager, msg proto.Message, timeout time.Duration) (any, error) {
	return w.sys.Root.RequestFuture(actor.NewPID(m.addr, NameAPI), msg, timeout).Result()
}

func (w *fakeWorker) send(m *testManager, msg proto.Message) {
	w.sys.Root.Send(actor.NewPID(m.addr, NameAPI), msg)
}

// heartbeat sends one heartbeat to m's api and waits for its answer (the
// answer also means everything the worker sent before was handled).
func (w *fakeWorker) heartbeat(t *testing.T, m *testManager) {
	t.Helper()
	within(t, 10*time.Second, w.name+"'s heartbeat answered", func() bool {
		res, err := w.ask(m, &messages.Heartbeat{NodeId: w.name}, 2*time.Second)
		_, ok := res.(*messages.Heartbeat)
		return err == nil && ok
	})
}

// report sends a status for t, as the worker running it.
func (w *fakeWorker) report(m *testManager, t *messages.Task, s *messages.TaskStatus) {
	w.send(m, &messages.TaskStatusReport{NodeId: w.name, Updates: []*messages.TaskStatusUpdate{{TaskId: t.Id, Epoch: t.Epoch, Status: s}}})
}

// admin is an actor system holding an admin certificate: the CLI.
type admin struct{ sys *actor.ActorSystem }

func (a *admin) ask(m *testManager, msg proto.Message, timeout time.Duration) (any, error) {
	return a.sys.Root.RequestFuture(actor.NewPID(m.addr, NameAPI), msg, timeout).Result()
}

// liveTasks is the tasks of service name the state wants running, by slot,
// as m's replica holds them.
func liveTasks(m *testManager, name string) map[uint64][]*messages.Task {
	st := m.store().State
	out := map[uint64][]*messages.Task{}
	v := st.ServiceByName(name)
	if v == nil {
		return out
	}
	for _, t := range st.Tasks(store.TaskFilter{ServiceID: v.Id}) {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING {
			out[t.Slot] = append(out[t.Slot], t)
		}
	}
	return out
}

// converged reports whether service name runs exactly one placed task in
// each of the slots 1..replicas and none elsewhere.
func converged(m *testManager, name string, replicas int) bool {
	live := liveTasks(m, name)
	if len(live) != replicas {
		return false
	}
	for s := 1; s <= replicas; s++ {
		ts := live[uint64(s)]
		if len(ts) != 1 || ts[0].NodeId == "" {
			return false
		}
	}
	return true
}

// taskSig is the identity of a service's live tasks: which task runs each
// slot, where, at which epoch.
func taskSig(m *testManager, name string) string {
	var parts []string
	for slot, ts := range liveTasks(m, name) {
		for _, t := range ts {
			parts = append(parts, fmt.Sprintf("%d:%s@%s/e%d", slot, t.Id[:8], t.NodeId, t.Epoch))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func workerSpec(name string, replicas uint64) *messages.ServiceSpec {
	return &messages.ServiceSpec{Name: name, Image: "demo:v1", Replicas: replicas, Constraints: []string{"node.role==worker"}}
}
