package manager

import (
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// The network every node programs, computed in full from replicated state.
// The netview actor keeps the same result up to date change by change;
// these functions are its reference (a test holds the two equal) and share
// with it the per-service and per-node parts.

// Healthy reports whether a task should receive traffic: running, with an
// address, and healthy if it has a health check.
func Healthy(t *messages.Task) bool {
	st := t.GetStatus()
	if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING || st.GetState() != messages.TaskState_TASK_STATE_RUNNING || st.GetIp() == "" {
		return false
	}
	if t.Spec.GetHealthCheck().GetKind() != messages.HealthCheck_KIND_NONE {
		return st.GetHealth() == messages.HealthState_HEALTH_STATE_HEALTHY
	}
	return true
}

// isEndpoint: a healthy task whose address lies in its node's task subnet.
// An address outside it never becomes a backend, whatever the state holds
// (checkStatus keeps new ones out). subnet is looked up only for a healthy
// task, so callers may make it cost something.
func isEndpoint(t *messages.Task, subnet func(node string) string) bool {
	return Healthy(t) && TaskAddrOK(subnet(t.NodeId), t.Status.Ip) == nil
}

// ServiceNetworks is every service's VIP, ports and healthy endpoints, as
// every node programs them, sorted by service name. Derived from replicated
// state only, and pushed in full, so no lost message can leave a node with
// stale backends.
func ServiceNetworks(st *store.State) []*messages.ServiceNetwork {
	var out []*messages.ServiceNetwork
	subnet := func(id string) string { return st.Node(id).GetSubnet() }
	for _, v := range st.Services() {
		out = append(out, serviceNetwork(v, st.Tasks(store.TaskFilter{ServiceID: v.Id}), subnet))
	}
	return out
}

// serviceNetwork is one service's network from its tasks, in store order
// (store.SortTasks). Its ports are copies: the result is shared read-only
// by every push and must not alias a service another actor holds.
func serviceNetwork(v *messages.Service, tasks []*messages.Task, subnet func(node string) string) *messages.ServiceNetwork {
	sn := &messages.ServiceNetwork{Name: v.Spec.GetName(), Vip: v.Vip}
	for _, p := range v.Spec.GetPorts() {
		sn.Ports = append(sn.Ports, proto.Clone(p).(*messages.PortConfig))
	}
	var eps []*messages.Task
	for _, t := range tasks {
		if isEndpoint(t, subnet) {
			eps = append(eps, t)
		}
	}
	for i, w := range endpointWeightsBy(v.TrafficWeights, eps, weightVersion(v)) {
		if w > 0 {
			sn.Endpoints = append(sn.Endpoints, &messages.NetEndpoint{Ip: eps[i].Status.Ip, Weight: w})
		}
	}
	return sn
}

// weightSlots is about how many numgen slots a service's weights add up
// to: netmesh gives an endpoint of weight w that many of the values its
// rule draws from, and caps a port at 1000 slots (netmesh.maxSlots).
const weightSlots = 1000

// endpointWeights gives each endpoint its weight from the service's traffic
// shares by spec version, so that each version's endpoints together get its
// share of new connections.
//
// No shares: every endpoint weighs 1 (an equal share each). Otherwise
// shares are relative (percent by convention); versions with no endpoint
// drop out and the others keep their ratios. An endpoint of version v gets
// round(share(v) × 1000 / (Σ shares × endpoints(v))), at least 1, so a
// version's endpoints hold about its share of ~1000 slots: exact when the
// counts divide evenly (90/10 over 9+1 or 3+1 tasks), within n(v)/2 slots
// (0.05 % per endpoint) otherwise, and a version with more endpoints than
// its share of 1000 slots gets more than its share (one slot each). The
// weights are then divided by their greatest common divisor, so equal
// weights go out as 1. An endpoint whose version has no share gets 0 and is
// left out of the network; if no endpoint has a share, all weigh 1 (a map
// naming only versions that no longer run must not blackhole the service).
func endpointWeights(shares map[uint64]uint32, eps []*messages.Task) []uint32 {
	return endpointWeightsBy(shares, eps, func(t *messages.Task) uint64 { return t.SpecVersion })
}

// weightVersion is the version whose share a task of v gets. During a
// deployment that is the side its template is on, not the version it was
// created at: a scale or a settings change bumps the spec version without
// replacing tasks, so the stable tasks may carry an older number than the
// deployment's from_version (and would get no share at all).
func weightVersion(v *messages.Service) func(*messages.Task) uint64 {
	d := v.GetDeployment()
	if !messages.DeploymentActive(v) || v.PreviousSpec == nil {
		return func(t *messages.Task) uint64 { return t.SpecVersion }
	}
	return func(t *messages.Task) uint64 {
		switch {
		case messages.TemplateEqual(t.Spec, v.Spec):
			return d.ToVersion
		case messages.TemplateEqual(t.Spec, v.PreviousSpec):
			return d.FromVersion
		}
		return t.SpecVersion
	}
}

// endpointWeightsBy is endpointWeights with the version of each task given
// by version.
func endpointWeightsBy(shares map[uint64]uint32, eps []*messages.Task, version func(*messages.Task) uint64) []uint32 {
	w := make([]uint32, len(eps))
	count := map[uint64]uint64{}
	for _, t := range eps {
		if shares[version(t)] > 0 {
			count[version(t)]++
		}
	}
	var total uint64
	for v := range count {
		total += uint64(shares[v])
	}
	if total == 0 {
		for i := range w {
			w[i] = 1
		}
		return w
	}
	var g uint64
	for i, t := range eps {
		n := count[version(t)]
		if n == 0 {
			continue
		}
		x := max(1, (uint64(shares[version(t)])*weightSlots+total*n/2)/(total*n))
		w[i] = uint32(x)
		g = gcd(g, x)
	}
	for i := range w {
		w[i] /= uint32(g)
	}
	return w
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// MeshPeers is every node's WireGuard identity and task subnet, in
// store.State.Nodes order.
func MeshPeers(st *store.State) []*messages.MeshPeer {
	var out []*messages.MeshPeer
	for _, n := range st.Nodes() {
		if p := meshPeer(n); p != nil {
			out = append(out, p)
		}
	}
	return out
}

// meshPeer is a node's mesh record, or nil for a node outside the mesh
// (no key or no subnet yet).
func meshPeer(n *messages.Node) *messages.MeshPeer {
	k := n.Description.GetWgPublicKey()
	if k == "" || n.Subnet == "" {
		return nil
	}
	return &messages.MeshPeer{NodeId: n.Id, PublicKey: k, Endpoint: n.Description.GetWgEndpoint(), Subnet: n.Subnet, Format: messages.MeshPeerFormat}
}
