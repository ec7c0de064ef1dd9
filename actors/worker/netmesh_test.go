package worker

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
)

// fakeNetKernel stands in for nftables, DNS and WireGuard, which need root:
// it records each programming and can hold one until the test lets it go.
type fakeNetKernel struct {
	mu    sync.Mutex
	calls []fakeNetCall
	gate  chan struct{} // when set, SetServices waits for it
	began chan struct{} // gets a value as each SetServices begins
}

type fakeNetCall struct {
	at    time.Time
	svcs  []netmesh.VIPService
	dns   netmesh.DNSRecords
	peers []netmesh.Peer
	done  bool
}

func newFakeNetKernel() *fakeNetKernel { return &fakeNetKernel{began: make(chan struct{}, 100)} }

func (k *fakeNetKernel) SetServices(svcs []netmesh.VIPService) error {
	k.mu.Lock()
	k.calls = append(k.calls, fakeNetCall{at: time.Now(), svcs: svcs})
	gate := k.gate
	k.mu.Unlock()
	k.began <- struct{}{}
	if gate != nil {
		<-gate
	}
	return nil
}

func (k *fakeNetKernel) SetDNS(recs netmesh.DNSRecords) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls[len(k.calls)-1].dns = recs
}

func (k *fakeNetKernel) SetPeers(peers []netmesh.Peer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls[len(k.calls)-1].peers = peers
	k.calls[len(k.calls)-1].done = true
	return nil
}

func (k *fakeNetKernel) hold() chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gate = make(chan struct{})
	return k.gate
}

func (k *fakeNetKernel) release(gate chan struct{}) {
	k.mu.Lock()
	k.gate = nil
	k.mu.Unlock()
	close(gate)
}

func (k *fakeNetKernel) snapshot() []fakeNetCall {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls)
}

// netProbe plays the agent: it sends views as requests, as the agent does,
// and collects the confirmations.
type netProbe struct {
	t       *testing.T
	sys     *actor.ActorSystem
	mesh    *actor.PID
	self    *actor.PID
	kernel  *fakeNetKernel
	confirm chan uint64
}

const testDebounce = 300 * time.Millisecond

func startNetMesh(t *testing.T) *netProbe {
	t.Helper()
	p := &netProbe{t: t, sys: actor.NewActorSystem(), kernel: newFakeNetKernel(), confirm: make(chan uint64, 100)}
	t.Cleanup(p.sys.Shutdown)
	p.mesh = p.sys.Root.Spawn(NewNetMesh(NetMeshConfig{Kernel: p.kernel, Debounce: testDebounce}))
	p.self = p.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *messages.NetworkView:
			ctx.Request(p.mesh, m)
		case *netProgrammed:
			p.confirm <- m.index
		}
	}))
	return p
}

// view is a network of one service on port 80 with the given endpoint
// (weight 1) and index.
func view(index uint64, endpoint string) *messages.NetworkView {
	return &messages.NetworkView{Index: index, Services: []*messages.ServiceNetwork{{
		Name: "web", Vip: "10.89.0.2", Ports: []*messages.PortConfig{{TargetPort: 80}},
		Endpoints: []*messages.NetEndpoint{{Ip: endpoint, Weight: 1}},
	}}, Peers: []*messages.MeshPeer{{NodeId: "n1", PublicKey: "k", Subnet: "10.88.1.0/24"}}}
}

func (p *netProbe) send(v *messages.NetworkView) { p.sys.Root.Send(p.self, v) }

func (p *netProbe) began(within time.Duration) {
	p.t.Helper()
	select {
	case <-p.kernel.began:
	case <-time.After(within):
		p.t.Fatalf("no programming began within %s", within)
	}
}

func (p *netProbe) confirmed(within time.Duration) uint64 {
	p.t.Helper()
	select {
	case i := <-p.confirm:
		return i
	case <-time.After(within):
		p.t.Fatalf("no confirmation within %s", within)
		return 0
	}
}

func (p *netProbe) noConfirmation(d time.Duration) {
	p.t.Helper()
	select {
	case i := <-p.confirm:
		p.t.Fatalf("confirmed index %d too early", i)
	case <-time.After(d):
	}
}

func endpointOf(c fakeNetCall) string {
	return c.svcs[0].Ports[0].Endpoints[0].IP.String()
}

