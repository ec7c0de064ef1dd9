package netmesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Service VIPs and published ports, as nftables rules in table inet warren.
//
// Layout (rules rebuilt by SetServices in one batch):
//
//	chain prerouting  (nat, hook prerouting, priority dstnat)
//	    ip daddr vmap @vip-dispatch-<hash>    VIP -> jump svc-<name>
//	    fib daddr type local jump published
//	chain output      (nat, hook output, priority dstnat): the same, for
//	                  processes on the node, 127.0.0.1 included
//	chain localnet-guard (filter, hook prerouting, priority raw):
//	    iifname != "lo" ip daddr 127.0.0.0/8 drop
//	chain svc-<name>  one per service
//	    tcp dport 80 dnat ip to numgen random mod 10 map @svc-<name>-tcp-80-<hash>
//	    tcp dport 81 reject with tcp reset        (a port with no endpoint)
//	    reject                                    (any other port of the VIP)
//	chain published   one rule per published port, DNAT through the same map
//	chain vip-postrouting (nat, hook postrouting, priority srcnat): hairpin
//	                  (set @vip-hairpin-<hash>) and routing-mesh masquerade
//	map svc-<name>-<proto>-<port>-<hash>  numgen slot -> endpoint ip . port
//
// Weights become slots: an endpoint of weight 3 holds three of the values
// numgen draws from, so weights (and a canary's percentage) are shares of
// new connections. Established connections keep their backend: conntrack
// remembers the DNAT, rules only pick for new ones.
//
// Maps are never changed in place, and a map is deleted only in a second
// batch, once the rules stopped using it. The kernel swaps rules
// atomically, but a packet that started on the old rules and reaches its
// map lookup just after the commit looks the key up in the new generation:
// had that batch flushed and refilled the map, a slot the old modulus can
// draw might be gone. So a map's name ends in a hash of its content; a
// changed endpoint set is a new map, the new rules use it, the old rules
// keep the old one until the follow-up batch deletes it, and an unchanged
// map is left alone.
//
// The maps are hash maps with one element per slot, not interval maps with
// one range per endpoint (`0-8 : a, 9 : b`) as nft would write them: on
// this kernel (6.18) lookups in an interval (rbtree) map missed for about
// one new connection in 2,000 while batches committed every 10ms, even in
// maps created by that batch; hash maps never missed. Slots are therefore
// capped at maxSlots per port, see planPort.
const (
	chainVIPPrerouting  = "prerouting"
	chainVIPOutput      = "output"
	chainVIPPostrouting = "vip-postrouting"
	chainPublished      = "published"
	// chainLocalnetGuard drops packets for 127.0.0.0/8 arriving from
	// anywhere but lo: published ports on 127.0.0.1 need route_localnet on
	// the bridge and the mesh interface, which would otherwise let a task
	// reach the host's loopback-only services (CVE-2020-8558's lesson).
	chainLocalnetGuard = "localnet-guard"
	// svcPrefix starts every per-service chain and endpoint map, and
	// vipSetPrefix the dispatch and hairpin sets; SetServices owns,
	// flushes and deletes exactly the chains above and the chains and
	// sets named so.
	svcPrefix    = "svc-"
	vipSetPrefix = "vip-"
	// maxSlots bounds a port's map: weights whose reduced sum is larger
	// are scaled down to it, so shares are kept to about 0.1%.
	maxSlots = 1000
)

// Endpoint is one backend of a VIP port.
type Endpoint struct {
	IP   netip.Addr
	Port uint16
	// Weight is the endpoint's share of new connections relative to the
	// other endpoints of the same port. 0 takes it out of rotation (drain)
	// while its established connections continue.
	Weight uint32
}

// VIPService is one service's virtual IP and its ports.
type VIPService struct {
	Name  string
	VIP   netip.Addr
	Ports []VIPPort
}

