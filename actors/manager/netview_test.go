package manager

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// nvState is a real store.State written only through the raft FSM, as on a
// manager; every StateChanged it publishes goes to onChange.
type nvState struct {
	t        testing.TB
	fsm      *store.FSM
	st       *store.State
	index    uint64
	onChange func(*messages.StateChanged)
}

func newNVState(t testing.TB) *nvState {
	s := &nvState{t: t, st: store.NewState()}
	s.fsm = &store.FSM{State: s.st, OnChange: func(sc *messages.StateChanged) {
		if s.onChange != nil {
			s.onChange(sc)
		}
	}}
	return s
}

func (s *nvState) apply(cmd *messages.Command) *messages.CommandResult {
	s.index++
	data, err := proto.Marshal(cmd)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.fsm.Apply(&raft.Log{Index: s.index, Type: raft.LogCommand, Data: data}).(*messages.CommandResult)
}

func (s *nvState) node(id, host string, manager bool) {
	role := messages.NodeRole_NODE_ROLE_WORKER
	if manager {
		role = messages.NodeRole_NODE_ROLE_MANAGER
	}
	s.apply(&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{
		Id: id, Spec: &messages.NodeSpec{Role: role},
		Description: &messages.NodeDescription{Hostname: host, Addr: host + ":4280", WgPublicKey: "key-" + id, WgEndpoint: host + ":51820"},
	}}}})
}

func (s *nvState) service(v *messages.Service) {
	if r := s.apply(&messages.Command{Op: &messages.Command_CreateService{CreateService: &messages.CreateService{Service: v}}}); r.Error != nil {
		s.t.Fatal(r.Error)
	}
}

// running is a task of service svc on node, running at the nth address of
// the node's subnet, of spec version ver.
func (s *nvState) running(id, svc, node string, n int, ver uint64) {
	v := s.st.Service(svc)
	t := &messages.Task{Id: id, ServiceId: svc, ServiceName: v.Spec.Name, NodeId: node, SpecVersion: ver, Spec: v.Spec,
		DesiredState: messages.TaskState_TASK_STATE_RUNNING, Slot: uint64(n)}
	s.apply(&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{t}}}})
	s.status(id, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Ip: nthAddr(s.st.Node(node).GetSubnet(), n)})
}

func (s *nvState) status(id string, st *messages.TaskStatus) {
	s.apply(&messages.Command{Op: &messages.Command_UpdateTaskStatuses{UpdateTaskStatuses: &messages.UpdateTaskStatuses{
		Updates: []*messages.TaskStatusUpdate{{TaskId: id, Status: st}}}}})
}

// nthAddr is the nth task address of a /24 (n from 1, past the gateway).
func nthAddr(subnet string, n int) string {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return "10.99.0.1" // outside every task subnet
	}
	a := p.Masked().Addr().As4()
	a[3] = byte(1 + n%253)
	return netip.AddrFrom4(a).String()
}

