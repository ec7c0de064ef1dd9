package netmesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// meshHost is a simulated node: its own network namespace with an
// underlay interface and a bridge holding its task subnet's gateway.
type meshHost struct {
	name   string
	ns     string // named netns path
	h      *netlink.Handle
	subnet netip.Prefix
	addr   netip.Addr // underlay address
}

// newMeshPair builds two hosts, a (192.168.77.1) and b (192.168.77.2),
// joined by a veth "ul0" of the given MTU as their underlay, each with a
// default route to the other and a bridge br0 with 10.88.N.1/24. Nothing
// is created in the test process's own namespace.
func newMeshPair(t *testing.T, underlayMTU int) (a, b *meshHost) {
	t.Helper()
	dir := t.TempDir()
	a = &meshHost{name: "a", ns: filepath.Join(dir, "ns-a"), subnet: netip.MustParsePrefix("10.88.1.0/24"), addr: netip.MustParseAddr("192.168.77.1")}
	b = &meshHost{name: "b", ns: filepath.Join(dir, "ns-b"), subnet: netip.MustParsePrefix("10.88.2.0/24"), addr: netip.MustParseAddr("192.168.77.2")}
	for _, host := range []*meshHost{a, b} {
		if err := createNetNS(host.ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = removeNetNS(host.ns) })
		h, err := handleIn(host.ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		host.h = h
	}
	bfd, err := unix.Open(b.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(bfd)
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = "ul0", underlayMTU
	if err := a.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "ul0", PeerNamespace: netlink.NsFd(bfd), PeerMTU: uint32(underlayMTU)}); err != nil {
		t.Fatalf("create underlay veth: %v", err)
	}
	for _, pair := range [][2]*meshHost{{a, b}, {b, a}} {
		host, other := pair[0], pair[1]
		must := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("host %s: %s: %v", host.name, what, err)
			}
		}
		lo, err := host.h.LinkByName("lo")
		must("lo", err)
		must("lo up", host.h.LinkSetUp(lo))
		ul, err := host.h.LinkByName("ul0")
		must("ul0", err)
		must("underlay address", host.h.AddrAdd(ul, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(host.addr, 24))}))
		must("ul0 up", host.h.LinkSetUp(ul))
		must("default route", host.h.RouteAdd(&netlink.Route{LinkIndex: ul.Attrs().Index, Gw: other.addr.AsSlice()}))
		battrs := netlink.NewLinkAttrs()
		battrs.Name = "br0"
		must("bridge", host.h.LinkAdd(&netlink.Bridge{LinkAttrs: battrs}))
		br, err := host.h.LinkByName("br0")
		must("br0", err)
		must("bridge address", host.h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(gatewayOf(host.subnet), 24))}))
		must("br0 up", host.h.LinkSetUp(br))
	}
	return a, b
}

func (host *meshHost) meshConfig(t *testing.T, keyFile string) MeshConfig {
	return MeshConfig{
		KeyFile:      keyFile,
		NodeID:       host.name,
		Subnet:       host.subnet,
		Endpoint:     netip.AddrPortFrom(host.addr, DefaultMeshListenPort).String(),
		ClusterRange: netip.MustParsePrefix("10.88.0.0/16"),
		NetNS:        host.ns,
		Log:          zaptest.NewLogger(t).Named(host.name),
	}
}

// meshRoutes is dst -> preferred source of the IPv4 routes through the
// mesh interface.
func (host *meshHost) meshRoutes(t *testing.T) map[netip.Prefix]netip.Addr {
	t.Helper()
	l, err := host.h.LinkByName(DefaultMeshInterface)
	if err != nil {
		t.Fatalf("host %s: %v", host.name, err)
	}
	routes, err := host.h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, r := range routes {
		p, _ := prefixOf(r.Dst)
		src, _ := netip.AddrFromSlice(r.Src)
		out[p] = src.Unmap()
	}
	return out
}

