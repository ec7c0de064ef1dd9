package store

import (
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// State is the materialised cluster state with its read indexes. The FSM is
// its only writer; readers get clones, so nothing they do can race the FSM.
type State struct {
	mu       sync.RWMutex
	index    uint64
	cluster  *messages.ClusterInfo
	nodes    map[string]*messages.Node
	services map[string]*messages.Service
	byName   map[string]string // service name -> id
	tasks    map[string]*messages.Task
	bySvc    map[string]map[string]struct{}
	byNode   map[string]map[string]struct{}
	removed  map[string]bool // node ids removed with `node rm`
	// The audit log (audit.go), oldest first; ids of the entries in it;
	// the last seq assigned.
	audit    []*messages.AuditEntry
	auditIDs map[string]struct{}
	auditSeq uint64
}

// NewState returns an empty state.
func NewState() *State {
	s := &State{}
	s.reset()
	return s
}

func (s *State) reset() {
	s.index = 0
	s.cluster = &messages.ClusterInfo{}
	s.nodes = map[string]*messages.Node{}
	s.services = map[string]*messages.Service{}
	s.byName = map[string]string{}
	s.tasks = map[string]*messages.Task{}
	s.bySvc = map[string]map[string]struct{}{}
	s.byNode = map[string]map[string]struct{}{}
	s.removed = map[string]bool{}
	s.audit, s.auditIDs, s.auditSeq = nil, map[string]struct{}{}, 0
}

func clone[T proto.Message](m T) T { return proto.Clone(m).(T) }

// Index is the raft index of the last applied command.
func (s *State) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// Cluster returns the cluster identity.
func (s *State) Cluster() *messages.ClusterInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return clone(s.cluster)
}

// Node returns a node by id, or nil.
func (s *State) Node(id string) *messages.Node {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n, ok := s.nodes[id]; ok {
		return clone(n)
	}
	return nil
}

// Nodes returns every node sorted by hostname then id.
func (s *State) Nodes() []*messages.Node {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*messages.Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		out = append(out, clone(n))
	}
	sort.Slice(out, func(i, j int) bool {
		hi, hj := out[i].GetDescription().GetHostname(), out[j].GetDescription().GetHostname()
		if hi != hj {
			return hi < hj
		}
		return out[i].Id < out[j].Id
	})
	return out
}

// Service returns a service by id, or nil.
func (s *State) Service(id string) *messages.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if v, ok := s.services[id]; ok {
		return clone(v)
	}
	return nil
}

// ServiceByName returns a service by name, or nil.
func (s *State) ServiceByName(name string) *messages.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if id, ok := s.byName[name]; ok {
		return clone(s.services[id])
	}
	return nil
}

// Services returns every service sorted by name.
func (s *State) Services() []*messages.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*messages.Service, 0, len(s.services))
	for _, v := range s.services {
		out = append(out, clone(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.GetName() < out[j].Spec.GetName() })
	return out
}

// Task returns a task by id, or nil.
func (s *State) Task(id string) *messages.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t, ok := s.tasks[id]; ok {
		return clone(t)
	}
	return nil
}

// TaskFilter selects tasks; empty fields match everything.
type TaskFilter struct {
	ServiceID string
	NodeID    string
}

// Tasks returns the tasks matching f, sorted by service, slot, then id.
func (s *State) Tasks(f TaskFilter) []*messages.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids map[string]struct{}
	switch {
	case f.ServiceID != "":
		ids = s.bySvc[f.ServiceID]
	case f.NodeID != "":
		ids = s.byNode[f.NodeID]
	}
	out := []*messages.Task{}
	add := func(t *messages.Task) {
		if f.NodeID != "" && t.NodeId != f.NodeID {
			return
		}
		out = append(out, clone(t))
	}
	if ids != nil || f.ServiceID != "" || f.NodeID != "" {
		for id := range ids {
			add(s.tasks[id])
		}
	} else {
		for _, t := range s.tasks {
			add(t)
		}
	}
	SortTasks(out)
	return out
}

// SortTasks orders tasks by service name, slot, then id.
func SortTasks(ts []*messages.Task) {
	sort.Slice(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		if a.ServiceName != b.ServiceName {
			return a.ServiceName < b.ServiceName
		}
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		return a.Id < b.Id
	})
}

// Snapshot returns the whole state as one message.
func (s *State) Snapshot() *messages.StateSnapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := &messages.StateSnapshot{Index: s.index, Cluster: clone(s.cluster)}
	for _, n := range s.nodes {
		snap.Nodes = append(snap.Nodes, clone(n))
	}
	for _, v := range s.services {
		snap.Services = append(snap.Services, clone(v))
	}
	for _, t := range s.tasks {
		snap.Tasks = append(snap.Tasks, clone(t))
	}
	for id := range s.removed {
		snap.RemovedNodes = append(snap.RemovedNodes, id)
	}
	sort.Strings(snap.RemovedNodes)
	s.snapshotAudit(snap)
	return snap
}

// Removed reports whether the node was removed from the cluster.
func (s *State) Removed(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.removed[id]
}

func (s *State) restore(snap *messages.StateSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset()
	s.index = snap.Index
	if snap.Cluster != nil {
		s.cluster = snap.Cluster
	}
	for _, n := range snap.Nodes {
		s.nodes[n.Id] = n
	}
	for _, v := range snap.Services {
		s.putService(v)
	}
	for _, t := range snap.Tasks {
		s.putTask(t)
	}
	for _, id := range snap.RemovedNodes {
		s.removed[id] = true
	}
	s.restoreAudit(snap)
}

// The put/del helpers keep the indexes right; callers hold mu.

func (s *State) putService(v *messages.Service) {
	if old, ok := s.services[v.Id]; ok && old.Spec.GetName() != v.Spec.GetName() {
		delete(s.byName, old.Spec.GetName())
	}
	s.services[v.Id] = v
	s.byName[v.Spec.GetName()] = v.Id
}

func (s *State) delService(id string) {
	if old, ok := s.services[id]; ok {
		delete(s.byName, old.Spec.GetName())
		delete(s.services, id)
	}
}

func addIdx(m map[string]map[string]struct{}, k, id string) {
	if k == "" {
		return
	}
	set, ok := m[k]
	if !ok {
		set = map[string]struct{}{}
		m[k] = set
	}
	set[id] = struct{}{}
}

func delIdx(m map[string]map[string]struct{}, k, id string) {
	if set, ok := m[k]; ok {
		delete(set, id)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

func (s *State) putTask(t *messages.Task) {
	if old, ok := s.tasks[t.Id]; ok {
		delIdx(s.bySvc, old.ServiceId, t.Id)
		delIdx(s.byNode, old.NodeId, t.Id)
	}
	s.tasks[t.Id] = t
	addIdx(s.bySvc, t.ServiceId, t.Id)
	addIdx(s.byNode, t.NodeId, t.Id)
}

func (s *State) delTask(id string) {
	if old, ok := s.tasks[id]; ok {
		delIdx(s.bySvc, old.ServiceId, id)
		delIdx(s.byNode, old.NodeId, id)
		delete(s.tasks, id)
	}
}
