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
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/manager"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/actors/worker"
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

func (n *Node) start(ctx context.Context) error {
	cfg, nf := n.cfg, n.File
	log := cfg.Log.With(zap.String("node", nf.NodeID[:12]))
	isManager := nf.Role == pki.RoleManager
	cd := certDir(cfg.DataDir)
	caPEM, err := os.ReadFile(filepath.Join(cd, "ca.pem"))
	if err != nil {
		return fmt.Errorf("data dir %s is damaged: cluster CA: %w", cfg.DataDir, err)
	}
	var ca *pki.CA
	if isManager { // managers sign joins and admin certificates, with their own intermediate
		if ca, err = pki.LoadSigner(cd, nf.NodeID); err != nil {
			return fmt.Errorf("data dir %s is damaged: %w", cfg.DataDir, err)
		}
	} else if err := pki.RemoveSigner(cd); err != nil { // a demotion cut short
		return fmt.Errorf("remove a former manager's signing keys from %s: %w", cd, err)
	}
	id, err := pki.LoadIdentity(cd, "node")
	if err != nil {
		return fmt.Errorf("data dir %s is damaged: node %w", cfg.DataDir, err)
	}
	tlsCfg, err := pki.TLSConfig(caPEM, id)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(nf.Advertise, strconv.Itoa(nf.Port))

	// Container runtime.
	socket := cfg.ContainerdSocket
	if socket == "" {
		n.daemon, err = runtime.StartDaemon(ctx, filepath.Join(cfg.DataDir, "containerd"), log.Named("containerd"))
		if err != nil {
			return err
		}
		socket = n.daemon.Socket()
	}
	n.rt, err = runtime.NewContainerd(ctx, socket, "warren", log.Named("runtime"))
	if err != nil {
		return err
	}

	n.system = actor.NewActorSystem(actor.WithLoggerFactory(slogFactory(log.Named("actor"))))
	sys := n.system
	hub, err := sys.Root.SpawnNamed(events.NewHub(nf.NodeID, filepath.Join(cfg.DataDir, "events.db"), log.Named("events")), manager.NameEvents)
	if err != nil {
		return fmt.Errorf("start events hub: %w", err)
	}
	// The hub subscribes in its Started; wait for it so no actor's start
	// goes unrecorded.
	if _, err := sys.Root.RequestFuture(hub, &messages.SubscribeEvents{}, 10*time.Second).Result(); err != nil {
		return fmt.Errorf("start events hub: %w", err)
	}
	managers := append([]string{}, nf.Managers...)
	if isManager {
		if err := n.startManager(ctx, ca, id, tlsCfg, log); err != nil {
			return err
		}
		managers = append([]string{addr}, managers...)
	}
	n.remote, n.Addr, err = remoting.Start(sys, remoting.Config{Host: cfg.ListenHost, Port: nf.Port, Advertise: addr, TLS: tlsCfg, Log: log.Named("remoting")})
	if err != nil {
		return err
	}
	if n.created && nf.Bootstrapped {
		if err := n.proposeClusterInfo(ca); err != nil {
			return err
		}
	}

	// Worker agent: every node runs tasks.
	logDir := filepath.Join(cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return err
	}
	osName, arch := manager.Platform()
	role := messages.NodeRole_NODE_ROLE_WORKER
	desc := &messages.NodeDescription{
		Hostname: cfg.Hostname, Addr: addr, Os: osName, Arch: arch, Version: cfg.Version,
		Resources: capacity(), Runtime: runtimeName(cfg.ContainerdSocket),
	}
	if key, err := netmesh.MeshPublicKey(filepath.Join(cfg.DataDir, "wg.key")); err != nil {
		log.Warn("no WireGuard key: this node stays out of the mesh", zap.Error(err))
	} else {
		desc.WgPublicKey = key
		desc.WgEndpoint = n.meshEndpoint()
		desc.MeshKind = netmesh.KindUserspace
		if netmesh.KernelWireGuard() {
			desc.MeshKind = netmesh.KindKernel
		}
	}
	if isManager {
		role = messages.NodeRole_NODE_ROLE_MANAGER
		desc.RaftAddr = net.JoinHostPort(nf.Advertise, strconv.Itoa(nf.RaftPort))
		desc.JoinAddr = net.JoinHostPort(nf.Advertise, strconv.Itoa(nf.JoinPort))
	}
	// The netmesh actor programs what the agent's assignment sets say of
	// the network; it starts first, so the agent's first set finds it.
	if n.netmesh, err = sys.Root.SpawnNamed(worker.NewNetMesh(worker.NetMeshConfig{Kernel: kernel{n}, Log: log.Named("netmesh")}), worker.NameNetMesh); err != nil {
		return fmt.Errorf("start netmesh: %w", err)
	}
	if _, err := sys.Root.SpawnNamed(worker.NewAgent(worker.AgentConfig{
		NodeID: nf.NodeID, Role: role, Description: desc,
		Managers: managers, APIName: manager.NameAPI, Runtime: n.rt,
		OpenNetwork: n.openNetwork,
		CachePath:   filepath.Join(cfg.DataDir, "agent.db"),
		UploadDir:   filepath.Join(cfg.DataDir, "uploads"),
		Task: worker.TaskConfig{NodeID: nf.NodeID, Runtime: n.rt, LogDir: logDir,
			CgroupParent: "/warren-" + nf.NodeID[:12], ResolvConf: n.resolvConf(), Log: log.Named("task")},
		Heartbeat: time.Second, Log: log.Named("agent"), OnRoleChange: n.changeRole, NetMesh: n.netmesh, OnLeft: n.leave,
	}), manager.NameAgent); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	if isManager {
		// Admin credentials for the CLI on this machine, once the node works.
		admin, err := ca.Issue("admin", pki.RoleAdmin, nil, nil, 365*24*time.Hour)
		if err != nil {
			return err
		}
		if err := client.SaveAdminCredentials(cfg.ConfigDir, nf.ClusterID, managers, ca.PEM, admin); err != nil {
			return fmt.Errorf("write CLI credentials to %s: %w", cfg.ConfigDir, err)
		}
	}
	n.serveMetrics(log)
	log.Info("node up", zap.String("cluster", nf.ClusterID), zap.String("addr", addr), zap.String("role", nf.Role), zap.Bool("created", n.created))
	return nil
}

