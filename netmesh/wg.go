package netmesh

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Defaults for MeshConfig fields left zero.
const (
	DefaultMeshInterface  = "warren-wg"
	DefaultMeshListenPort = 51820
	// DefaultUnderlayMTU is assumed when no default route says otherwise.
	DefaultUnderlayMTU = 1500
)

// MeshOverhead is what WireGuard adds to every packet, in bytes: an outer
// IPv6 header (40), UDP (8), and WireGuard's data header and tag (32). Over
// an IPv4 underlay 60 would do; 80 keeps the mesh working whichever family
// a peer's endpoint has, as wg-quick assumes.
const MeshOverhead = 80

// keepaliveHold is how long the node with the higher public key of a pair
// waits before it turns on keepalive for a peer it just added (see
// planPeers): longer than a round trip, so the other node's handshake
// initiation has arrived and been answered, short enough that a peer
// behind NAT, which only this node can reach, is not kept waiting.
const keepaliveHold = time.Second

// minMeshMTU is the smallest mesh MTU accepted: IPv6's minimum, so tasks
// can later get IPv6 without renumbering the MTU.
const minMeshMTU = 1280

// Values of Mesh.Kind.
const (
	KindKernel    = "kernel"
	KindUserspace = "userspace (wireguard-go)"
)

// MeshConfig says how this node joins the WireGuard mesh. Interface,
// ListenPort, UnderlayMTU and Log have defaults; ClusterRange, Endpoint and
// NetNS are optional.
type MeshConfig struct {
	// Interface is the WireGuard interface; default warren-wg.
	Interface string
	// ListenPort is the UDP port WireGuard listens on; default 51820.
	ListenPort int
	// KeyFile holds this node's private key. It is generated (mode 0600)
	// on first use and never leaves the node; only the public key is
	// published.
	KeyFile string
	// NodeID is this node's ID, for Self and for recognising this node's
	// own record among the peers.
	NodeID string
	// Subnet is this node's task subnet (the bridge's, Config.Subnet).
	// Its gateway address is the source of traffic this node itself sends
	// into the mesh: the interface has no address of its own, and a peer
	// accepts only packets from addresses in the sender's subnet.
	Subnet netip.Prefix
	// Endpoint is the ip:port other nodes reach this node at, published in
	// Self. Normally the node's underlay address and ListenPort; for a node
	// behind NAT its public address and forwarded port, which is why it is
	// set separately from ListenPort. Empty when the node cannot be reached
	// at all: it then dials out to its peers, and they learn its address
	// from its handshakes (two such nodes cannot reach each other).
	Endpoint string
	// ClusterRange, when set, is routed into the mesh as a whole (peers'
	// subnets get more specific routes), so traffic to a subnet whose node
	// is gone or not yet known is dropped by WireGuard instead of leaving
	// in plaintext by the default route. It must contain Subnet.
	ClusterRange netip.Prefix
	// UnderlayMTU is the MTU of the network between nodes, in bytes;
	// default: that of the default route's interface (or the route's own
	// mtu), else 1500. The mesh interface gets UnderlayMTU - MeshOverhead.
	UnderlayMTU int
	// NetNS is the path of the network namespace to build the mesh in
	// (e.g. /run/netns/node1); empty means the calling process's. It lets
	// one process run several nodes, as the tests do.
	NetNS string
	// Log receives lifecycle events; nil discards them.
	Log *zap.Logger

	// userspaceOnly skips the kernel module even where it exists, so
	// tests cover the wireguard-go path on any machine.
	userspaceOnly bool
}

