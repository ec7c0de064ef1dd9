package manager

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// nodesTable is what manager/api/nodes takes, and from whom.
var nodesTable = table{
	typeName(&messages.ListNodesRequest{}):   adminRoles,
	typeName(&messages.InspectNodeRequest{}): adminRoles,
	typeName(&messages.UpdateNodeRequest{}):  adminRoles,
	typeName(&messages.RemoveNodeRequest{}):  adminRoles,
	typeName(&messages.PromoteNodeRequest{}): adminRoles,
	typeName(&messages.DemoteNodeRequest{}):  adminRoles,
	// The node protocol: a worker speaks for its own node only
	// (nodeMayReport).
	typeName(&messages.RegisterNode{}):      nodeRoles,
	typeName(&messages.Heartbeat{}):         nodeRoles,
	typeName(&messages.TaskStatusReport{}):  nodeRoles,
	typeName(&messages.NetworkProgrammed{}): nodeRoles,
	typeName(&messages.DrainTask{}):         nodeRoles,
}

// nodesAPI (manager/api/nodes) answers the node requests: reads from the
// local replica; updates and removals decided on the leader; promotions,
// demotions and what nodes report about themselves handed to the leader
// actor.
type nodesAPI struct {
	cfg    APIConfig
	leader *onLeader
}

func newNodesAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &nodesAPI{cfg: cfg, leader: newOnLeader(cfg)}
	}, events.WithLifecycle)
}

func (a *nodesAPI) Receive(ctx actor.Context) {
	st := a.cfg.Store.State
	switch m := ctx.Message().(type) {
	case *messages.RegisterNode, *messages.Heartbeat, *messages.TaskStatusReport, *messages.NetworkProgrammed, *messages.DrainTask:
		if err := nodeMayReport(ctx); err != nil {
			if _, ok := m.(*messages.RegisterNode); ok {
				ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%v", err)})
			}
			a.cfg.Log.Warn("refused node message", zap.Error(err))
			return
		}
		a.leader.forward(ctx)
	case *messages.ListNodesRequest:
		ctx.Respond(&messages.ListNodesReply{Nodes: st.Nodes()})
	case *messages.InspectNodeRequest:
		n := findNode(st, m.Node)
		if n == nil {
			ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
			return
		}
		reply := &messages.NodeReply{Node: n}
		for _, t := range st.Tasks(store.TaskFilter{NodeID: n.Id}) {
			if t.Status.GetState() == messages.TaskState_TASK_STATE_RUNNING {
				reply.TasksRunning++
			}
		}
		ctx.Respond(reply)
	case *messages.UpdateNodeRequest:
		a.leader.write(ctx, func() { a.updateNode(ctx, m) })
	case *messages.RemoveNodeRequest:
		a.leader.write(ctx, func() { a.removeNode(ctx, m) })
	case *messages.PromoteNodeRequest:
		a.leader.forward(ctx) // membership changes are the leader's
	case *messages.DemoteNodeRequest:
		// Demoting the leader: hand leadership over here first (the leader
		// actor stops the moment leadership moves), then let the new
		// leader do it.
		if n := findNode(st, m.Node); n != nil && n.Id == a.cfg.NodeID && a.cfg.Store.IsLeader() {
			a.demoteSelf(ctx)
			return
		}
		a.leader.forward(ctx)
	}
}

// nodeMayReport checks that a node speaks only for itself and claims no
// role its certificate lacks; messages from inside this process (the local
// agent) and from other managers forwarding them are trusted.
func nodeMayReport(ctx actor.Context) error {
	id := remoting.Identity(ctx)
	if id.Role == "local" || id.Role == pki.RoleManager {
		return nil
	}
	var node string
	var role messages.NodeRole
	switch m := ctx.Message().(type) {
	case *messages.RegisterNode:
		node, role = m.NodeId, m.Role
	case *messages.Heartbeat:
		node = m.NodeId
	case *messages.TaskStatusReport:
		node = m.NodeId
	case *messages.NetworkProgrammed:
		node = m.NodeId
	case *messages.DrainTask:
		node = m.NodeId
	}
	if id.Role != pki.RoleWorker || id.Name != node {
		return fmt.Errorf("%s %q may not report for node %q", id.Role, id.Name, node)
	}
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		return fmt.Errorf("worker %q may not register as a manager", id.Name)
	}
	return nil
}

