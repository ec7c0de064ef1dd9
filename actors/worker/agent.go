package worker

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// AgentConfig configures a node's agent.
type AgentConfig struct {
	NodeID      string
	Role        messages.NodeRole
	Description *messages.NodeDescription
	// Managers are actor addresses of managers to report to, tried in order.
	Managers []string
	// APIName is the api actor's name on a manager.
	APIName string
	Runtime runtime.Runtime
	// OpenNetwork brings up the node's task network once its subnet is known.
	OpenNetwork func(subnet netip.Prefix) (Network, error)
	CachePath   string // bbolt file holding the last assignment set
	UploadDir   string // images other nodes send land here before import
	Task        TaskConfig
	Heartbeat   time.Duration
	// OnRoleChange is called (once) with the certificate of the node's new
	// role after a promotion or demotion; the host restarts the node in
	// that role. Nil: roles never change here.
	// A manager also gets its own intermediate CA (signerCertPEM) for the
	// key the agent made (signerKeyPEM).
	OnRoleChange func(role messages.NodeRole, certPEM, keyPEM, caPEM, signerCertPEM, signerKeyPEM []byte)
	// OnLeft is called once the node, removed from the cluster, has
	// stopped and deleted all its tasks: the host removes its network and
	// ends the process. Nil: the agent just goes idle.
	OnLeft func(why string)
	// NetMesh is the node's netmesh actor: it gets each assignment set's
	// network (messages.NetworkView) and answers netProgrammed once it has
	// programmed it (or a newer one that superseded it). Nil: no service
	// network.
	NetMesh *actor.PID
	Log     *zap.Logger
}

var (
	cacheBucket = []byte("agent")
	keyNode     = []byte("node")
	keyAssign   = []byte("assignments")
	keyManagers = []byte("managers")
)

// Self-messages of the agent.
type (
	registerNow struct{}
	flushNow    struct{}
	// netProgrammed: the netmesh actor programmed the network of this
	// index.
	netProgrammed struct{ index uint64 }
	// leaveNow: stop waiting for task cleanups and leave.
	leaveNow struct{}
)

// leaveWait bounds how long a removed node waits for its tasks' cleanup.
const leaveWait = time.Minute

// drainWait bounds how long a task waits for its drain to be confirmed
// before it stops anyway (the leader answers within its own, shorter
// bound; this covers a leader that never answers).
const drainWait = 5 * time.Second

// agent runs a node's tasks. It owns the assignment cache: on start it
// resumes the cached tasks before any manager answers (a worker that reboots
// during a partition keeps serving), then registers, heartbeats, and applies
// every newer assignment set the leader pushes. Task status updates from its
// task actors are batched into reports, and a full report is re-sent
// periodically so a lost report heals.
type agent struct {
	cfg          AgentConfig
	db           *bolt.DB
	net          Network
	subnet       string
	index        uint64
	tasks        map[string]*messages.Task // last assignment set
	actors       map[string]*actor.PID
	status       map[string]*messages.TaskStatusUpdate
	pending      map[string]*messages.TaskStatusUpdate
	flushQ       bool
	cancel       []scheduler.CancelFunc
	mgr          int      // index into managers of the one we talk to
	managers     []string // known manager actor addresses
	uploads      map[string]*os.File
	switching    bool   // a role change is under way
	gcDone       bool   // orphans were swept against an authoritative set
	cachedSig    string // assignmentSig of the cached set
	beatInflight bool
	beatFails    int
	beats        int
	registered   bool
	netIndex     uint64 // newest index whose network the host programmed
	leaving      string // why, once the cluster removed this node
	hasLeft      bool
}

// NewAgent returns the agent's props.
func NewAgent(cfg AgentConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &agent{cfg: cfg}
	}, events.WithLifecycle)
}