func (c *MeshConfig) setDefaults() {
	if c.Interface == "" {
		c.Interface = DefaultMeshInterface
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultMeshListenPort
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

func (c *MeshConfig) validate() error {
	if len(c.Interface) >= unix.IFNAMSIZ {
		return fmt.Errorf("mesh interface name %q is longer than %d bytes, the kernel's limit for interface names", c.Interface, unix.IFNAMSIZ-1)
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		return fmt.Errorf("mesh listen port %d is out of range: use 1 to 65535 (or 0 for %d)", c.ListenPort, DefaultMeshListenPort)
	}
	if c.KeyFile == "" {
		return errors.New("no WireGuard key file configured: set the path that holds (or will hold) this node's private key")
	}
	if c.NodeID == "" {
		return errors.New("no node ID configured for the mesh")
	}
	if err := validateSubnet(c.Subnet); err != nil {
		return err
	}
	if _, err := parseEndpoint(c.Endpoint); err != nil {
		return fmt.Errorf("advertised %w", err)
	}
	if r := c.ClusterRange; r.IsValid() {
		if !r.Addr().Is4() || r.Masked() != r || r.Bits() == 0 {
			return fmt.Errorf("cluster range %s: give an IPv4 prefix without host bits, e.g. 10.88.0.0/16", r)
		}
		if !r.Contains(c.Subnet.Addr()) || r.Bits() > c.Subnet.Bits() {
			return fmt.Errorf("cluster range %s does not contain this node's subnet %s", r, c.Subnet)
		}
	}
	if c.UnderlayMTU != 0 && (c.UnderlayMTU < minMeshMTU+MeshOverhead || c.UnderlayMTU > 65535) {
		return fmt.Errorf("underlay MTU %d is out of range: use %d to 65535 (or 0 to detect it)", c.UnderlayMTU, minMeshMTU+MeshOverhead)
	}
	return nil
}

// Mesh is this node's end of the WireGuard mesh: one interface whose peers
// are the other nodes, each allowed (and routed) its task subnet. Its
// methods are safe for concurrent use.
type Mesh struct {
	cfg  MeshConfig
	log  *zap.Logger
	priv wgtypes.Key
	pub  wgtypes.Key
	kind string
	mtu  int
	src  netip.Addr // source address of this node's own traffic into the mesh

	mu        sync.Mutex
	nl        *netlink.Handle // in cfg.NetNS; nil once closed
	dev       wgDevice        // nil once closed
	index     int             // ifindex of the mesh interface
	endpoints map[wgtypes.Key]netip.AddrPort
	held      map[wgtypes.Key]bool // peers whose keepalive waits for releaseKeepalives
	holdTimer *time.Timer          // runs releaseKeepalives; nil when none is pending
}

var errMeshClosed = errors.New("netmesh: mesh is closed")

// NewMesh loads this node's key (creating it on first start) and brings
// the mesh interface up with no change to its peers, so a restart does not
// interrupt traffic; SetPeers then reconciles them. It uses kernel
// WireGuard when the kernel has it, creating or reusing the interface and
// configuring it through wgctrl; otherwise it runs wireguard-go in this
// process on a TUN interface of the same name, which lives as long as the
// Mesh.
func NewMesh(cfg MeshConfig) (*Mesh, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	priv, created, err := loadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg:       cfg,
		log:       cfg.Log.With(zap.String("interface", cfg.Interface)),
		priv:      priv,
		pub:       priv.PublicKey(),
		src:       gatewayOf(cfg.Subnet),
		endpoints: map[wgtypes.Key]netip.AddrPort{},
		held:      map[wgtypes.Key]bool{},
	}
	if created {
		m.log.Info("generated WireGuard key", zap.String("file", cfg.KeyFile), zap.String("public_key", m.pub.String()))
	}
	if cfg.NetNS == "" {
		m.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		m.nl, err = handleIn(cfg.NetNS)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if err := m.setup(); err != nil {
		if m.dev != nil {
			_ = m.dev.close()
		}
		m.nl.Close()
		return nil, err
	}
	m.log.Info("mesh ready", zap.String("kind", m.kind), zap.Int("mtu", m.mtu),
		zap.Int("listen_port", cfg.ListenPort), zap.String("public_key", m.pub.String()))
	return m, nil
}

func (m *Mesh) setup() error {
	underlay := m.cfg.UnderlayMTU
	if underlay == 0 {
		underlay = m.detectUnderlayMTU()
		if underlay < minMeshMTU+MeshOverhead {
			return fmt.Errorf("underlay MTU %d (from the default route) leaves less than %d bytes for the mesh; set the underlay MTU explicitly if the route is not the way to other nodes", underlay, minMeshMTU)
		}
	}
	m.mtu = underlay - MeshOverhead
	if err := m.openDevice(); err != nil {
		return err
	}
	l, err := m.nl.LinkByName(m.cfg.Interface)
	if err != nil {
		return fmt.Errorf("look up mesh interface %s: %w", m.cfg.Interface, err)
	}
	m.index = l.Attrs().Index
	if l.Attrs().MTU != m.mtu {
		if err := m.nl.LinkSetMTU(l, m.mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", m.mtu, m.cfg.Interface, err)
		}
	}
	if err := m.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", m.cfg.Interface, err)
	}
	if r := m.cfg.ClusterRange; r.IsValid() {
		return m.replaceRoute(r)
	}
	return nil
}

// detectUnderlayMTU is the MTU towards the default route (IPv4, else IPv6):
// the route's own mtu if it has one, else its interface's.
func (m *Mesh) detectUnderlayMTU() int {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := retryDump(func() ([]netlink.Route, error) {
			return m.nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			m.log.Warn("list routes to find the underlay MTU", zap.Error(err))
			continue
		}
		for _, r := range routes {
			if p, ok := prefixOf(r.Dst); ok && p.Bits() != 0 {
				continue
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			l, err := m.nl.LinkByIndex(idx)
			if err != nil || l.Attrs().Name == m.cfg.Interface {
				continue
			}
			mtu := l.Attrs().MTU
			if r.MTU > 0 && r.MTU < mtu {
				mtu = r.MTU
			}
			m.log.Debug("underlay MTU from default route", zap.String("via", l.Attrs().Name), zap.Int("mtu", mtu))
			return mtu
		}
	}
	return DefaultUnderlayMTU
}

// openDevice finds or makes the WireGuard device: an existing kernel
// interface is reused; a missing one is created in the kernel if the
// kernel supports it, else wireguard-go runs on a TUN.
func (m *Mesh) openDevice() error {
	name := m.cfg.Interface
	l, err := m.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil && l.Type() == "wireguard":
		return m.openKernel(false)
	case err == nil && l.Type() == "tuntap":
		// A persistent TUN left behind can be taken over; one that another
		// process holds fails in CreateTUN with EBUSY.
		return m.openUserspace()
	case err == nil:
		return fmt.Errorf("interface %s exists but is a %s, not a WireGuard interface; remove it or configure another mesh interface name", name, l.Type())
	case !errors.As(err, &notFound):
		return fmt.Errorf("look up mesh interface %s: %w", name, err)
	}
	if !m.cfg.userspaceOnly {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = m.mtu
		err := m.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs})
		if err == nil {
			return m.openKernel(true)
		}
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("create WireGuard interface %s: %w", name, err)
		}
		m.log.Info("kernel has no WireGuard; running wireguard-go in this process")
	}
	return m.openUserspace()
}

