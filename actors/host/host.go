// Package host assembles a Warren node process: it checks and locks the data
// dir, creates the cluster CA and certificates on first start (or resumes
// the node on every later start with the same command line), runs the
// embedded containerd unless a socket is given, opens the raft store, starts
// the actor system with mutual-TLS remoting, and spawns the events hub, the
// manager tree and the worker agent. Stop undoes it in reverse, leaving
// containers running for the next start to adopt.
package host

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// Defaults.
const (
	DefaultPort     = 4280
	DefaultRaftPort = 4281
)

// Config configures a node.
type Config struct {
	DataDir   string
	Advertise string // IP other nodes and the CLI reach this node at; default: the source address of the default route
	// WGEndpoint is the ip:port other nodes send this node's WireGuard
	// traffic to, for a node behind NAT (a forwarded port on the router's
	// public address). Default: the advertise address, port 51820.
	WGEndpoint       string
	ListenHost       string // default 0.0.0.0
	Port             int    // actor remoting
	RaftPort         int
	ContainerdSocket string // "" runs an embedded containerd under the data dir
	ConfigDir        string // where the admin credentials go (default $HOME/.warren)
	Hostname         string
	EnableDebug      bool
	MetricsAddr      string // "" disables
	NodeDownAfter    time.Duration
	MaxDisconnect    time.Duration // see manager.LeaderConfig
	ForceNewCluster  bool          // see store.Config
	JoinPort         int
	// Join, when set, makes an empty data dir join an existing cluster
	// (`cluster join`) instead of creating one.
	Join    *JoinConfig
	Version string
	Log     *zap.Logger
	// EventsMaxAge and EventsMaxCount bound the events history (see
	// events.Retention; 0 takes its default).
	EventsMaxAge   time.Duration
	EventsMaxCount int
	// TaskLogs caps each task's log files (runtime.LogOptions; 0 takes
	// the defaults). Its Binary, the logger the shim runs, defaults to
	// this executable.
	TaskLogs runtime.LogOptions
}

// JoinConfig is what `warren cluster join` is given.
type JoinConfig struct {
	Token string
	Addrs []string // manager join endpoints host[:port]
}

// Node is a running Warren node.
type Node struct {
	cfg     Config
	File    *NodeFile
	Addr    string // actor address
	lock    *dirLock
	daemon  *runtime.Daemon
	rt      *runtime.Containerd
	st      *store.Store
	system  *actor.ActorSystem
	remote  *remote.Remote
	net     *netmesh.Network
	mesh    *netmesh.Mesh
	dns     *netmesh.DNS
	metrics *http.Server
	join    *joinServer
	created bool
	restart chan struct{} // a role change asks the runner to restart the node
	left    chan string   // the node was removed from the cluster and left it
	// roleChanging is set by the first role change of this run.
	roleChanging atomic.Bool
	// netmesh is the netmesh actor, which programs net, dns and mesh.
	netmesh *actor.PID
	subnet  netip.Prefix
	meshMu  sync.Mutex // mesh is created by the netmesh actor's kernel calls
}

// Restart fires when the node must be restarted (its role changed): stop
// it and call InitOrResume again with the same configuration.
func (n *Node) Restart() <-chan struct{} { return n.restart }

// Left delivers why, once the cluster removed this node and it has left:
// its tasks are gone and its network removed. The runner stops the node.
func (n *Node) Left() <-chan string { return n.left }

// Created reports whether this start created a new cluster.
func (n *Node) Created() bool { return n.created }

// System is the node's actor system (for embedding).
func (n *Node) System() *actor.ActorSystem { return n.system }