// updateNode changes a node's availability and labels.
func (a *nodesAPI) updateNode(ctx actor.Context, m *messages.UpdateNodeRequest) {
	n := findNode(a.cfg.Store.State, m.Node)
	if n == nil {
		ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
		return
	}
	if m.SetAvailability {
		n.Spec.Availability = m.Availability
	}
	if n.Spec.Labels == nil {
		n.Spec.Labels = map[string]string{}
	}
	for k, v := range m.LabelAdd {
		n.Spec.Labels[k] = v
	}
	for _, k := range m.LabelRm {
		delete(n.Spec.Labels, k)
	}
	a.writeNode(ctx, &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n, ExpectedVersion: n.Meta.GetVersion()}}}, n.Id)
}

// removeNode forgets a node. A node that is still up must be drained and
// stopped first (or --force); a manager must be demoted first.
func (a *nodesAPI) removeNode(ctx actor.Context, m *messages.RemoveNodeRequest) {
	n := findNode(a.cfg.Store.State, m.Node)
	if n == nil {
		ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
		return
	}
	if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is a manager: demote it first (`warren node demote %s`)", m.Node, m.Node)})
		return
	}
	if n.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY && !m.Force {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is up: drain and stop it first, or remove it anyway with --force", m.Node)})
		return
	}
	a.writeNode(ctx, &messages.Command{Op: &messages.Command_RemoveNode{RemoveNode: &messages.RemoveNode{NodeId: n.Id}}}, "")
}

func (a *nodesAPI) writeNode(ctx actor.Context, cmd *messages.Command, nodeID string) {
	write(ctx, cmd, writeTimeout, func(e *messages.Error) {
		reply := &messages.NodeReply{Error: e}
		if e == nil && nodeID != "" {
			reply.Node = a.cfg.Store.State.Node(nodeID)
		}
		ctx.Respond(reply)
	})
}

// findNode resolves an id, id prefix or hostname in the state; nil when
// unknown or ambiguous.
func findNode(st *store.State, ref string) *messages.Node {
	if n := st.Node(ref); n != nil {
		return n
	}
	var match *messages.Node
	for _, n := range st.Nodes() {
		if n.Description.GetHostname() == ref || (len(ref) >= 4 && strings.HasPrefix(n.Id, ref)) {
			if match != nil {
				return nil // ambiguous
			}
			match = n
		}
	}
	return match
}

// demoteSelf demotes the leader itself: leadership moves to another voter
// first (the membership actor), then the request goes to the new leader.
// The only voter keeps leading and the leader actor refuses, with why.
func (a *nodesAPI) demoteSelf(ctx actor.Context) {
	st := a.cfg.Store
	askMembership(ctx, &transferLeadership{}, transferTimeout+time.Second, func(r *membershipReply) {
		if errors.Is(r.err, errOnlyVoter) || errors.Is(r.err, errNotLeading) {
			a.leader.forward(ctx) // the leader refuses demoting the last voter, with the reason
			return
		}
		if err := r.err; err != nil {
			ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "hand over leadership: %v", err)})
			return
		}
		// Wait until this follower knows the new leader, then forward.
		deadline := time.Now().Add(5 * time.Second)
		var forward func()
		forward = func() {
			if pid := leaderPID(st, NameAPI); pid != nil && pid.Address != ctx.Self().Address {
				ctx.Forward(pid)
				return
			}
			if time.Now().After(deadline) {
				ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "leadership moved but no new leader is known yet: run the command again")})
				return
			}
			after(ctx, 50*time.Millisecond, forward)
		}
		forward()
	})
}