func (m *Mesh) openKernel(created bool) error {
	var c *wgctrl.Client
	err := m.inNS(func() error {
		var err error
		c, err = wgctrl.New()
		return err
	})
	if err == nil {
		dev := &kernelDevice{c: c, name: m.cfg.Interface}
		port := m.cfg.ListenPort
		if err = dev.configure(wgtypes.Config{PrivateKey: &m.priv, ListenPort: &port}); err == nil {
			m.dev, m.kind = dev, KindKernel
			return nil
		}
		_ = c.Close()
	}
	if created {
		if l, lerr := m.nl.LinkByName(m.cfg.Interface); lerr == nil {
			_ = m.nl.LinkDel(l)
		}
	}
	return fmt.Errorf("configure kernel WireGuard interface %s: %w (is UDP port %d in use?)", m.cfg.Interface, err, m.cfg.ListenPort)
}

func (m *Mesh) openUserspace() error {
	name := m.cfg.Interface
	var td tun.Device
	err := m.inNS(func() error {
		var err error
		td, err = tun.CreateTUN(name, m.mtu)
		return err
	})
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("create TUN %s for wireguard-go: %w: another process holds the interface (another warren or wireguard-go?)", name, err)
	}
	if err != nil {
		return fmt.Errorf("create TUN %s for wireguard-go: %w (is /dev/net/tun there?)", name, err)
	}
	bind := conn.NewDefaultBind()
	if m.cfg.NetNS != "" {
		l, err := m.nl.LinkByName(name)
		if err != nil {
			_ = td.Close()
			return fmt.Errorf("look up TUN %s: %w", name, err)
		}
		td = &nsTUN{Device: td, h: m.nl, index: l.Attrs().Index}
		bind = &nsBind{Bind: bind, netns: m.cfg.NetNS}
	}
	d := device.NewDevice(td, bind, wireguardGoLogger(m.log.Named("wireguard-go")))
	dev := &userspaceDevice{dev: d}
	port := m.cfg.ListenPort
	if err := dev.configure(wgtypes.Config{PrivateKey: &m.priv, ListenPort: &port}); err != nil {
		d.Close()
		return fmt.Errorf("configure wireguard-go on %s: %w", name, err)
	}
	// Up opens the UDP sockets; wireguard-go would also do it on its own
	// once it sees the link up, but then a busy port would only be logged.
	if err := d.Up(); err != nil {
		d.Close()
		return fmt.Errorf("start wireguard-go on %s: %w (is UDP port %d in use?)", name, err, port)
	}
	m.dev, m.kind = dev, KindUserspace
	return nil
}

