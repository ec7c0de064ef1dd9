package manager

import (
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// LeaderConfig configures the leader-only actors.
type LeaderConfig struct {
	Store *store.Store
	Log   *zap.Logger
	// NodeDownAfter marks a node down after this long without a heartbeat.
	NodeDownAfter time.Duration
	// ResyncEvery pushes each node its full assignment set this often, so a
	// lost message can never leave a worker drifting.
	ResyncEvery time.Duration
	// MaxDisconnect: the records of stopped tasks on a node down this long
	// (or removed) are dropped. Their replacements run elsewhere from the
	// moment the node is down; this only bounds what the state remembers.
	// A node that returns later stops whatever it still runs of them.
	MaxDisconnect time.Duration
}

// leaderActor lives only while this manager is the raft leader. It spawns one
// service actor per service and one node actor per node as they appear in
// replicated state, stops them as they go, routes worker messages to node
// actors, and removes finished tasks of deleted services.
type leaderActor struct {
	cfg      LeaderConfig
	services map[string]*actor.PID
	nodes    map[string]*actor.PID
	// caughtUp completes when the barrier of Started has; ready is set
	// then, and until it is, messages wait for it.
	caughtUp *actor.Future
	ready    bool
	// netIndex is, per node, the newest assignment index whose network it
	// has programmed; drains are the stops waiting on them.
	netIndex map[string]uint64
	drains   []*drain
	sub      *eventstream.Subscription
	gc       scheduler.CancelFunc
}

func newLeader(cfg LeaderConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &leaderActor{cfg: cfg}
	}, events.WithLifecycle)
}

func (a *leaderActor) Receive(ctx actor.Context) {
	st := a.cfg.Store.State
	switch ctx.Message().(type) {
	case *actor.Started:
		a.services, a.nodes = map[string]*actor.PID{}, map[string]*actor.PID{}
		a.netIndex = map[string]uint64{}
		// Read-your-writes: everything committed by earlier leaders is
		// applied here before the leader-only actors read the state. The
		// barrier runs off the mailbox; what arrives meanwhile waits for it
		// (below), in order, each with its own sender.
		a.caughtUp = ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameMembership), &barrier{timeout: 5 * time.Second}, 7*time.Second)
		ctx.ReenterAfter(a.caughtUp, func(res any, err error) {
			if r := membershipResult(res, err); r.err != nil {
				a.cfg.Log.Warn("leader barrier", zap.Error(r.err))
			}
			a.ready = true
			ctx.SpawnNamed(newScheduler(a.cfg), "scheduler")
			ctx.SpawnNamed(newNetView(a.cfg), "netview") // before the node actors it feeds
			a.sync(ctx)
			a.sub = subscribeState(ctx, func(*messages.StateChanged) bool { return true })
			a.gc = scheduler.NewTimerScheduler(ctx).SendRepeatedly(30*time.Second, 30*time.Second, ctx.Self(), &tick{kind: "gc"})
		})
		return
	case *actor.Stopping, *actor.Restarting:
		unsubscribe(ctx, a.sub)
		if a.gc != nil {
			a.gc()
		}
		return
	}
	if !a.ready {
		ctx.ReenterAfter(a.caughtUp, func(any, error) { a.Receive(ctx) })
		return
	}
	switch m := ctx.Message().(type) {
	case *tick:
		switch m.kind {
		case "drain":
			a.checkDrains(ctx)
		default:
			a.reap(ctx, st.Tasks(store.TaskFilter{}))
		}
	case *messages.StateChanged:
		if m.Restored {
			a.sync(ctx)
		} else {
			a.onChange(ctx, m)
		}
		if len(a.drains) > 0 {
			a.checkDrains(ctx)
		}
	case *netConfirm:
		a.netConfirm(ctx, m)
	case *messages.PromoteNodeRequest:
		a.promote(ctx, m)
	case *messages.DemoteNodeRequest:
		a.demote(ctx, m)
	case *messages.DebugCrash:
		panic("debug crash requested for " + ctx.Self().Id)
	case *messages.CommandResult:
		if m.Error != nil {
			a.cfg.Log.Warn("leader write", zap.String("error", m.Error.Message))
		}
	case *messages.RegisterNode, *messages.Heartbeat, *messages.TaskStatusReport, *messages.NetworkProgrammed, *messages.DrainTask:
		// The api checked this already; the leader checks again, so that no
		// path to it (a forward, a new route) can skip the check.
		if err := nodeMayReport(ctx); err != nil {
			a.cfg.Log.Warn("leader refused a node message", zap.Error(err))
			if _, ok := m.(*messages.RegisterNode); ok {
				ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%v", err)})
			}
			return
		}
		a.nodeMessage(ctx, m)
	}
	_ = st
}