// kernelHasWireGuard probes, in a namespace of its own, whether this kernel
// can make WireGuard interfaces: what NewMesh's choice is checked against.
func kernelHasWireGuard(t *testing.T) bool {
	t.Helper()
	ns := filepath.Join(t.TempDir(), "probe")
	if err := createNetNS(ns); err != nil {
		t.Fatal(err)
	}
	defer removeNetNS(ns)
	h, err := handleIn(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "probe-wg"
	err = h.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs})
	if errors.Is(err, unix.EOPNOTSUPP) {
		return false
	}
	if err != nil {
		t.Fatalf("probe for kernel WireGuard: %v", err)
	}
	return true
}

// echoServer listens on addr in the namespace ns and echoes every
// connection.
func echoServer(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := withNetNS(ns, func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l
}

// waitHandshake waits until every mesh has completed a handshake with all
// its peers and has keepalive on for all of them (see keepaliveHold), so
// the test's data starts on established sessions. Data sent while both
// ends are still initiating can make the handshakes cross, which WireGuard
// resolves only after 5 to 15 s (see planPeers).
func waitHandshake(t *testing.T, meshes ...*Mesh) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range meshes {
		for {
			m.mu.Lock()
			peers, err := m.dev.peers()
			held := len(m.held)
			m.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			done := len(peers) > 0 && held == 0
			for _, p := range peers {
				done = done && !p.LastHandshakeTime.IsZero() && p.PersistentKeepaliveInterval == PersistentKeepalive
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("mesh %s: no handshake with its peers within 10 s: %+v", m.cfg.NodeID, peers)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func dialFrom(ns string, src netip.Addr, dst string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := withNetNS(ns, func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		var err error
		c, err = d.Dial("tcp4", dst)
		return err
	})
	return c, err
}

// canary is what the test sends through the mesh; finding it on the
// underlay would mean plaintext leaked.
var canary = []byte("WARREN-MESH-PLAINTEXT-CANARY ")

// echoThroughMesh sends n bytes from src in ns to dst, reads them back and
// checks them: a full-size transfer, so a wrong MTU shows as a stall.
func echoThroughMesh(t *testing.T, ns string, src netip.Addr, dst string, n int) {
	t.Helper()
	c, err := dialFrom(ns, src, dst, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, src, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := bytes.Repeat(canary, n/len(canary)+1)[:n]
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo from %s: %v", dst, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write to %s: %v", dst, err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo from %s differs from what was sent", dst)
	}
}

// capture records every frame on an interface with an AF_PACKET socket
// opened in the interface's namespace.
type capture struct {
	fd   int
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	frames    [][]byte
	truncated int
	drops     uint32
}

func startCapture(t *testing.T, host *meshHost, ifname string) *capture {
	t.Helper()
	l, err := host.h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	c := &capture{stop: make(chan struct{}), done: make(chan struct{})}
	if err := withNetNS(host.ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index})
	}); err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	// Room for the whole test's traffic: a frame the socket dropped would
	// be a frame not checked for plaintext (close counts the drops).
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 256<<10) // GSO frames exceed 64 KiB with headers
		for {
			n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
			if err != nil {
				// A timeout: the queue is empty. Stop only now, so no
				// frame still queued goes unchecked.
				select {
				case <-c.stop:
					return
				default:
					continue
				}
			}
			c.mu.Lock()
			if n > len(buf) {
				c.truncated++
				n = len(buf)
			}
			c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.close() })
	return c
}