func (m *Mesh) inNS(fn func() error) error {
	if m.cfg.NetNS == "" {
		return fn()
	}
	return withNetNS(m.cfg.NetNS, fn)
}

// PublicKey is this node's public key, base64.
func (m *Mesh) PublicKey() string { return m.pub.String() }

// Kind says which WireGuard runs the mesh: KindKernel or KindUserspace.
func (m *Mesh) Kind() string { return m.kind }

// MTU is the mesh interface's MTU. Task interfaces that talk to other
// nodes should not exceed it (Config.MTU), or large packets rely on path
// MTU discovery across the mesh.
func (m *Mesh) MTU() int { return m.mtu }

// Self is this node's record for the store: what other nodes pass to
// SetPeers to reach it.
func (m *Mesh) Self() Peer {
	return Peer{NodeID: m.cfg.NodeID, PublicKey: m.pub.String(), Endpoint: m.cfg.Endpoint, Subnet: m.cfg.Subnet, Format: PeerFormat}
}

// SetPeers makes the mesh's peers exactly peers: it adds and updates them
// (allowed IPs = the peer's subnet, keepalive PersistentKeepalive, the
// advertised endpoint), removes every other peer, routes each peer's
// subnet into the interface with the gateway as source, and removes routes
// of peers that are gone. It changes only what differs, so calling it
// again with the same set is cheap and drops no session.
//
// peers may include this node's own record, which is ignored. Records
// that cannot be used (see ErrInvalidPeer) are skipped and named in the
// returned error, but the others are still applied: one bad record does
// not cut this node off from the rest.
//
// Routes use the bridge's gateway as source, so the task network must
// exist (New) before; after the bridge is recreated, call SetPeers again,
// as the kernel drops routes whose source address disappears.
func (m *Mesh) SetPeers(peers []Peer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dev == nil {
		return errMeshClosed
	}
	desired, invalid := selectPeers(m.cfg.NodeID, m.pub, m.cfg.Subnet, peers)
	current, err := m.dev.peers()
	if err != nil {
		return fmt.Errorf("read mesh peers of %s: %w", m.cfg.Interface, err)
	}
	plan, hold := planPeers(m.pub, current, desired, m.endpoints, m.held)
	if len(plan) > 0 {
		if err := m.dev.configure(wgtypes.Config{Peers: plan}); err != nil {
			return fmt.Errorf("configure mesh peers on %s: %w", m.cfg.Interface, err)
		}
		added, updated, removed := describeChanges(plan, current, desired)
		m.log.Info("mesh peers changed", zap.Strings("added", added), zap.Strings("updated", updated),
			zap.Strings("removed", removed), zap.Int("peers", len(desired)))
	}
	m.endpoints = map[wgtypes.Key]netip.AddrPort{}
	wanted := map[wgtypes.Key]bool{}
	for _, p := range desired {
		wanted[p.key] = true
		if p.endpoint.IsValid() {
			m.endpoints[p.key] = p.endpoint
		}
	}
	maps.DeleteFunc(m.held, func(k wgtypes.Key, _ bool) bool { return !wanted[k] })
	for _, k := range hold {
		m.held[k] = true
	}
	if len(m.held) > 0 && m.holdTimer == nil {
		m.holdTimer = time.AfterFunc(keepaliveHold, m.releaseKeepalives)
	}
	if err := m.syncRoutes(desired); err != nil {
		return err
	}
	if invalid != nil {
		return fmt.Errorf("mesh peers: applied %d, skipped invalid records: %w", len(desired), invalid)
	}
	return nil
}