// nodeMessage handles what a node says about itself, once its identity is
// checked.
func (a *leaderActor) nodeMessage(ctx actor.Context, msg any) {
	st := a.cfg.Store.State
	switch m := msg.(type) {
	case *messages.DrainTask:
		a.drainTask(ctx, m)
	case *messages.NetworkProgrammed:
		a.programmed(ctx, m.NodeId, m.Index)
	case *messages.RegisterNode:
		a.register(ctx, m)
	case *messages.Heartbeat:
		if st.Removed(m.NodeId) {
			ctx.Respond(removedReply(m.NodeId))
			return
		}
		a.programmed(ctx, m.NodeId, m.NetworkIndex)
		if pid, ok := a.nodes[m.NodeId]; ok {
			ctx.Forward(pid)
		}
	case *messages.TaskStatusReport:
		if pid, ok := a.nodes[m.NodeId]; ok {
			ctx.Forward(pid)
		}
	}
}

// sync spawns and stops children to match the state.
func (a *leaderActor) sync(ctx actor.Context) {
	st := a.cfg.Store.State
	want := map[string]bool{}
	for _, v := range st.Services() {
		want[v.Id] = true
		a.spawnService(ctx, v)
	}
	for id, pid := range a.services {
		if !want[id] {
			ctx.Stop(pid)
			delete(a.services, id)
		}
	}
	want = map[string]bool{}
	for _, n := range st.Nodes() {
		want[n.Id] = true
		a.spawnNode(ctx, n.Id)
	}
	for id, pid := range a.nodes {
		if !want[id] {
			ctx.Stop(pid)
			delete(a.nodes, id)
		}
	}
	a.reap(ctx, st.Tasks(store.TaskFilter{}))
}

func (a *leaderActor) spawnService(ctx actor.Context, v *messages.Service) {
	if _, ok := a.services[v.Id]; ok {
		return
	}
	pid, err := ctx.SpawnNamed(newService(a.cfg, v.Id), "services/"+v.Spec.Name)
	if err != nil {
		a.cfg.Log.Error("spawn service actor", zap.String("service", v.Spec.Name), zap.Error(err))
		return
	}
	a.services[v.Id] = pid
}

func (a *leaderActor) spawnNode(ctx actor.Context, id string) {
	if _, ok := a.nodes[id]; ok {
		return
	}
	pid, err := ctx.SpawnNamed(newNodeActor(a.cfg, id), "nodes/"+id)
	if err != nil {
		a.cfg.Log.Error("spawn node actor", zap.String("node", id), zap.Error(err))
		return
	}
	a.nodes[id] = pid
}

func (a *leaderActor) onChange(ctx actor.Context, m *messages.StateChanged) {
	var tasks []*messages.Task
	for _, c := range m.Changes {
		switch o := c.Object.(type) {
		case *messages.Change_Service:
			if c.Op == messages.ChangeOp_CHANGE_OP_DELETE {
				if pid, ok := a.services[o.Service.Id]; ok {
					ctx.Stop(pid)
					delete(a.services, o.Service.Id)
				}
			} else {
				a.spawnService(ctx, o.Service)
			}
		case *messages.Change_Node:
			if c.Op == messages.ChangeOp_CHANGE_OP_DELETE {
				if pid, ok := a.nodes[o.Node.Id]; ok {
					ctx.Stop(pid)
					delete(a.nodes, o.Node.Id)
				}
			} else {
				a.spawnNode(ctx, o.Node.Id)
			}
		case *messages.Change_Task:
			if c.Op != messages.ChangeOp_CHANGE_OP_DELETE {
				tasks = append(tasks, o.Task)
			}
		}
	}
	a.reap(ctx, tasks)
}