// VIPPort is one port of a VIP and where its connections go.
type VIPPort struct {
	Protocol string // "tcp" or "udp"
	Port     uint16 // on the VIP
	// PublishedPort, when not 0, makes every local address of the node
	// (the routing mesh) answer on this port for the same endpoints.
	PublishedPort uint16
	// Endpoints are the healthy backends. None (or all of weight 0) makes
	// the port refuse connections (TCP reset, ICMP port unreachable) so
	// clients fail at once instead of timing out.
	Endpoints []Endpoint
}

// brNetfilterSysctl is on when bridged frames pass the IPv4 netfilter hooks.
const brNetfilterSysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// SetServices makes the node's VIP and published-port rules match svcs, the
// full desired set: services missing from svcs lose their rules. All rules
// are replaced in one nftables batch, which the kernel applies atomically,
// so a connection made while endpoints change gets either the old or the
// new endpoint set, never none; maps the new rules no longer use are
// deleted in a second batch (see the top of this file). It touches only
// the chains and maps listed there; SetServices(nil) removes all of them.
//
// For UDP ports it also deletes the conntrack entries that still point at
// an endpoint that was removed: UDP has no close, so a client that keeps
// sending would otherwise stay pinned to a dead backend.
func (n *Network) SetServices(svcs []VIPService) error {
	plan, err := planVIPs(svcs, n.cfg.Subnet)
	if err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	if err := n.lock(); err != nil {
		return err
	}
	defer n.mu.Unlock()

	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	have, err := listVIPObjects(c)
	if err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	staleUDP := removedUDPEndpoints(c, have, plan, n.log)

	plan.brNetfilter = brNetfilterOn()
	if !plan.brNetfilter && len(plan.services) > 0 {
		n.log.Warn("bridge netfilter is off: masquerading all same-node VIP traffic, so local backends see the gateway as client; load br_netfilter and set net.bridge.bridge-nf-call-iptables=1 to keep client addresses",
			zap.String("sysctl", brNetfilterSysctl))
	}
	garbage, err := applyVIPs(c, have, plan, n.cfg.Subnet, n.cfg.BridgeName)
	if err != nil {
		return fmt.Errorf("apply service rules in nftables table inet %s: %w; if the table was changed by hand, delete it with `nft delete table inet %s` and restart warren", TableName, err, TableName)
	}
	if len(plan.published) > 0 {
		// Loopback clients of published ports leave by the bridge or the
		// mesh with source 127.0.0.1 until postrouting rewrites it: the
		// kernel routes that only with route_localnet on those interfaces.
		for _, dev := range []string{n.cfg.BridgeName, DefaultMeshInterface} {
			if err := enableRouteLocalnet(dev); err != nil {
				n.log.Warn("published ports will not answer on 127.0.0.1", zap.String("interface", dev), zap.Error(err))
			}
		}
	}
	// The rules are in place; what is left over is empty chains and unused
	// maps, which the next SetServices deletes again.
	if err := garbage.collect(c); err != nil {
		n.log.Warn("delete unused service chains and maps", zap.Int("maps", len(garbage.sets)), zap.Int("chains", len(garbage.chains)), zap.Error(err))
	}
	if len(staleUDP) > 0 {
		if deleted, err := deleteUDPConntrack(staleUDP); err != nil {
			n.log.Warn("delete conntrack entries of removed UDP endpoints", zap.Error(err))
		} else if deleted > 0 {
			n.log.Debug("deleted conntrack entries of removed UDP endpoints", zap.Uint("entries", deleted))
		}
	}
	n.log.Debug("service rules applied", zap.Int("services", len(plan.services)), zap.Int("published", len(plan.published)))
	return nil
}

// vipPlan is SetServices' input checked and reduced to what the rules need.
type vipPlan struct {
	services  []svcPlan   // sorted by name
	published []*portPlan // sorted by protocol, published port
	// hairpin holds the endpoints on this node's subnet: a task that
	// reaches its own VIP and lands on itself is masqueraded.
	hairpin []netip.Addr
	// dispatchName and hairpinName name the VIP -> service chain map and
	// the hairpin set by their content.
	dispatchName, hairpinName string
	// brNetfilter is whether bridged replies pass conntrack; see postrouting.
	brNetfilter bool
}