// close stops the capture and returns the frames, how many were cut short
// and how many the kernel dropped.
func (c *capture) close() (frames [][]byte, truncated int, drops uint32) {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
		if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.drops = st.Drops
		}
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.truncated, c.drops
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// underlayVerdict sorts captured Ethernet frames: WireGuard's UDP on the
// mesh port (frames and bytes: with UDP GSO one captured frame on a veth
// carries up to 64 KiB of datagrams), and anything that shows mesh traffic in the clear: a packet
// to or from the cluster range, any TCP, or the canary bytes.
func underlayVerdict(frames [][]byte, cluster netip.Prefix) (wgFrames, wgBytes int, leaks []string) {
	for _, f := range frames {
		if bytes.Contains(f, canary[:16]) {
			leaks = append(leaks, "frame contains the plaintext canary")
		}
		if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		proto := ip[9]
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		dst := netip.AddrFrom4([4]byte(ip[16:20]))
		switch {
		case cluster.Contains(src) || cluster.Contains(dst):
			leaks = append(leaks, "IPv4 "+src.String()+" -> "+dst.String()+" on the underlay")
		case proto == unix.IPPROTO_TCP:
			leaks = append(leaks, "TCP "+src.String()+" -> "+dst.String()+" on the underlay")
		case proto == unix.IPPROTO_UDP && len(ip) >= ihl+4:
			sport := binary.BigEndian.Uint16(ip[ihl:])
			dport := binary.BigEndian.Uint16(ip[ihl+2:])
			if sport == DefaultMeshListenPort && dport == DefaultMeshListenPort {
				wgFrames++
				wgBytes += len(f)
			}
		}
	}
	return wgFrames, wgBytes, leaks
}

func linkStats(t *testing.T, host *meshHost, name string) (rx, tx uint64) {
	t.Helper()
	l, err := host.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	s := l.Attrs().Statistics
	return s.RxBytes, s.TxBytes
}