// releaseKeepalives turns on the keepalive of the peers planPeers held back.
// For a peer whose handshake with this node completed meanwhile, that is
// one keepalive packet; for one that never reached this node, it starts
// the handshake from this side.
func (m *Mesh) releaseKeepalives() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.holdTimer = nil
	if m.dev == nil || len(m.held) == 0 {
		return
	}
	current, err := m.dev.peers()
	if err != nil {
		m.log.Warn("read mesh peers to turn on keepalive; SetPeers will retry", zap.Error(err))
		m.held = map[wgtypes.Key]bool{}
		return
	}
	keepalive := PersistentKeepalive
	var cfgs []wgtypes.PeerConfig
	for _, p := range current {
		if m.held[p.PublicKey] && p.PersistentKeepaliveInterval != keepalive {
			cfgs = append(cfgs, wgtypes.PeerConfig{PublicKey: p.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &keepalive})
		}
	}
	m.held = map[wgtypes.Key]bool{}
	if len(cfgs) == 0 {
		return
	}
	if err := m.dev.configure(wgtypes.Config{Peers: cfgs}); err != nil {
		m.log.Warn("turn on mesh keepalive; SetPeers will retry", zap.Error(err))
		return
	}
	m.log.Debug("mesh keepalive on", zap.Int("peers", len(cfgs)))
}

// stopHold cancels a pending releaseKeepalives; m.mu is held.
func (m *Mesh) stopHold() {
	if m.holdTimer != nil {
		m.holdTimer.Stop()
		m.holdTimer = nil
	}
}

// syncRoutes routes every desired peer's subnet (and the cluster range)
// into the mesh interface and deletes every other route on it. All routes
// through the interface are Warren's: it owns the interface.
func (m *Mesh) syncRoutes(desired []meshPeer) error {
	want := map[netip.Prefix]bool{}
	for _, p := range desired {
		want[p.subnet] = true
	}
	if r := m.cfg.ClusterRange; r.IsValid() {
		want[r] = true
	}
	var errs []error
	for _, p := range slices.SortedFunc(maps.Keys(want), func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }) {
		if err := m.replaceRoute(p); err != nil {
			errs = append(errs, err)
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return m.nl.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{LinkIndex: m.index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes on %s: %w", m.cfg.Interface, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok && want[p] {
			continue
		}
		if err := m.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s on %s: %w", r.Dst, m.cfg.Interface, err))
			continue
		}
		m.log.Debug("removed mesh route", zap.Stringer("dst", r.Dst))
	}
	if len(errs) > 0 {
		return fmt.Errorf("mesh routes: %w", errors.Join(errs...))
	}
	return nil
}

func (m *Mesh) replaceRoute(p netip.Prefix) error {
	r := &netlink.Route{
		LinkIndex: m.index,
		Dst:       ipNet(p),
		Src:       m.src.AsSlice(),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}
	if err := m.nl.RouteReplace(r); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("route %s into %s with source %s: %w; the source is the task bridge's gateway: create the task network before the mesh", p, m.cfg.Interface, m.src, err)
		}
		return fmt.Errorf("route %s into %s: %w", p, m.cfg.Interface, err)
	}
	return nil
}

// Close lets go of the mesh. A kernel interface stays, with its peers and
// routes, so traffic flows on while the node restarts; a wireguard-go
// device stops with its process, and its TUN interface and routes go with
// it (the next NewMesh and SetPeers rebuild them).
func (m *Mesh) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dev == nil {
		return nil
	}
	m.stopHold()
	err := m.dev.close()
	m.nl.Close()
	m.dev, m.nl = nil, nil
	if err != nil {
		return fmt.Errorf("close mesh %s: %w", m.cfg.Interface, err)
	}
	return nil
}

// Teardown removes the mesh interface, and with it every peer and route
// through it, then closes the Mesh. The key file stays: the node keeps its
// identity if it rejoins.
func (m *Mesh) Teardown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dev == nil {
		return errMeshClosed
	}
	m.stopHold()
	var errs []error
	if err := m.dev.close(); err != nil {
		errs = append(errs, err)
	}
	l, err := m.nl.LinkByName(m.cfg.Interface)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		errs = append(errs, fmt.Errorf("look up %s: %w", m.cfg.Interface, err))
	case l.Type() == "wireguard" || l.Type() == "tuntap":
		if err := m.nl.LinkDel(l); err != nil && !errors.As(err, &notFound) {
			errs = append(errs, fmt.Errorf("delete %s: %w", m.cfg.Interface, err))
		}
	}
	m.nl.Close()
	m.dev, m.nl = nil, nil
	if len(errs) > 0 {
		return fmt.Errorf("tear down mesh: %w", errors.Join(errs...))
	}
	m.log.Info("mesh torn down")
	return nil
}