// reap removes stopped tasks of deleted services once their workers report
// them finished, and stopped tasks whose node is removed or down for longer
// than MaxDisconnect.
func (a *leaderActor) reap(ctx actor.Context, tasks []*messages.Task) {
	st := a.cfg.Store.State
	var ids []string
	now := time.Now()
	for _, t := range tasks {
		if t.DesiredState != messages.TaskState_TASK_STATE_SHUTDOWN {
			continue
		}
		n := st.Node(t.NodeId)
		gone := t.NodeId == "" || n == nil ||
			(n.GetStatus().GetState() == messages.NodeState_NODE_STATE_DOWN && a.cfg.MaxDisconnect > 0 &&
				now.Sub(time.Unix(0, n.GetStatus().GetLastHeartbeatUnixNano())) > a.cfg.MaxDisconnect)
		switch {
		case gone:
			ids = append(ids, t.Id)
		case st.Service(t.ServiceId) == nil && terminal(t.GetStatus().GetState()):
			ids = append(ids, t.Id)
		}
	}
	if len(ids) > 0 {
		ctx.Request(storePID(ctx), &messages.Propose{Command: &messages.Command{Op: &messages.Command_RemoveTasks{RemoveTasks: &messages.RemoveTasks{TaskIds: ids}}}})
	}
}

// register records a node that (re)connects: a new node gets a subnet; a
// known one keeps its spec (role, availability, labels) and is marked ready.
func (a *leaderActor) register(ctx actor.Context, m *messages.RegisterNode) {
	st := a.cfg.Store.State
	if st.Removed(m.NodeId) {
		ctx.Respond(removedReply(m.NodeId))
		return
	}
	now := time.Now().UnixNano()
	// A WireGuard key identifies one node to every other: a second node
	// announcing it would shadow the first in everyone's mesh (peers are
	// picked by key).
	if k := m.Description.GetWgPublicKey(); k != "" {
		for _, o := range st.Nodes() {
			if o.Id != m.NodeId && o.Description.GetWgPublicKey() == k {
				a.cfg.Log.Warn("refused a registration with another node's WireGuard key", zap.String("node", m.NodeId), zap.String("owner", o.Id))
				ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID,
					"node %s announces the WireGuard public key of node %s: each node needs its own key (delete wg.key in its data dir and restart it to make one)", m.NodeId, o.Id)})
				return
			}
		}
	}
	// A known node's role is what the state says: it changes only through
	// an admin's promote or demote, never through what a node claims. A new
	// node's role is the one its join gave it (the api checked the claim
	// against its certificate).
	n := st.Node(m.NodeId)
	if n == nil {
		n = &messages.Node{Id: m.NodeId, Spec: &messages.NodeSpec{Role: m.Role}}
	}
	if n.Spec == nil {
		n.Spec = &messages.NodeSpec{}
	}
	n.Description = proto.Clone(m.Description).(*messages.NodeDescription)
	n.Status = &messages.NodeStatus{State: messages.NodeState_NODE_STATE_READY, LastHeartbeatUnixNano: now, Message: "registered"}
	if n.Spec.Role == messages.NodeRole_NODE_ROLE_MANAGER && m.Role == messages.NodeRole_NODE_ROLE_MANAGER {
		// A joined manager becomes a raft voter before it is recorded (the
		// membership actor does nothing for one that already is); the
		// change waits for the new voter to be reachable, and the agent's
		// retry comes back here if it failed.
		askMembership(ctx, &addVoter{id: m.NodeId, addr: m.Description.GetRaftAddr()}, changeTimeout+10*time.Second, func(r *membershipReply) {
			switch {
			case errors.Is(r.err, errChangeUnderWay):
				ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "adding this manager to raft: retrying")})
			case r.err != nil:
				ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "add manager to raft: %v", r.err)})
			default:
				a.upsertRegistered(ctx, n)
			}
		})
		return
	}
	a.upsertRegistered(ctx, n)
}

// removedReply answers a removed node's registration or heartbeat: it
// must leave, not come back (`node rm` is final for an identity).
func removedReply(id string) *messages.RegisterNodeReply {
	return &messages.RegisterNodeReply{Removed: true, Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED,
		"node %s was removed from the cluster: it leaves now; to join again, clear its data dir and run `warren cluster join` with a token", id)}
}