func TestMeshTwoNodes(t *testing.T) {
	needKernel(t)
	kernelWG := kernelHasWireGuard(t)
	a, b := newMeshPair(t, 1450)
	keys := t.TempDir()
	cfgA := a.meshConfig(t, filepath.Join(keys, "a", "wg.key"))
	cfgB := b.meshConfig(t, filepath.Join(keys, "b", "wg.key"))

	ma, err := NewMesh(cfgA)
	if err != nil {
		t.Fatalf("NewMesh a: %v", err)
	}
	t.Cleanup(func() { _ = ma.Close() })
	mb, err := NewMesh(cfgB)
	if err != nil {
		t.Fatalf("NewMesh b: %v", err)
	}
	t.Cleanup(func() { _ = mb.Close() })

	wantKind := KindUserspace
	if kernelWG {
		wantKind = KindKernel
	}
	t.Logf("kernel WireGuard available: %v; mesh kind: %s", kernelWG, ma.Kind())
	if ma.Kind() != wantKind || mb.Kind() != wantKind {
		t.Errorf("Kind = %q, %q; want %q", ma.Kind(), mb.Kind(), wantKind)
	}
	// MTU: detected from the default route's interface (ul0, 1450) - 80.
	if ma.MTU() != 1370 {
		t.Errorf("MTU() = %d, want 1450 - 80 = 1370", ma.MTU())
	}
	if l, err := a.h.LinkByName(DefaultMeshInterface); err != nil || l.Attrs().MTU != 1370 {
		t.Errorf("mesh interface MTU: %v, %v; want 1370", l, err)
	}
	if st, err := os.Stat(cfgA.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", st, err)
	}

	// Each node's record, as the assignment sets carry it.
	var peers []Peer
	for _, m := range []*Mesh{ma, mb} {
		p := m.Self()
		if err := ValidatePeer(p); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
	}
	for _, m := range []*Mesh{ma, mb} {
		if err := m.SetPeers(peers); err != nil { // includes the node's own record
			t.Fatalf("SetPeers: %v", err)
		}
	}
	cluster := netip.MustParsePrefix("10.88.0.0/16")
	wantRoutes := map[netip.Prefix]netip.Addr{b.subnet: gatewayOf(a.subnet), cluster: gatewayOf(a.subnet)}
	if got := a.meshRoutes(t); !maps.Equal(got, wantRoutes) {
		t.Errorf("routes on a's mesh interface = %v, want %v", got, wantRoutes)
	}

	capB := startCapture(t, b, "ul0")
	waitHandshake(t, ma, mb)
	if dp := mustPeers(t, ma); len(dp) != 1 || dp[0].PersistentKeepaliveInterval != PersistentKeepalive || !sameAllowedIPs(dp[0].AllowedIPs, b.subnet) {
		t.Errorf("a's device peers = %+v; want b with keepalive 25s and allowed IPs %s", dp, b.subnet)
	}
	ln := echoServer(t, b.ns, netip.AddrPortFrom(gatewayOf(b.subnet), 0).String())
	rx0, tx0 := linkStats(t, a, DefaultMeshInterface)
	const n = 1 << 20
	echoThroughMesh(t, a.ns, gatewayOf(a.subnet), ln.Addr().String(), n)
	rx1, tx1 := linkStats(t, a, DefaultMeshInterface)
	if tx1-tx0 < n || rx1-rx0 < n {
		t.Errorf("a's mesh interface moved rx %d tx %d bytes for a %d-byte echo: traffic did not go through it", rx1-rx0, tx1-tx0, n)
	}
	// SetPeers again with the same set changes nothing.
	if plan, _ := planPeers(ma.pub, mustPeers(t, ma), mustSelect(t, ma, peers), ma.endpoints, nil); len(plan) != 0 {
		t.Errorf("second SetPeers would change %s", uapiSet(wgtypes.Config{Peers: plan}))
	}

	// Restart of node a: same key, and the mesh comes back.
	if err := ma.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err = a.h.LinkByName(DefaultMeshInterface)
	if gone := errors.As(err, new(netlink.LinkNotFoundError)); gone == (ma.Kind() == KindKernel) {
		t.Errorf("after Close, mesh interface present = %v, want %v for %s", !gone, ma.Kind() == KindKernel, ma.Kind())
	}
	ma2, err := NewMesh(cfgA)
	if err != nil {
		t.Fatalf("NewMesh a again: %v", err)
	}
	t.Cleanup(func() { _ = ma2.Close() })
	if ma2.PublicKey() != ma.PublicKey() {
		t.Errorf("public key after restart %s, before %s: the key file did not persist", ma2.PublicKey(), ma.PublicKey())
	}
	if err := ma2.SetPeers(peers); err != nil {
		t.Fatalf("SetPeers after restart: %v", err)
	}
	waitHandshake(t, ma2)
	echoThroughMesh(t, a.ns, gatewayOf(a.subnet), ln.Addr().String(), 64<<10)

	// Removing the peer removes its route; the connection then fails, and
	// nothing leaks onto the underlay in the clear (the cluster range
	// keeps the traffic in the mesh, where no peer takes it).
	if err := ma2.SetPeers(nil); err != nil {
		t.Fatalf("SetPeers(nil): %v", err)
	}
	wantRoutes = map[netip.Prefix]netip.Addr{cluster: gatewayOf(a.subnet)}
	if got := a.meshRoutes(t); !maps.Equal(got, wantRoutes) {
		t.Errorf("routes after SetPeers(nil) = %v, want only %v", got, wantRoutes)
	}
	if dp := mustPeers(t, ma2); len(dp) != 0 {
		t.Errorf("a's device still has peers %+v", dp)
	}
	if c, err := dialFrom(a.ns, gatewayOf(a.subnet), ln.Addr().String(), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("dial to b's subnet succeeded after its peer was removed")
	}

	frames, truncated, drops := capB.close()
	if truncated > 0 || drops > 0 {
		t.Errorf("capture missed data: %d frames truncated, %d dropped by the kernel", truncated, drops)
	}
	wgFrames, wgBytes, leaks := underlayVerdict(frames, cluster)
	t.Logf("underlay capture on b: %d frames, %d of them WireGuard UDP %d<->%d with %d bytes", len(frames), wgFrames, DefaultMeshListenPort, DefaultMeshListenPort, wgBytes)
	if wgBytes < 2*n {
		t.Errorf("only %d bytes of WireGuard UDP on the underlay for a %d-byte echo", wgBytes, n)
	}
	for i, l := range leaks {
		if i == 5 {
			t.Errorf("... %d leaks in all", len(leaks))
			break
		}
		t.Errorf("plaintext on the underlay: %s", l)
	}

	for _, m := range []*Mesh{ma2, mb} {
		if err := m.Teardown(); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	}
	for _, host := range []*meshHost{a, b} {
		if _, err := host.h.LinkByName(DefaultMeshInterface); !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("host %s: mesh interface still there after Teardown (%v)", host.name, err)
		}
		routes, _ := host.h.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 && cluster.Overlaps(p) && p != host.subnet {
				t.Errorf("host %s: route %s left after Teardown", host.name, p)
			}
		}
	}
	if _, err := os.Stat(cfgA.KeyFile); err != nil {
		t.Errorf("key file gone after Teardown: %v", err)
	}
}

