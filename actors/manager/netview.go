package manager

import (
	"crypto/sha256"
	"sort"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// nameNetView is the leader's netview actor; node actors are its readers.
const nameNetView = NameLeader + "/netview"

// nodeActorID is the id of the leader's node actor for a node (the leader
// spawns it as "nodes/<id>").
func nodeActorID(node string) string { return NameLeader + "/nodes/" + node }

// netView is the network every node programs, as of a state index: every
// service's VIP, ports and weighted endpoints, every mesh peer, and the
// managers a node reports to. The netview actor publishes one after each
// burst of state changes; every node actor shares it, so nothing in it is
// ever modified once published (a changed service is a new ServiceNetwork).
type netView struct {
	// index: the view holds every change up to this state index (it may
	// hold later ones too). Pushes carry it, so a node that confirms index
	// i routes by state at least that new.
	index    uint64
	services []*messages.ServiceNetwork // sorted by name, as ServiceNetworks
	peers    []*messages.MeshPeer       // in store.State.Nodes order, as MeshPeers
	managers []string                   // as managerActorAddrs
	// sum digests services, peers and managers (not the index): two views
	// with the same sum push the same network.
	sum [sha256.Size]byte
	// size is the encoded size of services and peers in an Assignments.
	size int
	// touched are the nodes whose own record or tasks changed since the
	// view before; nil: every node (a first view, a rebuild).
	touched map[string]bool
}

// touches reports whether the node's own part of its push may have
// changed since the view before.
func (v *netView) touches(node string) bool { return v.touched == nil || v.touched[node] }

// viewWanted asks the netview actor for its current view (a node actor
// that has just started).
type viewWanted struct{}

// netViewActor keeps the leader's network view up to date from the changes
// each StateChanged names, instead of every node actor recomputing every
// service over every task on every push: a task change recomputes its own
// service only if the task is or was an endpoint; a node change recomputes
// the peers and managers, and the services with tasks on the node only if
// its subnet changed. It sends each new view to every node actor.
type netViewActor struct {
	cfg    LeaderConfig
	sub    *eventstream.Subscription
	state  netState
	queued bool
}

func newNetView(cfg LeaderConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &netViewActor{cfg: cfg} }, events.WithLifecycle)
}

func (a *netViewActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		// Subscribed before the rebuild: a change applied meanwhile is in
		// the mailbox, and applying it again is harmless (versions guard).
		a.sub = subscribeState(ctx, func(sc *messages.StateChanged) bool { return len(sc.Changes) > 0 })
		a.state.rebuild(a.cfg.Store.State)
		a.publish(ctx)
	case *actor.Stopping, *actor.Restarting:
		unsubscribe(ctx, a.sub)
	case *messages.StateChanged:
		if m.Restored {
			a.state.rebuild(a.cfg.Store.State)
		} else {
			a.state.apply(m)
		}
		if !a.queued {
			// Publish after the changes already in the mailbox: a burst of
			// commits becomes one view.
			a.queued = true
			ctx.Send(ctx.Self(), &reconcileNow{})
		}
	case *reconcileNow:
		a.queued = false
		a.publish(ctx)
	case *viewWanted:
		if v := a.state.view; v != nil {
			cp := *v
			cp.touched = nil // new to its reader: all of it
			ctx.Respond(&cp)
		}
	}
}

// publish sends the view to the node actor of every node in the state (an
// actor not spawned yet asks for the view when it starts).
func (a *netViewActor) publish(ctx actor.Context) {
	v := a.state.build()
	for id := range a.state.nodes {
		ctx.Send(actor.NewPID(ctx.Self().Address, nodeActorID(id)), v)
	}
}

// netState is the part of replicated state the network view derives from,
// kept from the objects StateChanged carries, with the view's pieces.
// Every object it holds came from a Change or a state read and is only
// read, never modified.
type netState struct {
	index    uint64
	services map[string]*messages.Service
	tasks    map[string]*messages.Task
	nodes    map[string]*messages.Node
	bySvc    map[string]map[string]struct{} // service id -> task ids
	byNode   map[string]map[string]struct{} // node id -> task ids
	nets     map[string]*svcNet             // service id -> its network
	// dirty services are recomputed by the next build; nodesDirty redoes
	// peers and managers.
	dirty      map[string]bool
	nodesDirty bool
	touched    map[string]bool // for the next view; nil: all
	peers      []*messages.MeshPeer
	managers   []string
	nodeSum    [sha256.Size]byte // of peers and managers
	view       *netView          // the last view built
}