func (a *agent) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		for _, c := range a.cancel {
			c()
		}
		a.cancel = nil
		if a.db != nil {
			a.db.Close()
			a.db = nil
		}
	case *registerNow:
		if a.leaving == "" {
			a.register(ctx)
		}
	case *leaveNow:
		a.left(ctx)
	case *messages.Assignments:
		a.assign(ctx, m)
	case *messages.TaskStatusUpdate:
		a.status[m.TaskId] = m
		a.pending[m.TaskId] = m
		if !a.flushQ {
			// Flush after the updates already in the mailbox: a burst
			// becomes one report without waiting on a timer.
			a.flushQ = true
			ctx.Send(ctx.Self(), &flushNow{})
		}
	case *flushNow:
		a.flushQ = false
		a.flush(ctx, a.pending)
		a.pending = map[string]*messages.TaskStatusUpdate{}
	case *heartbeatTick:
		a.heartbeat(ctx)
	case *netProgrammed:
		if m.index > a.netIndex {
			a.netIndex = m.index
			if a.registered {
				ctx.Send(a.managerPID(), &messages.NetworkProgrammed{NodeId: a.cfg.NodeID, Index: m.index})
			}
		}
	case *drainRequest:
		a.drain(ctx, m)
	case *actor.Terminated:
		for id, pid := range a.actors {
			if pid.Equal(m.Who) {
				delete(a.actors, id)
			}
		}
		if a.leaving != "" && len(a.actors) == 0 {
			a.left(ctx)
		}
		// A task still wanted here whose actor ended (it stops only after
		// teardown) is started again by the next assignment set.
	case *messages.ImportImageChunk:
		a.importChunk(ctx, m)
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	}
}

type heartbeatTick struct{}

func (a *agent) start(ctx actor.Context) {
	a.tasks, a.actors = map[string]*messages.Task{}, map[string]*actor.PID{}
	a.uploads = map[string]*os.File{}
	a.setManagers(nil)
	a.status, a.pending = map[string]*messages.TaskStatusUpdate{}, map[string]*messages.TaskStatusUpdate{}
	db, err := bolt.Open(a.cfg.CachePath, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		panic(fmt.Errorf("open assignment cache %s: %w", a.cfg.CachePath, err))
	}
	a.db = db
	var cached *messages.Assignments
	_ = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(cacheBucket)
		if err != nil {
			return err
		}
		if v := b.Get(keyNode); v != nil {
			a.subnet = string(v)
		}
		if v := b.Get(keyManagers); v != nil {
			a.setManagers(strings.Split(string(v), ","))
		}
		if v := b.Get(keyAssign); v != nil {
			cached = &messages.Assignments{}
			if proto.Unmarshal(v, cached) != nil {
				cached = nil
			}
		}
		return nil
	})
	if a.subnet != "" {
		if err := a.openNetwork(); err != nil {
			a.cfg.Log.Error("task network", zap.Error(err))
		}
	}
	if cached != nil && a.net != nil {
		a.cfg.Log.Info("resuming cached assignments", zap.Int("tasks", len(cached.Tasks)), zap.Uint64("index", cached.Index))
		a.apply(ctx, cached)
		a.programNetwork(ctx, cached) // VIPs and peers work before any manager answers
		// Only with the cached set applied do we know what is ours to
		// keep; otherwise the first assignment from a manager decides.
		a.gcOrphans(ctx)
		a.gcDone = true
	}
	ctx.Send(ctx.Self(), &registerNow{})
}

func (a *agent) openNetwork() error {
	if a.net != nil {
		return nil
	}
	p, err := netip.ParsePrefix(a.subnet)
	if err != nil {
		return fmt.Errorf("node subnet %q: %w", a.subnet, err)
	}
	n, err := a.cfg.OpenNetwork(p)
	if err != nil {
		return err
	}
	a.net = n
	a.cfg.Task.Network = n
	return nil
}

// programNetwork hands the netmesh actor an assignment set's network; its
// confirmation comes back as a message.
func (a *agent) programNetwork(ctx actor.Context, m *messages.Assignments) {
	if a.cfg.NetMesh != nil {
		ctx.Request(a.cfg.NetMesh, &messages.NetworkView{Index: m.Index, Services: m.Services, Peers: m.Peers})
	}
}