// TestNetMeshCoalesces: a view after a quiet spell goes to the kernel at
// once; views arriving while it is programmed are taken together, newest
// only, at least Debounce later; each index is confirmed only once the
// kernel holds it (or a newer one), in order.
func TestNetMeshCoalesces(t *testing.T) {
	p := startNetMesh(t)
	gate := p.kernel.hold()
	start := time.Now()
	p.send(view(1, "10.88.1.2"))
	p.began(testDebounce / 2) // at once, not after a debounce
	for i := uint64(2); i <= 4; i++ {
		p.send(view(i, fmt.Sprint("10.88.1.", i+1)))
	}
	p.noConfirmation(testDebounce) // the kernel has not returned
	released := time.Now()
	p.kernel.release(gate)
	if i := p.confirmed(time.Second); i != 1 {
		t.Fatalf("first confirmation is index %d, want 1", i)
	}
	if i := p.confirmed(3 * testDebounce); i != 4 {
		t.Fatalf("second confirmation is index %d, want 4 (2 and 3 superseded)", i)
	}
	calls := p.kernel.snapshot()
	if len(calls) != 2 || endpointOf(calls[0]) != "10.88.1.2" || endpointOf(calls[1]) != "10.88.1.5" {
		t.Fatalf("kernel calls %+v, want the view of index 1, then that of 4", calls)
	}
	if gap := calls[1].at.Sub(released); gap < testDebounce-10*time.Millisecond {
		t.Fatalf("programmed again %s after the last programming ended, before Debounce (%s)", gap, testDebounce)
	}
	if !calls[0].done || calls[0].at.Sub(start) > testDebounce/2 {
		t.Fatalf("first call %+v", calls[0])
	}
	p.noConfirmation(2 * testDebounce)
}

// TestNetMeshSkipsEqualViews: within a busy spell, a view whose network
// equals the one programmed is confirmed without a kernel call; after a
// quiet spell the same network goes to the kernel again (the periodic
// resync heals what changed behind Warren's back).
func TestNetMeshSkipsEqualViews(t *testing.T) {
	p := startNetMesh(t)
	p.send(view(1, "10.88.1.2"))
	if i := p.confirmed(time.Second); i != 1 {
		t.Fatalf("confirmed %d, want 1", i)
	}
	p.send(view(2, "10.88.1.2")) // within Debounce of the first: busy
	if i := p.confirmed(3 * testDebounce); i != 2 {
		t.Fatalf("confirmed %d, want 2", i)
	}
	if n := len(p.kernel.snapshot()); n != 1 {
		t.Fatalf("%d kernel calls, want 1: an equal view is not programmed again while busy", n)
	}
	time.Sleep(3 * testDebounce) // a quiet spell
	p.send(view(3, "10.88.1.2"))
	if i := p.confirmed(time.Second); i != 3 {
		t.Fatalf("confirmed %d, want 3", i)
	}
	if n := len(p.kernel.snapshot()); n != 2 {
		t.Fatalf("%d kernel calls, want 2: after a quiet spell the view is programmed in full", n)
	}
}

// TestNetMeshStopWaits: stopping the actor waits for the programming
// under way, and nothing is programmed after.
func TestNetMeshStopWaits(t *testing.T) {
	p := startNetMesh(t)
	gate := p.kernel.hold()
	p.send(view(1, "10.88.1.2"))
	p.began(time.Second)
	p.send(view(2, "10.88.1.3"))
	stopped := make(chan struct{})
	go func() {
		_ = p.sys.Root.StopFuture(p.mesh).Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("stop returned while the kernel was being programmed")
	case <-time.After(testDebounce):
	}
	p.kernel.release(gate)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return once the programming ended")
	}
	time.Sleep(2 * testDebounce)
	if calls := p.kernel.snapshot(); len(calls) != 1 {
		t.Fatalf("%d kernel calls, want 1: nothing after stop", len(calls))
	}
}

// TestVIPServicesWeights: endpoint weights reach every port's rule; 0 (a
// manager older than weights) means 1; DNS gets the task addresses.
func TestVIPServicesWeights(t *testing.T) {
	svcs, recs := vipServices([]*messages.ServiceNetwork{{
		Name: "web", Vip: "10.89.0.2",
		Ports:     []*messages.PortConfig{{TargetPort: 80, Name: "http"}, {TargetPort: 53, Protocol: "udp", PublishedPort: 5353}},
		Endpoints: []*messages.NetEndpoint{{Ip: "10.88.1.2", Weight: 9}, {Ip: "10.88.1.3"}, {Ip: "bogus", Weight: 1}},
	}, {Name: "bad-vip", Vip: "x"}})
	want := []netmesh.Endpoint{{IP: netip.MustParseAddr("10.88.1.2"), Weight: 9}, {IP: netip.MustParseAddr("10.88.1.3"), Weight: 1}}
	if len(svcs) != 1 || len(svcs[0].Ports) != 2 {
		t.Fatalf("services %+v", svcs)
	}
	for _, p := range svcs[0].Ports {
		if len(p.Endpoints) != 2 {
			t.Fatalf("port %d endpoints %+v", p.Port, p.Endpoints)
		}
		for i, e := range p.Endpoints {
			if e.IP != want[i].IP || e.Weight != want[i].Weight || e.Port != p.Port {
				t.Fatalf("port %d endpoint %d = %+v, want %+v on port %d", p.Port, i, e, want[i], p.Port)
			}
		}
	}
	if p := svcs[0].Ports[1]; p.Protocol != "udp" || p.PublishedPort != 5353 || svcs[0].Ports[0].Protocol != "tcp" {
		t.Fatalf("ports %+v", svcs[0].Ports)
	}
	d := recs.Services["web"]
	if d.VIP.String() != "10.89.0.2" || len(d.Tasks) != 2 || len(d.Ports) != 2 || d.Ports[0].Name != "http" {
		t.Fatalf("dns %+v", recs)
	}
}