// startManager opens the raft store, starts the manager actors and the join
// endpoint.
func (n *Node) startManager(ctx context.Context, ca *pki.CA, id *pki.Identity, tlsCfg *tls.Config, log *zap.Logger) error {
	cfg, nf, sys := n.cfg, n.File, n.system
	var err error
	fresh := !store.HasState(filepath.Join(cfg.DataDir, "raft"))
	// A founder bootstraps a one-voter configuration; a joined manager
	// starts empty and waits for the leader to add it as a voter.
	n.st, err = store.Open(store.Config{
		Dir: filepath.Join(cfg.DataDir, "raft"), NodeID: nf.NodeID,
		Bind:      net.JoinHostPort(cfg.ListenHost, strconv.Itoa(nf.RaftPort)),
		Advertise: net.JoinHostPort(nf.Advertise, strconv.Itoa(nf.RaftPort)),
		TLS:       tlsCfg, Log: log,
		OnChange:        func(sc *messages.StateChanged) { sys.EventStream.Publish(sc) },
		ForceNewCluster: cfg.ForceNewCluster,
	}, n.created && nf.Bootstrapped)
	if err != nil {
		return err
	}
	leaderCfg := manager.LeaderConfig{Store: n.st, Log: log.Named("leader"), NodeDownAfter: cfg.NodeDownAfter,
		ResyncEvery: 10 * time.Second, MaxDisconnect: cfg.MaxDisconnect}
	if _, err := manager.Start(sys, manager.Config{
		Store: n.st, Log: log.Named("manager"), Leader: leaderCfg,
		API: manager.APIConfig{Store: n.st, Images: n.rt, NodeID: nf.NodeID, Version: cfg.Version, CA: ca,
			UploadDir: filepath.Join(cfg.DataDir, "uploads"), EnableDebug: cfg.EnableDebug, Log: log.Named("api")},
	}); err != nil {
		return fmt.Errorf("start manager: %w", err)
	}
	// A founder must lead before it serves; a restarted manager of a larger
	// cluster serves (reads, forwarding) even before quorum is back.
	// A new manager (joined or promoted) has no raft state: it learns of a
	// leader only once its registration makes it a voter, so it must not
	// wait for one here.
	wait := 5 * time.Second
	if nf.Bootstrapped {
		wait = 30 * time.Second
	}
	if fresh && !nf.Bootstrapped {
		wait = 0
	}
	if err := n.st.WaitLeader(wait); err != nil && nf.Bootstrapped && n.created {
		return err
	}
	// raft applies the log tail only once the leader commits in this term;
	// a leader serves nobody until its state is caught up, so no reader
	// sees the empty state of a node that is still replaying.
	if n.st.IsLeader() {
		if err := manager.Barrier(sys, 30*time.Second); err != nil {
			return fmt.Errorf("catch up with the raft log: %w", err)
		}
	} else if err := n.st.WaitReplayed(10 * time.Second); err != nil {
		// Serve anyway (reads may be stale, writes are forwarded or held):
		// a manager cut off from the others must still answer.
		log.Warn("serving before the raft log is replayed", zap.Error(err))
	}
	return n.serveJoin(ca, id, log.Named("join"))
}

func runtimeName(socket string) string {
	if socket == "" {
		return "containerd (embedded)"
	}
	return "containerd at " + socket
}