type svcPlan struct {
	name  string
	chain string
	vip   netip.Addr
	ports []*portPlan // sorted by protocol, port
}

type portPlan struct {
	service   string
	proto     string // "tcp" or "udp"
	port      uint16
	published uint16
	mapBase   string // svc-<name>-<proto>-<port>
	mapName   string // mapBase-<hash of total and slots>
	total     uint32 // numgen modulus: the number of slots
	slots     []slot // empty: reject
}

// slot gives the numgen values [from, to) to one endpoint.
type slot struct {
	from, to uint32
	ep       netip.AddrPort
}

var serviceNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func planVIPs(svcs []VIPService, subnet netip.Prefix) (*vipPlan, error) {
	plan := &vipPlan{}
	names := map[string]bool{}
	vips := map[netip.Addr]string{}
	published := map[string]string{} // "tcp/8080" -> service
	local := map[netip.Addr]bool{}
	for _, s := range svcs {
		if !serviceNamePattern.MatchString(s.Name) {
			return nil, fmt.Errorf("invalid service name %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
		}
		if names[s.Name] {
			return nil, fmt.Errorf("service %s is listed twice", s.Name)
		}
		names[s.Name] = true
		if !s.VIP.Is4() {
			return nil, fmt.Errorf("service %s: VIP %s is not an IPv4 address", s.Name, s.VIP)
		}
		if subnet.Contains(s.VIP) {
			return nil, fmt.Errorf("service %s: VIP %s lies in the node's task subnet %s; VIPs need a range of their own", s.Name, s.VIP, subnet)
		}
		if other, ok := vips[s.VIP]; ok {
			return nil, fmt.Errorf("services %s and %s share VIP %s", other, s.Name, s.VIP)
		}
		vips[s.VIP] = s.Name
		sp := svcPlan{name: s.Name, chain: svcPrefix + s.Name, vip: s.VIP}
		ports := map[string]bool{}
		for _, p := range s.Ports {
			pp, err := planPort(s.Name, p)
			if err != nil {
				return nil, err
			}
			key := fmt.Sprintf("%s/%d", pp.proto, pp.port)
			if ports[key] {
				return nil, fmt.Errorf("service %s lists port %s twice", s.Name, key)
			}
			ports[key] = true
			if pp.published != 0 {
				pkey := fmt.Sprintf("%s/%d", pp.proto, pp.published)
				if other, ok := published[pkey]; ok {
					return nil, fmt.Errorf("services %s and %s both publish port %s", other, s.Name, pkey)
				}
				published[pkey] = s.Name
				plan.published = append(plan.published, pp)
			}
			for _, sl := range pp.slots {
				if subnet.Contains(sl.ep.Addr()) {
					local[sl.ep.Addr()] = true
				}
			}
			sp.ports = append(sp.ports, pp)
		}
		slices.SortFunc(sp.ports, comparePorts(func(p *portPlan) uint16 { return p.port }))
		plan.services = append(plan.services, sp)
	}
	slices.SortFunc(plan.services, func(a, b svcPlan) int { return strings.Compare(a.name, b.name) })
	slices.SortFunc(plan.published, comparePorts(func(p *portPlan) uint16 { return p.published }))
	for a := range local {
		plan.hairpin = append(plan.hairpin, a)
	}
	slices.SortFunc(plan.hairpin, netip.Addr.Compare)
	h := fnv.New64a()
	for _, sp := range plan.services {
		fmt.Fprintf(h, "%s=%s;", sp.vip, sp.chain)
	}
	plan.dispatchName = fmt.Sprintf("%sdispatch-%016x", vipSetPrefix, h.Sum64())
	h.Reset()
	for _, a := range plan.hairpin {
		fmt.Fprintf(h, "%s;", a)
	}
	plan.hairpinName = fmt.Sprintf("%shairpin-%016x", vipSetPrefix, h.Sum64())
	return plan, nil
}

func comparePorts(port func(*portPlan) uint16) func(a, b *portPlan) int {
	return func(a, b *portPlan) int {
		if c := strings.Compare(a.proto, b.proto); c != 0 {
			return c
		}
		return int(port(a)) - int(port(b))
	}
}

func planPort(service string, p VIPPort) (*portPlan, error) {
	proto := strings.ToLower(p.Protocol)
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("service %s port %d: protocol %q is not tcp or udp", service, p.Port, p.Protocol)
	}
	if p.Port == 0 {
		return nil, fmt.Errorf("service %s: port 0 on the VIP; give the port clients connect to", service)
	}
	pp := &portPlan{
		service:   service,
		proto:     proto,
		port:      p.Port,
		published: p.PublishedPort,
		mapBase:   fmt.Sprintf("%s%s-%s-%d", svcPrefix, service, proto, p.Port),
	}
	weights := map[netip.AddrPort]uint64{}
	for _, e := range p.Endpoints {
		if !e.IP.Is4() || e.Port == 0 {
			return nil, fmt.Errorf("service %s port %s/%d: endpoint %s:%d is not an IPv4 address and non-zero port", service, proto, p.Port, e.IP, e.Port)
		}
		// The same endpoint listed twice counts with both weights.
		weights[netip.AddrPortFrom(e.IP, e.Port)] += uint64(e.Weight)
	}
	var eps []netip.AddrPort
	var g uint64
	for ep, w := range weights {
		if w == 0 {
			continue
		}
		eps = append(eps, ep)
		g = gcd(g, w)
	}
	slices.SortFunc(eps, netip.AddrPort.Compare)
	var sum uint64
	for _, ep := range eps {
		weights[ep] /= g
		sum += weights[ep]
	}
	// Scale down to maxSlots, keeping at least one slot per endpoint (so
	// with more than maxSlots endpoints each simply gets one).
	scale := func(w uint64) uint64 { return w }
	if sum > maxSlots {
		scale = func(w uint64) uint64 { return max(1, (w*maxSlots+sum/2)/sum) }
	}
	var total uint32
	for _, ep := range eps {
		w := uint32(scale(weights[ep]))
		pp.slots = append(pp.slots, slot{from: total, to: total + w, ep: ep})
		total += w
	}
	pp.total = total
	pp.mapName = pp.mapBase + "-" + slotsHash(pp.total, pp.slots)
	return pp, nil
}

