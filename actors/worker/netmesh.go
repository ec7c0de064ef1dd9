package worker

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
)

// NameNetMesh is the node's netmesh actor, beside its agent.
const NameNetMesh = "netmesh"

// NetKernel is what the netmesh actor programs: the node's nftables VIP
// rules, its DNS answers and its WireGuard peers. Each call replaces the
// whole set. The actor makes one call at a time, off its mailbox; the host
// implements it over netmesh, tests with a fake.
type NetKernel interface {
	SetServices(svcs []netmesh.VIPService) error
	SetDNS(recs netmesh.DNSRecords)
	// SetPeers brings the mesh up with the first peer other than this
	// node (a lone node needs no tunnel) and makes its peers these.
	SetPeers(peers []netmesh.Peer) error
}

// NetMeshConfig configures the netmesh actor.
type NetMeshConfig struct {
	Kernel NetKernel
	// Debounce is the least time between two programmings (default
	// 250 ms): a view after a quiet spell is programmed at once (a new
	// service resolves, a stopping task leaves the VIPs, without waiting),
	// and the burst of pushes a deploy causes becomes one update per
	// interval, of the newest view.
	Debounce time.Duration
	// Timeout bounds one programming before it is reported as stuck
	// (default 2 minutes); the next waits until it has returned.
	Timeout time.Duration
	Log     *zap.Logger
}

// Self-messages of the netmesh actor.
type (
	// netCooled: the debounce interval after a programming is over.
	netCooled struct{}
)

// netMeshActor owns the node's share of the cluster network: it takes the
// views the agent sends (messages.NetworkView, newest wins), programs them
// into the kernel through blocking.Do, so the agent's mailbox (heartbeats,
// status reports) never waits on nftables or WireGuard, and confirms each
// programmed index to the agent (netProgrammed), which tells the leader:
// drains wait on it. A view equal to the one last programmed in the same
// busy spell is confirmed without touching the kernel; after a quiet spell
// the next view is programmed in full, so the 10 s resync heals rules,
// routes or peers changed behind Warren's back.
type netMeshActor struct {
	cfg     NetMeshConfig
	next    *messages.NetworkView // newest view not yet taken
	replyTo *actor.PID            // who sent it: confirmations go there
	last    *messages.NetworkView // programmed in this busy spell; nil after a quiet one
	busy    bool                  // programming, or within Debounce of the last
	// inflight is closed when the kernel call under way returns; Stop
	// waits for it, so nothing touches the kernel after.
	inflight chan struct{}
	cancel   scheduler.CancelFunc
}

// NewNetMesh returns the netmesh actor's props.
func NewNetMesh(cfg NetMeshConfig) *actor.Props {
	if cfg.Debounce == 0 {
		cfg.Debounce = 250 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return actor.PropsFromProducer(func() actor.Actor { return &netMeshActor{cfg: cfg} }, events.WithLifecycle)
}

func (a *netMeshActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.NetworkView:
		a.next, a.replyTo = m, ctx.Sender()
		if !a.busy {
			a.program(ctx)
		}
	case *netCooled:
		a.busy, a.cancel = false, nil
		if a.next != nil {
			a.program(ctx)
		} else {
			a.last = nil // a quiet spell: the next view goes to the kernel in full
		}
	case *actor.Stopping, *actor.Restarting:
		if a.cancel != nil {
			a.cancel()
			a.cancel = nil
		}
		if a.inflight != nil {
			<-a.inflight
		}
	}
}