// TestMeshUserspaceOnly runs the wireguard-go path even where the kernel
// has WireGuard, and checks a wrong record is reported but does not stop
// the good ones.
func TestMeshUserspaceOnly(t *testing.T) {
	needKernel(t)
	a, b := newMeshPair(t, 1500)
	keys := t.TempDir()
	var meshes []*Mesh
	for _, host := range []*meshHost{a, b} {
		cfg := host.meshConfig(t, filepath.Join(keys, host.name+".key"))
		cfg.userspaceOnly = true
		m, err := NewMesh(cfg)
		if err != nil {
			t.Fatalf("NewMesh %s: %v", host.name, err)
		}
		t.Cleanup(func() { _ = m.Teardown() })
		if m.Kind() != KindUserspace || m.MTU() != 1420 {
			t.Errorf("Kind, MTU = %q, %d; want %q, 1420", m.Kind(), m.MTU(), KindUserspace)
		}
		meshes = append(meshes, m)
	}
	bad := meshes[1].Self()
	bad.NodeID, bad.Subnet = "imposter", a.subnet // claims a's own subnet
	peers := []Peer{meshes[0].Self(), meshes[1].Self(), bad}
	if err := meshes[0].SetPeers(peers); !errors.Is(err, ErrInvalidPeer) || !strings.Contains(err.Error(), "imposter") {
		t.Errorf("SetPeers with a bad record = %v, want ErrInvalidPeer naming it", err)
	}
	if err := meshes[1].SetPeers(peers[:2]); err != nil {
		t.Fatal(err)
	}
	waitHandshake(t, meshes...)
	ln := echoServer(t, b.ns, netip.AddrPortFrom(gatewayOf(b.subnet), 0).String())
	echoThroughMesh(t, a.ns, gatewayOf(a.subnet), ln.Addr().String(), 64<<10)
}

func TestMeshRefusesForeignInterface(t *testing.T) {
	needKernel(t)
	a, _ := newMeshPair(t, 1500)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = DefaultMeshInterface
	if err := a.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	_, err := NewMesh(a.meshConfig(t, filepath.Join(t.TempDir(), "wg.key")))
	if err == nil || !strings.Contains(err.Error(), "exists but is a bridge") {
		t.Fatalf("NewMesh over a bridge named %s = %v, want a refusal", DefaultMeshInterface, err)
	}
	if l, err := a.h.LinkByName(DefaultMeshInterface); err != nil || l.Type() != "bridge" {
		t.Errorf("the foreign interface was changed: %v, %v", l, err)
	}
}

func mustPeers(t *testing.T, m *Mesh) []wgtypes.Peer {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.dev.peers()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSelect(t *testing.T, m *Mesh, peers []Peer) []meshPeer {
	t.Helper()
	out, err := selectPeers(m.cfg.NodeID, m.pub, m.cfg.Subnet, peers)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