// slotsHash names a map's content: FNV-1a (64 bits, so that two endpoint
// sets of one port never share a name in practice) over the modulus and
// the slots.
func slotsHash(total uint32, slots []slot) string {
	h := fnv.New64a()
	b := binary.BigEndian.AppendUint32(nil, total)
	for _, s := range slots {
		a := s.ep.Addr().As4()
		b = binary.BigEndian.AppendUint32(b, s.from)
		b = binary.BigEndian.AppendUint32(b, s.to)
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, s.ep.Port())
	}
	_, _ = h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}

// mapBaseOf strips the content hash from a map name.
func mapBaseOf(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		return name[:i]
	}
	return name
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// vipObjects is what table inet warren holds of SetServices' own.
type vipObjects struct {
	tableExists bool
	chains      map[string]bool // owned chains only
	sets        map[string]*nftables.Set
}

func listVIPObjects(c *nftables.Conn) (*vipObjects, error) {
	have := &vipObjects{chains: map[string]bool{}, sets: map[string]*nftables.Set{}}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		have.tableExists = true
		if ownedVIPChain(ch.Name) {
			have.chains[ch.Name] = true
		}
	}
	if !have.tableExists {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return nil, fmt.Errorf("list nftables tables: %w", err)
		}
		for _, t := range tables {
			have.tableExists = have.tableExists || t.Name == TableName
		}
	}
	if !have.tableExists {
		return have, nil
	}
	sets, err := c.GetSets(warrenTable())
	if err != nil {
		return nil, fmt.Errorf("list sets of table inet %s: %w", TableName, err)
	}
	for _, s := range sets {
		if strings.HasPrefix(s.Name, svcPrefix) || strings.HasPrefix(s.Name, vipSetPrefix) {
			have.sets[s.Name] = s
		}
	}
	return have, nil
}