// program takes the newest view: confirms it at once if it equals the last
// one programmed, otherwise programs it off the mailbox and confirms it
// when the kernel call returns; either way the next waits out Debounce.
func (a *netMeshActor) program(ctx actor.Context) {
	a.busy = true
	if a.inflight != nil {
		select {
		case <-a.inflight:
		default: // a call that outlived Timeout still runs: never two at once
			a.cool(ctx)
			return
		}
	}
	m, to := a.next, a.replyTo
	a.next = nil
	if a.last != nil && sameNetwork(a.last, m) {
		a.confirm(ctx, to, m.Index)
		a.cool(ctx)
		return
	}
	done := make(chan struct{})
	a.inflight = done
	k, log := a.cfg.Kernel, a.cfg.Log
	blocking.Do(ctx, a.cfg.Timeout, func() (struct{}, error) {
		defer close(done)
		programKernel(k, m, log)
		return struct{}{}, nil
	}, func(_ struct{}, err error) {
		if err != nil {
			log.Error("network programming is stuck; the next waits for it", zap.Uint64("index", m.Index), zap.Error(err))
			if a.next == nil {
				a.next, a.replyTo = m, to
			}
			a.cool(ctx)
			return
		}
		a.last = m
		a.confirm(ctx, to, m.Index)
		a.cool(ctx)
	})
}

func (a *netMeshActor) cool(ctx actor.Context) {
	a.cancel = scheduler.NewTimerScheduler(ctx).SendOnce(a.cfg.Debounce, ctx.Self(), &netCooled{})
}

// confirm tells the agent the node routes by this index's view (or a newer
// one that superseded it).
func (a *netMeshActor) confirm(ctx actor.Context, to *actor.PID, index uint64) {
	if to != nil {
		ctx.Send(to, &netProgrammed{index: index})
	}
}

func sameNetwork(a, b *messages.NetworkView) bool {
	return proto.Equal(&messages.NetworkView{Services: a.Services, Peers: a.Peers}, &messages.NetworkView{Services: b.Services, Peers: b.Peers})
}

// programKernel programs a view: VIP rules, DNS answers, mesh peers. A
// part that fails is logged and the others still go in: a node whose
// rules cannot be written still resolves names and reaches its peers.
func programKernel(k NetKernel, m *messages.NetworkView, log *zap.Logger) {
	svcs, recs := vipServices(m.Services)
	if err := k.SetServices(svcs); err != nil {
		log.Error("program service VIPs", zap.Error(err))
	}
	k.SetDNS(recs)
	var peers []netmesh.Peer
	for _, p := range m.Peers {
		sub, err := netip.ParsePrefix(p.Subnet)
		if err != nil {
			continue
		}
		peers = append(peers, netmesh.Peer{NodeID: p.NodeId, PublicKey: p.PublicKey, Endpoint: p.Endpoint, Subnet: sub, Format: p.Format})
	}
	if err := k.SetPeers(peers); err != nil {
		log.Warn("mesh peers", zap.Error(err))
	}
}

// vipServices turns the services of a view into VIP rules and DNS records.
// An endpoint's weight 0 (from a manager older than weights) means 1.
func vipServices(services []*messages.ServiceNetwork) ([]netmesh.VIPService, netmesh.DNSRecords) {
	var svcs []netmesh.VIPService
	recs := netmesh.DNSRecords{Services: map[string]netmesh.DNSService{}}
	for _, s := range services {
		vip, err := netip.ParseAddr(s.Vip)
		if err != nil {
			continue
		}
		type ep struct {
			ip     netip.Addr
			weight uint32
		}
		var eps []ep
		var ips []netip.Addr
		for _, e := range s.Endpoints {
			if ip, err := netip.ParseAddr(e.Ip); err == nil {
				eps = append(eps, ep{ip, max(e.Weight, 1)})
				ips = append(ips, ip)
			}
		}
		vs := netmesh.VIPService{Name: s.Name, VIP: vip}
		ds := netmesh.DNSService{VIP: vip, Tasks: ips}
		for _, p := range s.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			vp := netmesh.VIPPort{Protocol: proto, Port: uint16(p.TargetPort), PublishedPort: uint16(p.PublishedPort)}
			for _, e := range eps {
				vp.Endpoints = append(vp.Endpoints, netmesh.Endpoint{IP: e.ip, Port: uint16(p.TargetPort), Weight: e.weight})
			}
			vs.Ports = append(vs.Ports, vp)
			ds.Ports = append(ds.Ports, netmesh.DNSPort{Name: p.Name, Protocol: proto, Port: uint16(p.TargetPort)})
		}
		svcs = append(svcs, vs)
		recs.Services[s.Name] = ds
	}
	return svcs, recs
}