// svcNet is one service's network, the digest of its encoding and its
// encoded size in an Assignments.
type svcNet struct {
	net  *messages.ServiceNetwork
	sum  [sha256.Size]byte
	size int
}

// rebuild reads the whole state (a new leader, a restored snapshot). The
// index is read first: the objects read after it are at least that new.
func (s *netState) rebuild(st *store.State) {
	idx := max(s.index, st.Index())
	*s = netState{
		index: idx, services: map[string]*messages.Service{}, tasks: map[string]*messages.Task{}, nodes: map[string]*messages.Node{},
		bySvc: map[string]map[string]struct{}{}, byNode: map[string]map[string]struct{}{}, nets: map[string]*svcNet{},
		dirty: map[string]bool{}, nodesDirty: true,
	}
	for _, n := range st.Nodes() {
		s.nodes[n.Id] = n
	}
	for _, v := range st.Services() {
		s.services[v.Id] = v
		s.dirty[v.Id] = true
	}
	for _, t := range st.Tasks(store.TaskFilter{}) {
		s.tasks[t.Id] = t
		idxAdd(s.bySvc, t.ServiceId, t.Id)
		idxAdd(s.byNode, t.NodeId, t.Id)
	}
}

// apply takes in one commit's changes. An object older than the one held
// is skipped: after a rebuild, changes the state read already held may
// still be in the mailbox.
func (s *netState) apply(sc *messages.StateChanged) {
	s.index = max(s.index, sc.Index)
	for _, c := range sc.Changes {
		del := c.Op == messages.ChangeOp_CHANGE_OP_DELETE
		switch o := c.Object.(type) {
		case *messages.Change_Service:
			s.putService(o.Service, del)
		case *messages.Change_Task:
			s.putTask(o.Task, del)
		case *messages.Change_Node:
			s.putNode(o.Node, del)
		}
	}
}

func stale(held, got *messages.Meta) bool { return held.GetVersion() > got.GetVersion() }

func (s *netState) putService(v *messages.Service, del bool) {
	if old := s.services[v.Id]; old != nil && stale(old.Meta, v.Meta) {
		return
	}
	s.dirty[v.Id] = true
	if del {
		delete(s.services, v.Id)
	} else {
		s.services[v.Id] = v
	}
}

// putTask: only a task that is or was an endpoint changes its service's
// network; any task change may change its node's push.
func (s *netState) putTask(t *messages.Task, del bool) {
	old := s.tasks[t.Id]
	if old != nil {
		if stale(old.Meta, t.Meta) {
			return
		}
		if isEndpoint(old, s.subnet) {
			s.dirty[old.ServiceId] = true
		}
		idxDel(s.bySvc, old.ServiceId, old.Id)
		idxDel(s.byNode, old.NodeId, old.Id)
		s.touch(old.NodeId)
	}
	if del {
		delete(s.tasks, t.Id)
		return
	}
	s.tasks[t.Id] = t
	idxAdd(s.bySvc, t.ServiceId, t.Id)
	idxAdd(s.byNode, t.NodeId, t.Id)
	s.touch(t.NodeId)
	if isEndpoint(t, s.subnet) {
		s.dirty[t.ServiceId] = true
	}
}

// putNode: a node's subnet decides which of its tasks' addresses count, so
// a changed subnet (a node new or gone) recomputes the services with tasks
// on it.
func (s *netState) putNode(n *messages.Node, del bool) {
	old := s.nodes[n.Id]
	if old != nil && stale(old.Meta, n.Meta) {
		return
	}
	sub := n.Subnet
	if del {
		delete(s.nodes, n.Id)
		sub = ""
	} else {
		s.nodes[n.Id] = n
	}
	if old.GetSubnet() != sub {
		for id := range s.byNode[n.Id] {
			s.dirty[s.tasks[id].ServiceId] = true
		}
	}
	s.nodesDirty = true
	s.touch(n.Id)
}