func ownedVIPChain(name string) bool {
	switch name {
	case chainVIPPrerouting, chainVIPOutput, chainVIPPostrouting, chainPublished, chainLocalnetGuard:
		return true
	}
	return strings.HasPrefix(name, svcPrefix)
}

// enableRouteLocalnet sets net.ipv4.conf.<dev>.route_localnet; a device
// that does not exist (the mesh before the first peer) is skipped.
func enableRouteLocalnet(dev string) error {
	path := "/proc/sys/net/ipv4/conf/" + dev + "/route_localnet"
	cur, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
		return nil
	case err == nil && strings.TrimSpace(string(cur)) == "1":
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable route_localnet (%s): %w", path, err)
	}
	return nil
}

// endpointType is a map value: an IPv4 address and a port, each padded to a
// 4-byte register, as nft lays out `ip . port` concatenations.
var endpointType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)

// applyVIPs writes plan into the table in one batch: add the missing chains
// and maps, flush every owned chain and refill the wanted ones. It returns
// what the new rules no longer use, for the caller to delete in a second
// batch once this one is in: the old dispatch map still jumps to the
// chains of removed services, so they go after it.
func applyVIPs(c *nftables.Conn, have *vipObjects, plan *vipPlan, subnet netip.Prefix, bridge string) (*vipGarbage, error) {
	t := c.AddTable(warrenTable())
	want := len(plan.services) > 0

	base := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: prio}
	}
	fixed := []*nftables.Chain{
		base(chainVIPPrerouting, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		base(chainVIPOutput, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		base(chainVIPPostrouting, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
		{Name: chainPublished, Table: t},
		{Name: chainLocalnetGuard, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw},
	}
	wanted := map[string]*nftables.Chain{}
	if want {
		for _, ch := range fixed {
			wanted[ch.Name] = c.AddChain(ch)
		}
		for _, s := range plan.services {
			wanted[s.chain] = c.AddChain(&nftables.Chain{Name: s.chain, Table: t})
		}
	}
	for name := range have.chains {
		c.FlushChain(&nftables.Chain{Name: name, Table: t})
	}

	used := map[string]bool{}
	useMap := func(m *nftables.Set, elems []nftables.SetElement) (*nftables.Set, error) {
		used[m.Name] = true
		if have.sets[m.Name] != nil {
			return &nftables.Set{Table: t, Name: m.Name}, nil // same name, same content
		}
		if err := c.AddSet(m, elems); err != nil {
			return nil, fmt.Errorf("map %s: %w", m.Name, err)
		}
		return m, nil
	}
	if want {
		maps := map[string]*nftables.Set{}
		for _, s := range plan.services {
			for _, p := range s.ports {
				if len(p.slots) == 0 || maps[p.mapName] != nil {
					continue
				}
				m, err := useMap(&nftables.Set{
					Table:        t,
					Name:         p.mapName,
					IsMap:        true,
					KeyType:      nftables.TypeInteger,
					KeyByteOrder: binaryutil.NativeEndian,
					DataType:     endpointType,
					Comment:      fmt.Sprintf("warren: service %s %s/%d endpoints", s.name, p.proto, p.port),
				}, mapElements(p.slots))
				if err != nil {
					return nil, err
				}
				maps[p.mapName] = m
			}
		}
		vips, err := useMap(&nftables.Set{
			Table:    t,
			Name:     plan.dispatchName,
			IsMap:    true,
			KeyType:  nftables.TypeIPAddr,
			DataType: nftables.TypeVerdict,
		}, dispatchElements(plan.services))
		if err != nil {
			return nil, err
		}
		addVIPRules(c, t, wanted, plan, maps, vips)
		var hairpin *nftables.Set
		if plan.brNetfilter && len(plan.hairpin) > 0 {
			if hairpin, err = useMap(&nftables.Set{
				Table:   t,
				Name:    plan.hairpinName,
				KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr),
			}, hairpinElements(plan.hairpin)); err != nil {
				return nil, err
			}
		}
		addVIPPostrouting(c, t, wanted[chainVIPPostrouting], plan, hairpin, subnet, bridge)
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	g := &vipGarbage{}
	for name := range have.sets {
		if !used[name] {
			g.sets = append(g.sets, &nftables.Set{Table: t, Name: name})
		}
	}
	for name := range have.chains {
		if wanted[name] == nil {
			g.chains = append(g.chains, &nftables.Chain{Name: name, Table: t})
		}
	}
	return g, nil
}

// vipGarbage is what SetServices deletes after the new rules are in.
type vipGarbage struct {
	sets   []*nftables.Set
	chains []*nftables.Chain
}

// collect deletes g in one batch, maps first: a dispatch map holds jumps
// to the chains.
func (g *vipGarbage) collect(c *nftables.Conn) error {
	if len(g.sets)+len(g.chains) == 0 {
		return nil
	}
	for _, s := range g.sets {
		c.DelSet(s)
	}
	for _, ch := range g.chains {
		c.DelChain(ch)
	}
	return c.Flush()
}

// addVIPRules fills the service chains, the published chain, and the
// dispatch rules in prerouting and output.
func addVIPRules(c *nftables.Conn, t *nftables.Table, chains map[string]*nftables.Chain, plan *vipPlan, maps map[string]*nftables.Set, vips *nftables.Set) {
	for _, s := range plan.services {
		ch := chains[s.chain]
		for _, p := range s.ports {
			r := &nftables.Rule{Table: t, Chain: ch, UserData: comment(fmt.Sprintf("warren: service %s %s/%d", s.name, p.proto, p.port))}
			r.Exprs = append(matchPort(p.proto, p.port), balanceOrReject(p, maps[p.mapName])...)
			c.AddRule(r)
		}
		// Any other port of the VIP: refuse, rather than let the packet
		// wander towards an address no host owns. TCP gets a reset, which
		// unlike ICMP errors the kernel does not rate-limit.
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: comment("warren: service " + s.name + " has no such port"),
			Exprs: append([]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			}, rejectExprs("tcp")...)})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: rejectExprs(""), UserData: comment("warren: service " + s.name + " has no such port")})
	}
	for _, p := range plan.published {
		r := &nftables.Rule{Table: t, Chain: chains[chainPublished], UserData: comment(fmt.Sprintf("warren: service %s published %s/%d", p.service, p.proto, p.published))}
		r.Exprs = append(matchPort(p.proto, p.published), balanceOrReject(p, maps[p.mapName])...)
		c.AddRule(r)
	}
	for _, ch := range []*nftables.Chain{chains[chainVIPPrerouting], chains[chainVIPOutput]} {
		// ip daddr vmap @vips: one hash lookup however many services.
		exprs := append(matchNFProtoIPv4(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: vips.Name, SetID: vips.ID},
		)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment("warren: service VIPs")})
		if len(plan.published) == 0 {
			continue
		}
		// The output chain includes 127.0.0.0/8: `curl 127.0.0.1:8080` on
		// a node answers (route_localnet, with the guard, makes that work).
		exprs = append(matchNFProtoIPv4(),
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPublished},
		)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment("warren: published ports on every local address")})
	}
	// Checked before conntrack undoes NAT: the reply to a loopback client's
	// masqueraded connection still carries the gateway here, not 127.x.
	guard := append(matchIPv4Prefix(16, netip.MustParsePrefix("127.0.0.0/8"), expr.CmpOpEq),
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	c.AddRule(&nftables.Rule{Table: t, Chain: chains[chainLocalnetGuard], Exprs: guard, UserData: comment("warren: loopback addresses only from lo")})
}