func TestEndpointWeights(t *testing.T) {
	cases := []struct {
		name     string
		shares   map[uint64]uint32
		versions []uint64
		want     []uint32
	}{
		{"no shares: all equal", nil, []uint64{1, 1, 2}, []uint32{1, 1, 1}},
		{"90/10 over 9+1 tasks is exact", map[uint64]uint32{1: 90, 2: 10}, []uint64{1, 1, 1, 1, 1, 1, 1, 1, 1, 2}, []uint32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"90/10 over 3+1 tasks", map[uint64]uint32{1: 90, 2: 10}, []uint64{1, 2, 1, 1}, []uint32{3, 1, 3, 3}},
		{"50/50 over 1+4 tasks", map[uint64]uint32{1: 50, 2: 50}, []uint64{1, 2, 2, 2, 2}, []uint32{4, 1, 1, 1, 1}},
		{"a version without share gets none", map[uint64]uint32{2: 100}, []uint64{1, 2, 2}, []uint32{0, 1, 1}},
		{"shares of versions with no task drop out", map[uint64]uint32{1: 30, 2: 30, 3: 40}, []uint64{1, 2}, []uint32{1, 1}},
		{"no task has a share: all equal", map[uint64]uint32{7: 100}, []uint64{1, 2}, []uint32{1, 1}},
		{"zero share is none", map[uint64]uint32{1: 0, 2: 100}, []uint64{1, 2}, []uint32{0, 1}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			var eps []*messages.Task
			for _, v := range tt.versions {
				eps = append(eps, &messages.Task{SpecVersion: v})
			}
			if got := endpointWeights(tt.shares, eps); !slices.Equal(got, tt.want) {
				t.Fatalf("weights = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestTrafficWeightsShare sets a service's traffic shares in replicated
// state and checks the endpoints' weights give each version its share of
// the slots, to within the documented rounding.
func TestTrafficWeightsShare(t *testing.T) {
	cases := []struct {
		shares map[uint64]uint32
		counts map[uint64]int // tasks per spec version
	}{
		{map[uint64]uint32{1: 90, 2: 10}, map[uint64]int{1: 9, 2: 1}},
		{map[uint64]uint32{1: 90, 2: 10}, map[uint64]int{1: 7, 2: 3}},
		{map[uint64]uint32{1: 95, 2: 5}, map[uint64]int{1: 20, 2: 2}},
		{map[uint64]uint32{1: 1, 2: 99}, map[uint64]int{1: 3, 2: 30}},
		{map[uint64]uint32{1: 33, 2: 33, 3: 34}, map[uint64]int{1: 5, 2: 7, 3: 11}},
	}
	for _, tt := range cases {
		t.Run(fmt.Sprint(tt.shares, tt.counts), func(t *testing.T) {
			s := newNVState(t)
			s.node("n1", "node-1", true)
			s.service(&messages.Service{Id: "web", Spec: &messages.ServiceSpec{Name: "web", Image: "demo",
				Ports: []*messages.PortConfig{{TargetPort: 80}}}, TrafficWeights: tt.shares})
			version := map[string]uint64{}
			i := 0
			for v := uint64(1); v <= 3; v++ {
				for range tt.counts[v] {
					i++
					s.running(fmt.Sprint("t", i), "web", "n1", i, v)
					version[nthAddr(s.st.Node("n1").Subnet, i)] = v
				}
			}
			nets := ServiceNetworks(s.st)
			if len(nets) != 1 || len(nets[0].Endpoints) != i {
				t.Fatalf("networks = %v, want one service with %d endpoints", nets, i)
			}
			slots := map[uint64]uint32{}
			var total uint32
			for _, e := range nets[0].Endpoints {
				if e.Weight == 0 {
					t.Fatalf("endpoint %s has weight 0 (old nodes read it as 1)", e.Ip)
				}
				slots[version[e.Ip]] += e.Weight
				total += e.Weight
			}
			if total > weightSlots+uint32(i) {
				t.Fatalf("%d slots: more than about %d", total, weightSlots)
			}
			var sum uint32
			for _, sh := range tt.shares {
				sum += sh
			}
			for v, sh := range tt.shares {
				got, want := float64(slots[v])/float64(total), float64(sh)/float64(sum)
				// Rounding: at most half a slot per endpoint of ~1000.
				if tol := 0.0005*float64(tt.counts[v]) + 0.001; got < want-tol || got > want+tol {
					t.Errorf("version %d gets %.4f of new connections, want %.4f (±%.4f); slots %v of %d", v, got, want, tol, slots, total)
				}
			}
		})
	}
}

// TestNetViewIncremental applies random commands through the FSM and
// checks, after each burst, that the view kept from StateChanged equals the
// full computation over the state, that every node whose own push changed
// is named as touched, and that a rebuild followed by replaying changes
// the state already holds changes nothing.
func TestNetViewIncremental(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			s := newNVState(t)
			var ns netState
			ns.rebuild(s.st)
			ns.build()
			var recent []*messages.StateChanged
			s.onChange = func(sc *messages.StateChanged) {
				ns.apply(sc)
				recent = append(recent, sc)
			}
			g := &nvGen{s: s, rng: rng}
			before := nodePushes(s.st)
			changes, maxEps, last := 0, 0, ns.view.sum
			for step := range 1000 {
				for range 1 + rng.IntN(4) { // a burst of commits, one view
					g.step()
				}
				if rng.IntN(40) == 0 {
					ns.rebuild(s.st)
					for _, sc := range recent[max(0, len(recent)-8):] {
						ns.apply(sc) // already in the state read: guarded by versions
					}
				}
				recent = recent[:0]
				v := ns.build()
				want := &messages.Assignments{Services: ServiceNetworks(s.st), Peers: MeshPeers(s.st), Managers: managerActorAddrs(s.st)}
				got := &messages.Assignments{Services: v.services, Peers: v.peers, Managers: v.managers}
				if !proto.Equal(got, want) {
					t.Fatalf("step %d: incremental view differs from the full computation:\n got %v\nwant %v", step, got, want)
				}
				if size := proto.Size(&messages.Assignments{Services: v.services, Peers: v.peers}); v.size != size {
					t.Fatalf("step %d: view size %d, encoded %d", step, v.size, size)
				}
				if v.index > s.st.Index() {
					t.Fatalf("step %d: view index %d is past the state's %d", step, v.index, s.st.Index())
				}
				if v.sum != last {
					changes++
					last = v.sum
				}
				eps := 0
				for _, sn := range v.services {
					eps += len(sn.Endpoints)
				}
				maxEps = max(maxEps, eps)
				after := nodePushes(s.st)
				for id, p := range after {
					if p != before[id] && !v.touches(id) {
						t.Fatalf("step %d: node %s's push changed but the view does not name it", step, id)
					}
				}
				before = after
			}
			if changes < 100 || maxEps < 8 {
				t.Fatalf("the generator changed the network %d times, with at most %d endpoints: too little to test", changes, maxEps)
			}
			t.Logf("%d network changes, up to %d endpoints; %d services, %d tasks, %d nodes at the end",
				changes, maxEps, len(s.st.Services()), len(s.st.Tasks(store.TaskFilter{})), len(s.st.Nodes()))
		})
	}
}

// nodePushes is, per node, what its push holds besides the network: its
// record and its tasks.
func nodePushes(st *store.State) map[string]string {
	out := map[string]string{}
	for _, n := range st.Nodes() {
		b := marshal(n)
		for _, t := range st.Tasks(store.TaskFilter{NodeID: n.Id}) {
			b = append(b, marshal(t)...)
		}
		out[n.Id] = string(b)
	}
	return out
}

// nvGen makes random but plausible commands: services with and without
// traffic shares, nodes coming and going, tasks placed, moved, running on
// addresses in or out of their node's subnet, healthy or not, stopped and
// removed.
type nvGen struct {
	s     *nvState
	rng   *rand.Rand
	n     int
	nodes []string
	svcs  []string
	tasks []string
}

func (g *nvGen) pick(from []string) string {
	if len(from) == 0 || g.rng.IntN(20) == 0 {
		return "missing"
	}
	return from[g.rng.IntN(len(from))]
}

func (g *nvGen) step() {
	s, r := g.s, g.rng
	g.n++
	id := fmt.Sprint(g.n)
	switch k := r.IntN(100); {
	case len(g.nodes) < 2 || k < 3 && len(g.nodes) < 12:
		g.nodes = append(g.nodes, "n"+id)
		s.node("n"+id, fmt.Sprint("host-", r.IntN(5)), r.IntN(3) == 0)
	case k < 10: // a node's record changes: role, address, key, hostname
		n := s.st.Node(g.pick(g.nodes))
		if n == nil {
			return
		}
		n.Spec.Role = messages.NodeRole(r.IntN(2))
		n.Description.Hostname = fmt.Sprint("host-", r.IntN(5))
		if r.IntN(2) == 0 {
			n.Description.WgPublicKey = ""
		} else {
			n.Description.WgPublicKey = "key-" + id
		}
		n.Status = &messages.NodeStatus{State: messages.NodeState(r.IntN(3))}
		s.apply(&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n}}})
	case k < 11:
		s.apply(&messages.Command{Op: &messages.Command_RemoveNode{RemoveNode: &messages.RemoveNode{NodeId: g.pick(g.nodes)}}})
	case len(g.svcs) == 0 || k < 20 && len(g.svcs) < 12:
		v := &messages.Service{Id: "s" + id, Spec: &messages.ServiceSpec{Name: "svc-" + id, Image: "demo",
			Ports: []*messages.PortConfig{{TargetPort: uint32(80 + r.IntN(3))}}}}
		if r.IntN(2) == 0 {
			v.TrafficWeights = map[uint64]uint32{1: uint32(r.IntN(100)), 2: uint32(r.IntN(100))}
		}
		g.svcs = append(g.svcs, v.Id)
		s.service(v)
	case k < 24:
		v := s.st.Service(g.pick(g.svcs))
		if v == nil {
			return
		}
		v.Spec.Ports = append(v.Spec.Ports, &messages.PortConfig{TargetPort: uint32(8000 + r.IntN(100))})
		s.apply(&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: v.Id, Spec: v.Spec}}})
	case k < 25:
		s.apply(&messages.Command{Op: &messages.Command_DeleteService{DeleteService: &messages.DeleteService{ServiceId: g.pick(g.svcs)}}})
	case k < 45:
		v := s.st.Service(g.pick(g.svcs))
		if v == nil {
			return
		}
		t := &messages.Task{Id: "t" + id, ServiceId: v.Id, ServiceName: v.Spec.Name, Slot: uint64(r.IntN(5)), NodeId: g.pick(g.nodes),
			SpecVersion: uint64(1 + r.IntN(3)), Spec: v.Spec, DesiredState: messages.TaskState_TASK_STATE_RUNNING}
		if r.IntN(3) == 0 {
			t.Spec = proto.Clone(v.Spec).(*messages.ServiceSpec)
			t.Spec.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_TCP}
		}
		if r.IntN(3) > 0 { // most tasks come up
			t.Status = &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Ip: nthAddr(s.st.Node(t.NodeId).GetSubnet(), 2+r.IntN(250)),
				Health: messages.HealthState_HEALTH_STATE_HEALTHY}
		}
		g.tasks = append(g.tasks, t.Id)
		s.apply(&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{t}}}})
	case k < 80:
		t := s.st.Task(g.pick(g.tasks))
		if t == nil {
			return
		}
		ip := nthAddr(s.st.Node(t.NodeId).GetSubnet(), r.IntN(300))
		switch r.IntN(6) {
		case 0:
			ip = "10.99.0.7" // outside every subnet
		case 1:
			ip = ""
		}
		state := messages.TaskState_TASK_STATE_RUNNING
		if r.IntN(3) == 0 {
			state = messages.TaskState(4 + r.IntN(3))
		}
		s.status(t.Id, &messages.TaskStatus{State: state, Ip: ip, Health: messages.HealthState(r.IntN(3))})
	case k < 92:
		t := s.st.Task(g.pick(g.tasks))
		if t == nil {
			return
		}
		u := &messages.Task{Id: t.Id, NodeId: t.NodeId, DesiredState: t.DesiredState, Epoch: t.Epoch + 1}
		switch r.IntN(3) {
		case 0:
			u.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN
		case 1:
			u.NodeId = g.pick(g.nodes)
		default:
			u.Spec, u.SpecVersion = t.Spec, uint64(1+r.IntN(3))
		}
		s.apply(&messages.Command{Op: &messages.Command_UpdateTasks{UpdateTasks: &messages.UpdateTasks{Tasks: []*messages.Task{u}}}})
	default:
		s.apply(&messages.Command{Op: &messages.Command_RemoveTasks{RemoveTasks: &messages.RemoveTasks{TaskIds: []string{g.pick(g.tasks)}}}})
	}
}

