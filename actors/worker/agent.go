package worker

import (
	"context"
	"errors"
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

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/store/pki"
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

// changeRole gets a certificate for the role the cluster now gives this
// node and hands it to the host, which restarts the node in that role. The
// node keeps running its tasks throughout; containers are adopted again.
func (a *agent) changeRole(ctx actor.Context, role messages.NodeRole) {
	if a.switching || a.cfg.OnRoleChange == nil {
		return
	}
	keyPEM, csrPEM, err := pki.NewCSR(a.cfg.NodeID)
	var signerKeyPEM, signerCSR []byte
	if err == nil && role == messages.NodeRole_NODE_ROLE_MANAGER {
		// A manager signs with its own intermediate CA; its key is made
		// here and never leaves the node.
		signerKeyPEM, signerCSR, err = pki.NewCSR("warren-manager-ca-" + a.cfg.NodeID)
	}
	if err != nil {
		a.cfg.Log.Error("role change: key", zap.Error(err))
		return
	}
	a.switching = true
	a.cfg.Log.Info("role changed by the cluster; asking for a new certificate", zap.String("role", role.String()))
	// Ask another manager than ourselves: a demoted node's own replica may
	// not know yet what the leader decided.
	target := a.managerPID()
	for i := range a.managers {
		if m := a.managers[(a.mgr+i)%len(a.managers)]; m != a.cfg.Description.GetAddr() {
			target = actor.NewPID(m, a.cfg.APIName)
			break
		}
	}
	f := ctx.RequestFuture(target, &messages.CertificateRequest{NodeId: a.cfg.NodeID, CsrPem: csrPEM, SignerCsrPem: signerCSR}, 10*time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.CertificateReply)
		if err != nil || r == nil || r.Error != nil || r.Role != role {
			a.cfg.Log.Warn("role change: no certificate yet; retrying on the next assignment", zap.String("error", fmt.Sprint(err, r.GetError())))
			a.switching = false
			return
		}
		a.cfg.OnRoleChange(r.Role, r.CertPem, keyPEM, r.CaPem, r.SignerCertPem, signerKeyPEM)
	})
}

// importChunk receives an image a manager distributes to every node.
func (a *agent) importChunk(ctx actor.Context, m *messages.ImportImageChunk) {
	fail := func(format string, args ...any) {
		if f := a.uploads[m.UploadId]; f != nil {
			f.Close()
			os.Remove(f.Name())
			delete(a.uploads, m.UploadId)
		}
		ctx.Respond(&messages.ImportImageReply{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INTERNAL, Message: fmt.Sprintf(format, args...)}})
	}
	f := a.uploads[m.UploadId]
	if f == nil {
		if err := os.MkdirAll(a.cfg.UploadDir, 0o700); err != nil {
			fail("upload dir: %v", err)
			return
		}
		var err error
		if f, err = os.CreateTemp(a.cfg.UploadDir, "import-*.tar"); err != nil {
			fail("upload: %v", err)
			return
		}
		a.uploads[m.UploadId] = f
	}
	if _, err := f.Write(m.Data); err != nil {
		fail("upload: %v", err)
		return
	}
	if !m.Last {
		ctx.Respond(&messages.ImportImageReply{})
		return
	}
	// The import may take minutes: it runs off the mailbox, so heartbeats
	// and assignments go on meanwhile. The goroutine owns the file now.
	delete(a.uploads, m.UploadId)
	rt := a.cfg.Runtime
	blocking.Do(ctx, importTimeout+time.Minute, func() ([]string, error) {
		defer func() { f.Close(); os.Remove(f.Name()) }()
		if _, err := f.Seek(0, 0); err != nil {
			return nil, fmt.Errorf("read upload: %w", err)
		}
		c, cancel := context.WithTimeout(context.Background(), importTimeout)
		defer cancel()
		imgs, err := rt.ImportImage(c, f)
		if err != nil {
			return nil, fmt.Errorf("import image: %w", err)
		}
		return imgs, nil
	}, func(imgs []string, err error) {
		if err != nil {
			ctx.Respond(&messages.ImportImageReply{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INTERNAL, Message: err.Error()}})
			return
		}
		ctx.Respond(&messages.ImportImageReply{Images: imgs})
	})
}

