package netmesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrSubnetOverlap is returned (wrapped) by New when the node subnet
// overlaps an address or route on another interface of the host.
var ErrSubnetOverlap = errors.New("node subnet overlaps the host network")

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// macFor derives a locally administered MAC from an IPv4 address. A fixed
// MAC per address means a task that inherits a released address also
// inherits its MAC, so neighbours' ARP caches stay right; a fixed MAC on the
// bridge stops the kernel from changing it whenever ports come and go.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	// 0x02: locally administered, unicast. 0x57: 'W'.
	return net.HardwareAddr{0x02, 0x57, b[0], b[1], b[2], b[3]}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed underneath it; the partial result of an interrupted dump
// cannot be trusted for decisions like "is this address in use".
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func linkName(h *netlink.Handle, index int) string {
	if index == 0 {
		return "(no interface)"
	}
	l, err := h.LinkByIndex(index)
	if err != nil {
		return fmt.Sprintf("ifindex %d", index)
	}
	return l.Attrs().Name
}

// checkOverlap refuses a subnet that collides with an address or a route
// the host already uses outside the bridge: tasks would shadow (or be
// shadowed by) a real network and traffic would go to the wrong place.
// Default routes are ignored, as they overlap everything by design.
func checkOverlap(h *netlink.Handle, subnet netip.Prefix, bridgeIndex int) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		if bridgeIndex != 0 && a.LinkIndex == bridgeIndex {
			continue
		}
		p, ok := prefixOf(a.IPNet)
		if !ok || !p.Overlaps(subnet) {
			continue
		}
		return fmt.Errorf("%w: %s overlaps address %s on interface %s; pick another subnet for this node",
			ErrSubnetOverlap, subnet, p, linkName(h, a.LinkIndex))
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || !p.Overlaps(subnet) {
			continue
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if bridgeIndex != 0 && idx == bridgeIndex {
			continue
		}
		// TODO(mesh): routes to other nodes' subnets over the WireGuard
		// link will overlap a cluster-wide range; exempt that link here.
		return fmt.Errorf("%w: %s overlaps route %s via interface %s; pick another subnet for this node",
			ErrSubnetOverlap, subnet, p, linkName(h, idx))
	}
	return nil
}

// ensureBridge creates the bridge or brings an existing one to the wanted
// state: up, the given MTU and MAC, and the gateway as its only IPv4
// address (an address left from an earlier subnet would route that old
// subnet to the bridge).
func ensureBridge(h *netlink.Handle, name string, gw netip.Prefix, mtu int, log *zap.Logger) (netlink.Link, error) {
	mac := macFor(gw.Addr())
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		attrs.HardwareAddr = mac
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s after creating it: %w", name, err)
		}
		log.Info("created bridge", zap.String("bridge", name), zap.Stringer("gateway", gw))
	case err != nil:
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	case l.Type() != "bridge":
		return nil, fmt.Errorf("interface %s exists but is a %s, not a bridge; remove it or set another bridge name", name, l.Type())
	}
	if l.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set MTU %d on bridge %s: %w", mtu, name, err)
		}
	}
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("set MAC %s on bridge %s: %w", mac, name, err)
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of bridge %s: %w", name, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == gw {
			continue
		}
		if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil, fmt.Errorf("remove stale address %s from bridge %s: %w", a.IPNet, name, err)
		}
		log.Info("removed stale bridge address", zap.String("bridge", name), zap.Stringer("addr", a.IPNet))
	}
	if err := h.AddrReplace(l, &netlink.Addr{IPNet: ipNet(gw)}); err != nil {
		return nil, fmt.Errorf("set gateway address %s on bridge %s: %w", gw, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("bring bridge %s up: %w", name, err)
	}
	return l, nil
}

// enableForwarding turns on IPv4 forwarding in this network namespace;
// without it nothing leaves the bridge. It is never turned off again: other
// software on the host may rely on it by the time Warren leaves.
func enableForwarding() error {
	cur, err := os.ReadFile(ipForwardPath)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding (%s): %w; is /proc/sys mounted read-only?", ipForwardPath, err)
	}
	return nil
}