// BenchmarkNetworkView measures one change (a task of 10,000 turning
// unhealthy or healthy again, on a cluster of 100 nodes and 100 services)
// taken in by the incremental view, against the full computation a node
// actor used to run for every push: before, each change cost 100 of those
// (one per node); the full/change metric reports that product.
func BenchmarkNetworkView(b *testing.B) {
	const nodes, services, perService = 100, 100, 100
	s := newNVState(b)
	for i := range nodes {
		s.node(fmt.Sprint("n", i), fmt.Sprint("host-", i), i < 3)
	}
	var ids []string
	for i := range services {
		id := fmt.Sprint("s", i)
		s.service(&messages.Service{Id: id, Spec: &messages.ServiceSpec{Name: fmt.Sprint("svc-", i), Image: "demo",
			Ports: []*messages.PortConfig{{TargetPort: 80}}}})
		for j := range perService {
			tid := fmt.Sprint("t", i, "-", j)
			s.running(tid, id, fmt.Sprint("n", (i*perService+j)%nodes), i*perService+j, 1)
			ids = append(ids, tid)
		}
	}
	flip := func(i int) {
		t := s.st.Task(ids[i%len(ids)])
		st := proto.Clone(t.Status).(*messages.TaskStatus)
		st.State = messages.TaskState_TASK_STATE_RUNNING
		if st.Ip == "" {
			st.Ip = nthAddr(s.st.Node(t.NodeId).Subnet, i%len(ids))
		} else {
			st.Ip = ""
		}
		s.status(t.Id, st)
	}
	b.Run("incremental", func(b *testing.B) {
		var ns netState
		ns.rebuild(s.st)
		ns.build()
		s.onChange = ns.apply
		defer func() { s.onChange = nil }()
		b.ResetTimer()
		for i := range b.N {
			flip(i)
			ns.build()
		}
	})
	b.Run("full", func(b *testing.B) {
		for i := range b.N {
			flip(i)
			_ = ServiceNetworks(s.st)
			_ = MeshPeers(s.st)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*nodes, "ns/change-all-nodes")
	})
	b.Run("apply-only", func(b *testing.B) { // the FSM write both sides include
		for i := range b.N {
			flip(i)
		}
	})
}