func (s *netState) subnet(node string) string { return s.nodes[node].GetSubnet() }

func (s *netState) touch(node string) {
	if s.touched != nil && node != "" {
		s.touched[node] = true
	}
}

// build recomputes what changed and returns the view; the pieces of the
// last view that did not change are shared with it.
func (s *netState) build() *netView {
	changed := s.view == nil
	for id := range s.dirty {
		v := s.services[id]
		if v == nil {
			if _, ok := s.nets[id]; ok {
				delete(s.nets, id)
				changed = true
			}
			continue
		}
		tasks := make([]*messages.Task, 0, len(s.bySvc[id]))
		for tid := range s.bySvc[id] {
			tasks = append(tasks, s.tasks[tid])
		}
		store.SortTasks(tasks)
		sn := serviceNetwork(v, tasks, s.subnet)
		b := marshal(sn)
		if old := s.nets[id]; old == nil || old.sum != sha256.Sum256(b) {
			s.nets[id] = &svcNet{net: sn, sum: sha256.Sum256(b), size: protowire.SizeTag(6) + protowire.SizeBytes(len(b))}
			changed = true
		}
	}
	clear(s.dirty)
	if s.nodesDirty {
		s.nodesDirty = false
		nodes := make([]*messages.Node, 0, len(s.nodes))
		for _, n := range s.nodes {
			nodes = append(nodes, n)
		}
		sortNodes(nodes)
		var peers []*messages.MeshPeer
		for _, n := range nodes {
			if p := meshPeer(n); p != nil {
				peers = append(peers, p)
			}
		}
		managers := managerAddrs(nodes)
		h := sha256.New()
		for _, p := range peers {
			h.Write(marshal(p))
			h.Write([]byte{0})
		}
		for _, m := range managers {
			h.Write([]byte(m))
			h.Write([]byte{0})
		}
		if sum := [sha256.Size]byte(h.Sum(nil)); sum != s.nodeSum || s.view == nil {
			s.peers, s.managers, s.nodeSum = peers, managers, sum
			changed = true
		}
	}
	v := &netView{index: s.index, touched: s.touched}
	s.touched = map[string]bool{}
	if !changed {
		v.services, v.peers, v.managers, v.sum, v.size = s.view.services, s.view.peers, s.view.managers, s.view.sum, s.view.size
		s.view = v
		return v
	}
	nets := make([]*svcNet, 0, len(s.nets))
	for _, n := range s.nets {
		nets = append(nets, n)
	}
	sort.Slice(nets, func(i, j int) bool { return nets[i].net.Name < nets[j].net.Name })
	h := sha256.New()
	for _, n := range nets {
		v.services = append(v.services, n.net)
		h.Write(n.sum[:])
		v.size += n.size
	}
	h.Write(s.nodeSum[:])
	v.sum = [sha256.Size]byte(h.Sum(nil))
	v.peers, v.managers = s.peers, s.managers
	v.size += proto.Size(&messages.Assignments{Peers: v.peers})
	s.view = v
	return v
}

func marshal(m proto.Message) []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return b
}

// sortNodes orders nodes as store.State.Nodes does: by hostname, then id.
func sortNodes(nodes []*messages.Node) {
	sort.Slice(nodes, func(i, j int) bool {
		hi, hj := nodes[i].GetDescription().GetHostname(), nodes[j].GetDescription().GetHostname()
		if hi != hj {
			return hi < hj
		}
		return nodes[i].Id < nodes[j].Id
	})
}

// managerAddrs lists the actor address of every manager among nodes.
func managerAddrs(nodes []*messages.Node) []string {
	var out []string
	for _, n := range nodes {
		if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER && n.Description.GetAddr() != "" {
			out = append(out, n.Description.GetAddr())
		}
	}
	return out
}

func idxAdd(m map[string]map[string]struct{}, k, id string) {
	if k == "" {
		return
	}
	if m[k] == nil {
		m[k] = map[string]struct{}{}
	}
	m[k][id] = struct{}{}
}

func idxDel(m map[string]map[string]struct{}, k, id string) {
	if set := m[k]; set != nil {
		delete(set, id)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}