func dispatchElements(svcs []svcPlan) []nftables.SetElement {
	var out []nftables.SetElement
	for _, s := range svcs {
		vip := s.vip.As4()
		out = append(out, nftables.SetElement{Key: vip[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: s.chain}})
	}
	return out
}

// addVIPPostrouting masquerades the DNATed connections whose replies would
// otherwise not come back through this node's conntrack:
//
//   - Hairpin: a task whose connection to its own VIP lands on itself sees
//     a packet from its own address, which the kernel drops as a martian;
//     masquerading makes it come from the gateway. Only saddr == daddr is
//     masqueraded, so other local backends still see the client's address:
//     their replies cross the bridge, and with bridge netfilter on, pass
//     conntrack, which undoes the DNAT. Without bridge netfilter those
//     replies would skip conntrack, so then all DNATed task-to-local-task
//     traffic is masqueraded instead.
//   - Routing mesh: a connection from outside the node's tasks to a
//     published port whose backend is on another node (it leaves by an
//     interface other than the bridge) gets the bridge gateway as source,
//     so the backend's node replies to this one, which undoes the DNAT. A backend on this
//     node (it leaves by the bridge) gets no masquerade and sees the real
//     client address: its reply is routed back through this node anyway.
//
// The routing-mesh rule matches on the original destination port, so DNAT
// done by other tables (another container engine's published ports) is
// never masqueraded by Warren.
func addVIPPostrouting(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, plan *vipPlan, hairpin *nftables.Set, subnet netip.Prefix, bridge string) {
	if hairpin != nil {
		exprs := append(matchCtDNAT(), matchNFProtoIPv4()...)
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: hairpin.Name, SetID: hairpin.ID},
			&expr.Masq{},
		)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment("warren: hairpin, a task reaching itself through its VIP")})
	}
	if !plan.brNetfilter && len(plan.services) > 0 {
		exprs := append(matchCtDNAT(), matchIPv4Prefix(12, subnet, expr.CmpOpEq)...)
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)},
			&expr.Masq{},
		)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment("warren: task to local backend, bridge netfilter off")})
	}
	if len(plan.published) > 0 {
		// A process on the node calling 127.0.0.1:PUB, DNATed to a task on
		// this node: 127.0.0.1 cannot be a source on the bridge. (To a task
		// elsewhere, the routing-mesh rule below applies.)
		exprs := append(matchCtDNAT(), matchIPv4Prefix(12, netip.MustParsePrefix("127.0.0.0/8"), expr.CmpOpEq)...)
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)},
			&expr.Masq{},
		)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment("warren: loopback client to a local backend")})
	}
	gw := gatewayOf(subnet).As4()
	for _, p := range plan.published {
		exprs := append(matchCtDNAT(), matchIPv4Prefix(12, subnet, expr.CmpOpNeq)...)
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNum(p.proto)}},
			&expr.Ct{Key: expr.CtKeyPROTODST, Direction: 0 /* original */, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.published)},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(bridge)},
			// Not a plain masquerade: that would pick the underlay address
			// for a connection the node itself made, which the peer's
			// WireGuard drops (allowed IPs are task subnets). The gateway
			// is in this node's subnet, so the reply comes back through
			// the mesh to this node's conntrack.
			&expr.Immediate{Register: 1, Data: gw[:]},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment(fmt.Sprintf("warren: routing mesh %s/%d to another node", p.proto, p.published))})
	}
}