func (a *leaderActor) upsertRegistered(ctx actor.Context, n *messages.Node) {
	st := a.cfg.Store.State
	write(ctx, &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n}}}, proposeTimeout+time.Second, func(e *messages.Error) {
		if e != nil {
			ctx.Respond(&messages.RegisterNodeReply{Error: e})
			return
		}
		a.spawnNode(ctx, n.Id)
		ctx.Respond(&messages.RegisterNodeReply{Node: st.Node(n.Id), Managers: managerActorAddrs(st)})
	})
}

// managerActorAddrs lists every manager's actor address.
func managerActorAddrs(st *store.State) []string {
	var out []string
	for _, n := range st.Nodes() {
		if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER && n.Description.GetAddr() != "" {
			out = append(out, n.Description.GetAddr())
		}
	}
	return out
}

// promote makes a worker a manager: the state says so first; the node sees
// its new role in its next assignment set, gets a manager certificate,
// restarts as a manager and is added as a raft voter when it registers.
func (a *leaderActor) promote(ctx actor.Context, m *messages.PromoteNodeRequest) {
	n := findNode(a.cfg.Store.State, m.Node)
	switch {
	case n == nil:
		ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
		return
	case n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER:
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is already a manager", m.Node)})
		return
	case n.GetStatus().GetState() != messages.NodeState_NODE_STATE_READY:
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is not ready: a manager must be reachable to join raft; bring it up first", m.Node)})
		return
	}
	n.Spec.Role = messages.NodeRole_NODE_ROLE_MANAGER
	a.writeNode(ctx, n)
}

// demote makes a manager a worker, refusing what would lose quorum: the
// managers left must still have a majority of themselves reachable.
func (a *leaderActor) demote(ctx actor.Context, m *messages.DemoteNodeRequest) {
	n := findNode(a.cfg.Store.State, m.Node)
	if n == nil {
		ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
		return
	}
	if n.Spec.GetRole() != messages.NodeRole_NODE_ROLE_MANAGER {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is not a manager", m.Node)})
		return
	}
	askMembership(ctx, &listServers{}, 5*time.Second, func(r *membershipReply) {
		if r.err != nil {
			ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "read raft configuration: %v", r.err)})
			return
		}
		a.demoteVoter(ctx, m, n, r.servers)
	})
}

// demoteVoter removes manager n from raft once the configuration shows the
// others keep a quorum, then records it as a worker.
func (a *leaderActor) demoteVoter(ctx actor.Context, m *messages.DemoteNodeRequest, n *messages.Node, servers []store.Server) {
	st := a.cfg.Store.State
	left, healthy := 0, 0
	for _, s := range servers {
		if s.ID == n.Id || !s.Voter {
			continue
		}
		left++
		if o := st.Node(s.ID); o != nil && o.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY {
			healthy++
		}
	}
	if left == 0 {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is the last manager: promote another node first", m.Node)})
		return
	}
	if healthy < left/2+1 {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID,
			"demoting %s would leave %d managers of which only %d are up: that loses quorum; bring managers back or promote others first", m.Node, left, healthy)})
		return
	}
	if _, self := a.cfg.Store.Leader(); self == n.Id {
		// The api hands leadership over before asking; this is a race.
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "node %s leads right now: run the command again", m.Node)})
		return
	}
	askMembership(ctx, &removeServer{id: n.Id}, changeTimeout+10*time.Second, func(r *membershipReply) {
		if r.err != nil {
			ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "remove from raft: %v", r.err)})
			return
		}
		n.Spec.Role = messages.NodeRole_NODE_ROLE_WORKER
		a.writeNode(ctx, n)
	})
}

func (a *leaderActor) writeNode(ctx actor.Context, n *messages.Node) {
	write(ctx, &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n}}}, proposeTimeout+time.Second, func(e *messages.Error) {
		reply := &messages.NodeReply{Error: e}
		if e == nil {
			reply.Node = a.cfg.Store.State.Node(n.Id)
		}
		ctx.Respond(reply)
	})
}
