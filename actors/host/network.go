package host

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/worker"
	"github.com/warrenorch/warren/netmesh"
	"github.com/warrenorch/warren/store"
)

// The node's network: the task network (bridge, addresses, sandboxes), DNS
// and the WireGuard mesh are opened and closed here; what goes into them
// (VIP rules, DNS records, mesh peers) is the netmesh actor's
// (actors/worker/netmesh.go), through kernel.

func (n *Node) openNetwork(subnet netip.Prefix) (worker.Network, error) {
	if n.net != nil {
		// An agent restarted by its supervisor reopens the network; the
		// lease db is already open in this process.
		return n.net, nil
	}
	log := n.cfg.Log.Named("netmesh")
	nw, err := netmesh.New(netmesh.Config{
		Subnet: subnet, StateDir: filepath.Join(n.cfg.DataDir, "net"), NetNSDir: filepath.Join(n.cfg.DataDir, "netns"),
		Log: log,
	})
	if err != nil {
		return nil, err
	}
	n.net = nw
	gw := subnet.Masked().Addr().Next()
	n.subnet = subnet
	// The mesh starts with the first peer (a lone node needs no tunnel, and
	// wireguard-go's buffers cost ~30 MB); DNS starts now. A node where they
	// cannot start still runs its tasks, and says why.
	dns, err := netmesh.NewDNS(netip.AddrPortFrom(gw, 53), netmesh.UpstreamsFromResolvConf("/etc/resolv.conf"), log.Named("dns"))
	if err != nil {
		log.Error("DNS not started: containers resolve service names nowhere", zap.Error(err))
	} else {
		n.dns = dns
		if err := netmesh.WriteResolvConf(n.resolvConf(), gw, []string{"warren"}); err != nil {
			log.Error("write containers' resolv.conf", zap.Error(err))
		}
	}
	return nw, nil
}

// leave runs once the agent of a node the cluster removed has stopped all
// its tasks: it removes everything Warren set up in the kernel (table inet
// warren, the bridge, the WireGuard device and routes, the sandboxes),
// stops DNS, marks the data dir as left so a restart does not come back,
// and tells the runner.
func (n *Node) leave(why string) {
	log := n.cfg.Log
	n.stopNetMesh()
	if n.dns != nil {
		n.dns.Close()
	}
	n.meshMu.Lock()
	if n.mesh != nil {
		if err := n.mesh.Teardown(); err != nil {
			log.Warn("remove the WireGuard mesh", zap.Error(err))
		}
	}
	n.meshMu.Unlock()
	if n.net != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := n.net.Teardown(ctx); err != nil {
			log.Warn("remove the task network", zap.Error(err))
		}
		cancel()
	}
	n.File.Left = true
	if err := writeNodeFile(n.cfg.DataDir, n.File); err != nil {
		log.Warn("mark the data dir as left", zap.Error(err))
	}
	log.Warn("left the cluster", zap.String("why", why))
	select {
	case n.left <- why:
	default:
	}
}

// meshEndpoint is where other nodes reach this node's WireGuard.
func (n *Node) meshEndpoint() string {
	if n.cfg.WGEndpoint != "" {
		return n.cfg.WGEndpoint
	}
	return net.JoinHostPort(n.File.Advertise, strconv.Itoa(netmesh.DefaultMeshListenPort))
}

func (n *Node) resolvConf() string { return filepath.Join(n.cfg.DataDir, "resolv.conf") }

// kernel is the node's network as the netmesh actor programs it, one call
// at a time, off its mailbox. The agent opens net (and dns) before it sends
// the first view, so the calls see them.
type kernel struct{ n *Node }

func (k kernel) SetServices(svcs []netmesh.VIPService) error {
	if k.n.net == nil {
		return nil
	}
	return k.n.net.SetServices(svcs)
}

func (k kernel) SetDNS(recs netmesh.DNSRecords) {
	if k.n.dns != nil {
		k.n.dns.Set(recs)
	}
}

// SetPeers starts the mesh with the first peer other than this node: a lone
// node needs no tunnel, and wireguard-go's buffers cost ~30 MB.
func (k kernel) SetPeers(peers []netmesh.Peer) error {
	n := k.n
	n.meshMu.Lock()
	mesh := n.mesh
	n.meshMu.Unlock()
	if mesh == nil {
		if len(peers) <= 1 {
			return nil
		}
		var err error
		mesh, err = netmesh.NewMesh(netmesh.MeshConfig{
			KeyFile: filepath.Join(n.cfg.DataDir, "wg.key"), NodeID: n.File.NodeID, Subnet: n.subnet, ClusterRange: store.TaskSubnetPool,
			Endpoint: n.meshEndpoint(), Log: n.cfg.Log.Named("netmesh").Named("mesh"),
		})
		if err != nil {
			return fmt.Errorf("WireGuard mesh not started: tasks on other nodes are unreachable from here: %w", err)
		}
		n.meshMu.Lock()
		n.mesh = mesh
		n.meshMu.Unlock()
	}
	return mesh.SetPeers(peers)
}

// stopNetMesh stops the netmesh actor, which waits for a programming under
// way: nothing touches the rules, DNS or mesh afterwards.
func (n *Node) stopNetMesh() {
	if n.system != nil && n.netmesh != nil {
		_ = n.system.Root.StopFuture(n.netmesh).Wait()
	}
}