// importTimeout bounds one image import into this node's containerd.
const importTimeout = 5 * time.Minute

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
		a.gcOrphans()
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

// gcOrphans deletes containers of this node that no cached assignment names
// (left by a crash between a manager's removal and our cleanup).
func (a *agent) gcOrphans() {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := a.cfg.Runtime.List(c)
	if err != nil {
		a.cfg.Log.Warn("list containers", zap.Error(err))
		return
	}
	for _, s := range list {
		if s.Labels["warren.node"] != a.cfg.NodeID {
			continue
		}
		if _, ok := a.tasks[s.ID]; ok {
			continue
		}
		a.cfg.Log.Info("removing orphan container", zap.String("container", s.ID))
		_ = a.cfg.Runtime.Stop(c, s.ID, 5*time.Second)
		if err := a.cfg.Runtime.Delete(c, s.ID); err != nil {
			a.cfg.Log.Warn("remove orphan", zap.String("container", s.ID), zap.Error(err))
		}
	}
	if gc, ok := a.net.(interface {
		GC(context.Context, map[string]bool) error
	}); ok {
		keep := map[string]bool{}
		for id := range a.tasks {
			keep[id] = true
		}
		if err := gc.GC(c, keep); err != nil {
			a.cfg.Log.Warn("network gc", zap.Error(err))
		}
	}
}

func (a *agent) managerPID() *actor.PID {
	return actor.NewPID(a.managers[a.mgr%len(a.managers)], a.cfg.APIName)
}

// setManagers puts the configured managers first (this node itself, on a
// manager) and adds the others, without duplicates.
func (a *agent) setManagers(list []string) {
	seen := map[string]bool{}
	var out []string
	for _, m := range append(append([]string{}, a.cfg.Managers...), list...) {
		if m != "" && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	a.managers = out
}

// learnManagers records the managers the leader told us about, so a worker
// that restarts while its first manager is gone still finds the others.
func (a *agent) learnManagers(list []string) {
	if len(list) == 0 {
		return
	}
	before := strings.Join(a.managers, ",")
	a.setManagers(list)
	if after := strings.Join(a.managers, ","); after != before && a.db != nil {
		_ = a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(cacheBucket).Put(keyManagers, []byte(after)) })
	}
}

func (a *agent) register(ctx actor.Context) {
	req := &messages.RegisterNode{NodeId: a.cfg.NodeID, Role: a.cfg.Role, Description: a.cfg.Description}
	f := ctx.RequestFuture(a.managerPID(), req, 3*time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.RegisterNodeReply)
		if r.GetRemoved() {
			a.leave(ctx, r.GetError().GetMessage())
			return
		}
		if err != nil || r == nil || r.Error != nil || r.Node == nil {
			a.cfg.Log.Debug("register: retrying", zap.String("error", fmt.Sprint(err, r.GetError())))
			a.mgr++ // fail over to the next manager we know
			a.cancel = append(a.cancel, scheduler.NewTimerScheduler(ctx).SendOnce(250*time.Millisecond, ctx.Self(), &registerNow{}))
			return
		}
		a.subnet = r.Node.Subnet
		_ = a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(cacheBucket).Put(keyNode, []byte(a.subnet)) })
		a.learnManagers(r.Managers)
		if err := a.openNetwork(); err != nil {
			a.cfg.Log.Error("task network", zap.Error(err))
		}
		a.beatFails = 0
		if !a.registered {
			a.registered = true
			a.cfg.Log.Info("registered with manager", zap.String("subnet", a.subnet))
			a.cancel = append(a.cancel, scheduler.NewTimerScheduler(ctx).SendRepeatedly(a.cfg.Heartbeat, a.cfg.Heartbeat, ctx.Self(), &heartbeatTick{}))
		}
		// Report everything we run, so the manager reconciles from facts.
		a.flush(ctx, a.status)
	})
}