// hairpinElements are `ip . ip` keys, each task address twice.
func hairpinElements(addrs []netip.Addr) []nftables.SetElement {
	var out []nftables.SetElement
	for _, a := range addrs {
		b := a.As4()
		out = append(out, nftables.SetElement{Key: append(b[:], b[:]...)})
	}
	return out
}

// mapElements gives every slot value its endpoint. Keys are in host byte
// order, as numgen writes them.
func mapElements(slots []slot) []nftables.SetElement {
	var out []nftables.SetElement
	for _, s := range slots {
		a := s.ep.Addr().As4()
		val := make([]byte, 8)
		copy(val, a[:])
		binary.BigEndian.PutUint16(val[4:], s.ep.Port())
		for k := s.from; k < s.to; k++ {
			out = append(out, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(k), Val: val})
		}
	}
	return out
}

// balanceOrReject is `dnat ip to numgen random mod TOTAL map @m`, or a
// reject when the port has no endpoint.
func balanceOrReject(p *portPlan, m *nftables.Set) []expr.Any {
	if len(p.slots) == 0 {
		return rejectExprs(p.proto)
	}
	return []expr.Any{
		&expr.Numgen{Register: 1, Type: unix.NFT_NG_RANDOM, Modulus: p.total},
		// The 8-byte value fills registers 1 (address) and 9 (port).
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9},
	}
}

