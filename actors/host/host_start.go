package host

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
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

// start brings the node up from its data dir: containerd, the actor system
// with the events hub, the manager tree on a manager, remoting, then the
// netmesh actor and the worker agent every node runs.
func (n *Node) start(ctx context.Context) error {
	cfg, nf := n.cfg, n.File
	log := setLogNode(cfg.Log, nf.NodeID[:12]) // every line of the process carries the node id now
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
	if err := n.setTaskLogs(); err != nil {
		return err
	}

	n.system = actor.NewActorSystem(actor.WithLoggerFactory(slogFactory(log.Named("actor"))))
	sys := n.system
	hub, err := sys.Root.SpawnNamed(events.NewHub(nf.NodeID, filepath.Join(cfg.DataDir, "events.db"), log.Named("events"),
		events.Retention{MaxAge: cfg.EventsMaxAge, MaxCount: cfg.EventsMaxCount}), manager.NameEvents)
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
	n.remote, n.Addr, err = remoting.Start(sys, remoting.Config{Host: cfg.ListenHost, Port: nf.Port, Advertise: addr, TLS: tlsCfg, Log: log.Named("remoting"),
		OnRefused: manager.AuditRefusals(sys)}) // refusals go to the audit log (a manager's)
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
	// The df actor counts this node's disk use when a manager asks
	// (`system df`).
	if _, err := sys.Root.SpawnNamed(worker.NewDf(worker.DfConfig{NodeID: nf.NodeID, Hostname: cfg.Hostname, DataDir: cfg.DataDir,
		Runtime: n.rt, Log: log.Named("df")}), worker.NameDf); err != nil {
		return fmt.Errorf("start the df actor: %w", err)
	}
	// The netmesh actor programs what the agent's assignment sets say of
	// the network; it starts first, so the agent's first set finds it.
	if n.netmesh, err = sys.Root.SpawnNamed(worker.NewNetMesh(worker.NetMeshConfig{Kernel: kernel{n}, Log: log.Named("netmesh")}), worker.NameNetMesh); err != nil {
		return fmt.Errorf("start netmesh: %w", err)
	}
	if _, err := sys.Root.SpawnNamed(worker.NewLogs(worker.LogsConfig{NodeID: nf.NodeID, Dir: logDir, Runtime: n.rt, Log: log.Named("logs")}), worker.NameLogs); err != nil {
		return fmt.Errorf("start the log reader: %w", err)
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
	// The process's own metrics (Go runtime, process) and, on a manager,
	// the cluster and raft figures of its replica. n.st is set before this
	// runs and the server closes before the store does.
	reg := metricsRegistry(func() *store.Store { return n.st }, n.system, n.rt, n.File.NodeID, log.Named("metrics"))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, reg}, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(log)}))
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

// metricsRegistry holds every Warren family a node exports (docs/metrics.md):
// the cluster, raft, scheduler and api figures of a manager (none while
// st returns nil), actor restarts, and the tasks of this node.
func metricsRegistry(st func() *store.Store, sys *actor.ActorSystem, rt worker.Containers, nodeID string, log *zap.Logger) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(store.NewCollector(st), manager.NewCollector(st), events.WatchRestarts(sys), worker.NewTaskCollector(rt, nodeID, log))
	return reg
}