// heartbeat is acknowledged by the leader's node actor; missed acks move
// the agent to the next manager, and enough of them make it register again
// (the new leader may not know it yet). Tasks are never touched for it: a
// worker that cannot reach the managers keeps running what it runs.
func (a *agent) heartbeat(ctx actor.Context) {
	a.beats++
	if a.beatInflight {
		return
	}
	a.beatInflight = true
	f := ctx.RequestFuture(a.managerPID(), &messages.Heartbeat{NodeId: a.cfg.NodeID, UnixNano: time.Now().UnixNano(), NetworkIndex: a.netIndex}, 2*a.cfg.Heartbeat)
	ctx.ReenterAfter(f, func(res any, err error) {
		a.beatInflight = false
		if r, ok := res.(*messages.RegisterNodeReply); ok && r.Removed {
			a.leave(ctx, r.GetError().GetMessage())
			return
		}
		if _, ok := res.(*messages.Heartbeat); err == nil && ok {
			a.beatFails = 0
			return
		}
		a.beatFails++
		a.mgr++
		if a.beatFails == 3 {
			a.cfg.Log.Warn("managers not answering heartbeats; registering again", zap.Strings("managers", a.managers))
			ctx.Send(ctx.Self(), &registerNow{})
		}
	})
	if a.beats%10 == 0 {
		a.flush(ctx, a.status) // periodic full report heals lost ones
	}
}

// leave: the cluster removed this node. Its tasks were replaced elsewhere
// already; stop and delete them all here, forget the cached assignments
// (a restart must not bring them back), then hand over to the host.
func (a *agent) leave(ctx actor.Context, why string) {
	if a.leaving != "" {
		return
	}
	a.leaving = why
	a.cfg.Log.Warn("this node was removed from the cluster; stopping its tasks and leaving", zap.String("why", why))
	for _, c := range a.cancel {
		c()
	}
	a.cancel = nil
	if a.db != nil {
		if err := a.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(cacheBucket)
			return errors.Join(b.Delete(keyAssign), b.Delete(keyManagers))
		}); err != nil {
			a.cfg.Log.Warn("forget cached assignments", zap.Error(err))
		}
	}
	if len(a.actors) == 0 {
		a.left(ctx)
		return
	}
	for _, pid := range a.actors {
		ctx.Send(pid, &removeTask{})
	}
	// A task whose cleanup keeps failing must not hold the node forever.
	scheduler.NewTimerScheduler(ctx).SendOnce(leaveWait, ctx.Self(), &leaveNow{})
}

func (a *agent) left(actor.Context) {
	if a.hasLeft {
		return
	}
	a.hasLeft = true
	if len(a.actors) > 0 {
		a.cfg.Log.Warn("leaving with tasks whose cleanup did not finish", zap.Int("tasks", len(a.actors)))
	} else {
		a.cfg.Log.Info("all tasks stopped; leaving the cluster")
	}
	if a.cfg.OnLeft != nil {
		go a.cfg.OnLeft(a.leaving) // it stops this actor: not from its mailbox
	}
}

// programNetwork hands the netmesh actor an assignment set's network; its
// confirmation comes back as a message.
func (a *agent) programNetwork(ctx actor.Context, m *messages.Assignments) {
	if a.cfg.NetMesh != nil {
		ctx.Request(a.cfg.NetMesh, &messages.NetworkView{Index: m.Index, Services: m.Services, Peers: m.Peers})
	}
}

// drain asks the leader to confirm no node routes new connections to a
// task any more, then tells the task actor to go on and signal it. Status
// updates still queued go first: the unhealthy report is what takes the
// task out of the endpoints. A node cut off from the managers (heartbeats
// failing) cannot get a confirmation and does not wait for one.
func (a *agent) drain(ctx actor.Context, m *drainRequest) {
	a.flush(ctx, a.pending)
	a.pending = map[string]*messages.TaskStatusUpdate{}
	if !a.registered || a.beatFails > 0 || a.cfg.NetMesh == nil {
		ctx.Send(m.from, &drained{seq: m.seq})
		return
	}
	start := time.Now()
	f := ctx.RequestFuture(a.managerPID(), &messages.DrainTask{NodeId: a.cfg.NodeID, TaskId: m.task}, drainWait)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.DrainTaskReply)
		switch {
		case err != nil:
			a.cfg.Log.Warn("drain not confirmed; stopping the task anyway", zap.String("task", m.task), zap.Error(err))
		case len(r.GetUnconfirmed()) > 0:
			a.cfg.Log.Warn("drain confirmed by some nodes only", zap.String("task", m.task), zap.Strings("unconfirmed", r.Unconfirmed))
		default:
			a.cfg.Log.Debug("task drained", zap.String("task", m.task), zap.Uint64("index", r.GetIndex()), zap.Duration("took", time.Since(start)))
		}
		ctx.Send(m.from, &drained{seq: m.seq})
	})
}