// rejectExprs refuses a new connection: TCP reset for "tcp", ICMP port
// unreachable otherwise.
func rejectExprs(proto string) []expr.Any {
	if proto == "tcp" {
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
	}
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}
}

func protoNum(proto string) byte {
	if proto == "tcp" {
		return unix.IPPROTO_TCP
	}
	return unix.IPPROTO_UDP
}

// matchPort is `meta l4proto <proto> th dport <port>`.
func matchPort(proto string, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNum(proto)}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func matchNFProtoIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// ipsDstNAT is IPS_DST_NAT, conntrack's "destination was NATed" status bit.
const ipsDstNAT = 1 << 5

// matchCtDNAT is `ct status dnat`.
func matchCtDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// matchIPv4Prefix compares the IPv4 address at offset (12 saddr, 16 daddr)
// with p using op (eq or neq), after the nfproto check an inet table needs.
func matchIPv4Prefix(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	addr := p.Masked().Addr().As4()
	out := matchNFProtoIPv4()
	if p.Bits()%8 == 0 {
		n := uint32(p.Bits() / 8)
		return append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
			&expr.Cmp{Op: op, Register: 1, Data: addr[:n]},
		)
	}
	mask := net.CIDRMask(p.Bits(), 32)
	return append(out,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: addr[:]},
	)
}

func brNetfilterOn() bool {
	b, err := os.ReadFile(brNetfilterSysctl)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

var udpMapPattern = regexp.MustCompile(`^svc-.+-udp-[0-9]+-[0-9a-f]{16}$`)

// removedUDPEndpoints returns the endpoints of UDP maps now in the kernel
// that plan no longer has for the same VIP port. Failing to read them only
// costs the conntrack cleanup, so errors are logged, not returned.
func removedUDPEndpoints(c *nftables.Conn, have *vipObjects, plan *vipPlan, log *zap.Logger) map[netip.AddrPort]bool {
	keep := map[string]map[netip.AddrPort]bool{}
	for _, s := range plan.services {
		for _, p := range s.ports {
			m := map[netip.AddrPort]bool{}
			for _, sl := range p.slots {
				m[sl.ep] = true
			}
			keep[p.mapBase] = m
		}
	}
	out := map[netip.AddrPort]bool{}
	for name, s := range have.sets {
		if !udpMapPattern.MatchString(name) {
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			log.Warn("read endpoint map for conntrack cleanup", zap.String("map", name), zap.Error(err))
			continue
		}
		for _, e := range elems {
			if e.IntervalEnd || len(e.Val) < 6 {
				continue
			}
			ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.Val[:4])), binary.BigEndian.Uint16(e.Val[4:6]))
			if !keep[mapBaseOf(name)][ep] {
				out[ep] = true
			}
		}
	}
	return out
}

// udpEndpointFilter matches DNATed UDP flows whose replies come from one of
// the endpoints.
type udpEndpointFilter map[netip.AddrPort]bool

func (f udpEndpointFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	src, ok := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok {
		return false
	}
	ep := netip.AddrPortFrom(src.Unmap(), flow.Reverse.SrcPort)
	dst, _ := netip.AddrFromSlice(flow.Forward.DstIP)
	return f[ep] && (dst.Unmap() != ep.Addr() || flow.Forward.DstPort != ep.Port())
}

func deleteUDPConntrack(eps map[netip.AddrPort]bool) (uint, error) {
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, udpEndpointFilter(eps))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return n, err
	}
	return n, nil
}