func capacity() *messages.Resources {
	var si syscall.Sysinfo_t
	r := &messages.Resources{NanoCpus: int64(goruntime.NumCPU()) * 1e9}
	if syscall.Sysinfo(&si) == nil {
		r.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	return r
}

// changeRole stores the certificate of the node's new role and asks the
// runner to restart the node in it. A demoted manager drops its raft data
// and its signing keys (its intermediate, and the root key if it founded
// the cluster); a promoted worker stores the intermediate CA it was
// issued for the key it made (signerCertPEM, signerKeyPEM), starts raft
// empty and is added as a voter when it registers.
func (n *Node) changeRole(role messages.NodeRole, certPEM, keyPEM, caPEM, signerCertPEM, signerKeyPEM []byte) {
	// Once per run: a second call (a late assignment while this node stops)
	// would rewrite the key pair under the restarting node.
	if !n.roleChanging.CompareAndSwap(false, true) {
		return
	}
	log := n.cfg.Log.With(zap.String("node", n.File.NodeID[:12]))
	cd := certDir(n.cfg.DataDir)
	nf := *n.File
	nf.Role = pki.RoleWorker
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		nf.Role = pki.RoleManager
		// What an interrupted earlier change left goes first: the
		// intermediate key is written as a new file.
		s, err := pki.SignerFromPEM(caPEM, signerCertPEM, signerKeyPEM)
		if err == nil {
			err = pki.RemoveSigner(cd)
		}
		if err == nil {
			err = s.SaveSigner(cd)
		}
		if err != nil {
			log.Error("role change: signing CA", zap.Error(err))
			return
		}
	}
	if err := pki.WriteFile(filepath.Join(cd, pki.RootCertFile), caPEM); err != nil {
		log.Error("role change", zap.Error(err))
		return
	}
	if err := (&pki.Identity{CertPEM: certPEM, KeyPEM: keyPEM}).Save(cd, "node"); err != nil {
		log.Error("role change", zap.Error(err))
		return
	}
	nf.Bootstrapped = false
	if err := writeNodeFile(n.cfg.DataDir, &nf); err != nil {
		log.Error("role change", zap.Error(err))
		return
	}
	if nf.Role != pki.RoleManager {
		// A node keeps no signing key it has no role for: what a worker
		// holds, a compromised worker gives away. Removed only now, so a
		// crash before leaves a manager that still starts (and start
		// finishes the removal on a worker).
		if err := pki.RemoveSigner(cd); err != nil {
			log.Error("role change: remove signing keys", zap.Error(err))
		}
	}
	log.Info("role changed; restarting the node in its new role", zap.String("role", nf.Role))
	select {
	case n.restart <- struct{}{}:
	default:
	}
}

// DropRaft removes a demoted manager's raft data (call after Stop).
func DropRaft(dataDir string) error {
	nf, err := ReadNodeFile(dataDir)
	if err != nil || nf == nil || nf.Role == pki.RoleManager {
		return err
	}
	return os.RemoveAll(filepath.Join(dataDir, "raft"))
}

func (n *Node) proposeClusterInfo(ca *pki.CA) error {
	res, err := n.st.Apply(&messages.Command{Op: &messages.Command_SetClusterInfo{SetClusterInfo: &messages.SetClusterInfo{Info: &messages.ClusterInfo{
		ClusterId: n.File.ClusterID, Name: "warren", CreatedUnixNano: time.Now().UnixNano(), CaFingerprint: ca.Fingerprint(),
		WorkerToken: pki.NewSecret(), ManagerToken: pki.NewSecret(),
	}}}}, 10*time.Second)
	if err != nil {
		return fmt.Errorf("record cluster info: %w", err)
	}
	if res.Error != nil {
		return errors.New(res.Error.Message)
	}
	return nil
}

func (n *Node) serveMetrics(log *zap.Logger) {
	if n.cfg.MetricsAddr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	ln, err := net.Listen("tcp", n.cfg.MetricsAddr)
	if err != nil {
		log.Warn("metrics disabled: cannot listen", zap.String("addr", n.cfg.MetricsAddr), zap.Error(err))
		return
	}
	n.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go n.metrics.Serve(ln)
}

// Stop shuts the node down cleanly; containers keep running.
func (n *Node) Stop() {
	n.stopNetMesh()
	if n.metrics != nil {
		n.metrics.Close()
	}
	if n.join != nil {
		n.join.srv.Close()
	}
	if n.st != nil {
		// Hand leadership over first: the others need not wait out an
		// election timeout for a planned stop.
		if err := manager.TransferLeadership(n.system, 20*time.Second); err != nil {
			n.cfg.Log.Warn("leadership transfer", zap.Error(err))
		}
	}
	if n.system != nil {
		for _, name := range []string{manager.NameAgent, manager.NameManager, manager.NameEvents} {
			_ = n.system.Root.StopFuture(actor.NewPID(n.system.Address(), name)).Wait()
		}
	}
	if n.remote != nil {
		n.remote.Shutdown(false)
	}
	if n.st != nil {
		if err := n.st.Close(); err != nil {
			n.cfg.Log.Warn("close store", zap.Error(err))
		}
	}
	if n.dns != nil {
		n.dns.Close()
	}
	n.meshMu.Lock()
	if n.mesh != nil {
		n.mesh.Close()
	}
	n.meshMu.Unlock()
	if n.net != nil {
		n.net.Close()
	}
	if n.rt != nil {
		n.rt.Close()
	}
	if n.daemon != nil {
		if err := n.daemon.Stop(); err != nil {
			n.cfg.Log.Warn("stop containerd", zap.Error(err))
		}
	}
	n.lock.release()
}