func (a *agent) flush(ctx actor.Context, ups map[string]*messages.TaskStatusUpdate) {
	if len(ups) == 0 || !a.registered {
		return
	}
	rep := &messages.TaskStatusReport{NodeId: a.cfg.NodeID}
	for _, u := range ups {
		rep.Updates = append(rep.Updates, u)
	}
	ctx.Send(a.managerPID(), rep)
}

func (a *agent) assign(ctx actor.Context, m *messages.Assignments) {
	if m.NodeId != a.cfg.NodeID || m.Index < a.index || a.leaving != "" {
		return // for another node, or older than what we run
	}
	a.learnManagers(m.Managers)
	if m.Node != nil && m.Node.Spec.GetRole() != a.cfg.Role {
		a.changeRole(ctx, m.Node.Spec.GetRole())
	}
	// Cache (an fsync) only when what this node must run changed, not on
	// every push a status change elsewhere causes.
	if sig := assignmentSig(m); sig != a.cachedSig {
		data, err := proto.Marshal(m)
		if err == nil {
			err = a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(cacheBucket).Put(keyAssign, data) })
		}
		if err != nil {
			a.cfg.Log.Warn("cache assignments", zap.Error(err))
		} else {
			a.cachedSig = sig
		}
	}
	if a.net == nil {
		if err := a.openNetwork(); err != nil {
			a.cfg.Log.Warn("assignments before the task network is up; waiting", zap.Error(err))
			return
		}
	}
	a.apply(ctx, m)
	a.programNetwork(ctx, m)
	if !a.gcDone {
		a.gcOrphans()
		a.gcDone = true
	}
}

// apply makes the task actors match an assignment set.
func (a *agent) apply(ctx actor.Context, m *messages.Assignments) {
	a.index = m.Index
	want := map[string]*messages.Task{}
	for _, t := range m.Tasks {
		want[t.Id] = t
	}
	for id, pid := range a.actors {
		if _, ok := want[id]; !ok {
			ctx.Send(pid, &removeTask{})
		}
	}
	for id, t := range want {
		if old, ok := a.tasks[id]; ok && t.Epoch < old.Epoch {
			// Fenced: never act on an older assignment. Keep the newer one
			// as the reference, or the same stale task pushed again would
			// pass the check next time.
			want[id] = old
			continue
		}
		if pid, ok := a.actors[id]; ok {
			ctx.Send(pid, t)
			continue
		}
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			// Not running here (any more): make sure nothing is left, once.
			if st := a.status[id]; st != nil && st.Status.GetState() == messages.TaskState_TASK_STATE_SHUTDOWN {
				continue
			}
		}
		pid, err := ctx.SpawnNamed(newTask(a.cfg.Task, t), "tasks/"+id)
		if err != nil {
			a.cfg.Log.Warn("spawn task actor", zap.String("task", id), zap.Error(err))
			continue
		}
		ctx.Watch(pid)
		a.actors[id] = pid
	}
	a.tasks = want
	for id := range a.status {
		if _, ok := want[id]; !ok {
			if _, running := a.actors[id]; !running {
				delete(a.status, id)
			}
		}
	}
}

// assignmentSig identifies what an assignment set asks of this node: its
// tasks' ids, epochs, desired states and spec versions.
func assignmentSig(m *messages.Assignments) string {
	var b strings.Builder
	for _, t := range m.Tasks {
		fmt.Fprintf(&b, "%s/%d/%d/%d;", t.Id, t.Epoch, t.DesiredState, t.SpecVersion)
	}
	return b.String()
}