func (c *Config) defaults() error {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/warren"
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	if c.ListenHost == "" {
		c.ListenHost = "0.0.0.0"
	}
	if c.WGEndpoint != "" {
		if err := netmesh.ValidEndpoint(c.WGEndpoint); err != nil {
			return fmt.Errorf("--wg-endpoint: %w", err)
		}
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.RaftPort == 0 {
		c.RaftPort = DefaultRaftPort
	}
	if c.JoinPort == 0 {
		c.JoinPort = DefaultJoinPort
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.NodeDownAfter == 0 {
		c.NodeDownAfter = 10 * time.Second
	}
	if c.MaxDisconnect == 0 {
		c.MaxDisconnect = time.Hour
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.ConfigDir == "" {
		home, _ := os.UserHomeDir()
		c.ConfigDir = filepath.Join(home, ".warren")
	}
	return nil
}

// DefaultAdvertise is the source address of the route to the outside, or
// 127.0.0.1 when there is none (a lone machine still works).
func DefaultAdvertise() string {
	c, err := net.Dial("udp4", "192.0.2.1:9") // TEST-NET-1: never sent, only routed
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// InitOrResume starts a node: on an empty data dir it creates a new cluster
// with this node as its first manager; on this node's data dir it resumes it.
func InitOrResume(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	nf, err := ReadNodeFile(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, lock: lock, restart: make(chan struct{}, 1), left: make(chan string, 1)}
	ok := false
	defer func() {
		if !ok {
			n.Stop()
		}
	}()
	if nf != nil && nf.Left {
		return nil, fmt.Errorf("this node was removed from cluster %s and has left it: to join a cluster again, empty %s (or use another --data-dir) and run `warren cluster join` with a token", nf.ClusterID[:12], cfg.DataDir)
	}
	if nf != nil && cfg.Join != nil {
		// The join command line also restarts a joined node: resume it,
		// unless the token names another cluster. A joined node needs no
		// token any more (its token file may be gone).
		if cfg.Join.Token != "" {
			fp, _, err := pki.ParseToken(cfg.Join.Token)
			if err != nil {
				return nil, err
			}
			if root, err := pki.LoadRootCert(certDir(cfg.DataDir)); err == nil && pki.Fingerprint(root) != fp {
				return nil, fmt.Errorf("data dir %s belongs to another cluster (CA %s..., the token names %s...): use another --data-dir, or remove this node's data to join anew", cfg.DataDir, pki.Fingerprint(root)[:12], fp[:12])
			}
		}
	}
	switch {
	case nf == nil && cfg.Join != nil:
		if nf, err = n.joinCluster(ctx); err != nil {
			clearDir(cfg.DataDir)
			return nil, err
		}
		n.created = true
	case nf == nil:
		if nf, err = n.create(); err != nil {
			return nil, err
		}
		n.created = true
	case cfg.Advertise != "" && cfg.Advertise != nf.Advertise:
		cfg.Log.Warn("ignoring --advertise on resume: the node keeps the address it was created with",
			zap.String("given", cfg.Advertise), zap.String("kept", nf.Advertise))
	}
	n.File = nf
	if err := n.start(ctx); err != nil {
		if n.created {
			// A cluster that never started leaves nothing behind: the next
			// attempt starts from the same empty dir.
			n.Stop()
			n.lock = nil
			clearDir(cfg.DataDir)
		}
		return nil, err
	}
	ok = true
	return n, nil
}

// clearDir empties a data dir this process just created from nothing.
func clearDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// create writes a new cluster's identity into the data dir.
func (n *Node) create() (*NodeFile, error) {
	cfg := n.cfg
	adv := cfg.Advertise
	if adv == "" {
		adv = DefaultAdvertise()
	}
	ip := net.ParseIP(adv)
	if ip == nil {
		return nil, fmt.Errorf("--advertise %q is not an IP address: give the address other nodes reach this one at", adv)
	}
	nf := &NodeFile{Format: 1, ClusterID: messages.NewID(), NodeID: messages.NewID(), Role: pki.RoleManager,
		Advertise: adv, Port: cfg.Port, RaftPort: cfg.RaftPort, JoinPort: cfg.JoinPort, Hostname: cfg.Hostname,
		Created: time.Now().UTC(), Bootstrapped: true}
	ca, err := pki.NewCA(nf.ClusterID)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(certDir(cfg.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("create cert dir: %w", err)
	}
	// The root key stays here and signs intermediates only; this
	// manager's own intermediate signs its leaves, like every manager's.
	if err := ca.Save(certDir(cfg.DataDir)); err != nil {
		return nil, err
	}
	signer, err := ca.NewIntermediate(nf.NodeID)
	if err != nil {
		return nil, err
	}
	if err := signer.SaveSigner(certDir(cfg.DataDir)); err != nil {
		return nil, err
	}
	ips := []net.IP{ip, net.ParseIP("127.0.0.1")}
	id, err := signer.Issue(nf.NodeID, pki.RoleManager, ips, []string{cfg.Hostname}, pki.NodeValidity)
	if err != nil {
		return nil, err
	}
	if err := id.SaveNew(certDir(cfg.DataDir), "node"); err != nil {
		return nil, err
	}
	// node.json last: a crash before this leaves a dir that init redoes.
	if err := writeNodeFile(cfg.DataDir, nf); err != nil {
		return nil, err
	}
	return nf, nil
}
