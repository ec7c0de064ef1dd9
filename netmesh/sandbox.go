package netmesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

const (
	// vethPrefix starts every host-side veth name; the rest is a hash of
	// the task ID, because task IDs do not fit in IFNAMSIZ.
	vethPrefix = "wv"
	// vethAliasPrefix labels host veths (IFLA_IFALIAS) with their task ID,
	// so GC can map a veth back to its task without the lease db.
	vethAliasPrefix = "warren:"
	// taskIfName is the task's interface inside its namespace.
	taskIfName = "eth0"
)

var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// validTaskID keeps task IDs usable as file names under NetNSDir and as
// link aliases.
func validTaskID(id string) error {
	if !taskIDPattern.MatchString(id) {
		return fmt.Errorf("invalid task ID %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// hostVethName is the host end of taskID's veth: "wv" and 10 hex digits of
// its SHA-256, 12 bytes, within the kernel's 15. Two task IDs sharing a
// name (a 40-bit collision) are caught by the alias check in Attach.
func hostVethName(taskID string) string {
	sum := sha256.Sum256([]byte(taskID))
	return vethPrefix + hex.EncodeToString(sum[:5])
}

// Attach gives taskID its network: a lease in the subnet, the named netns
// NetNSDir/<taskID>, and a veth pair whose host end is a bridge port
// (hairpin on) and whose other end is eth0 in the namespace with the
// task's address, lo up and a default route via the gateway. It is
// idempotent: a second call returns the same sandbox and repairs whatever
// part of it is missing.
func (n *Network) Attach(ctx context.Context, taskID string) (*Sandbox, error) {
	if err := validTaskID(taskID); err != nil {
		return nil, err
	}
	if err := n.lock(); err != nil {
		return nil, err
	}
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, fresh, err := n.leases.acquire(taskID, n.cfg.Subnet, time.Now())
	if err != nil {
		return nil, fmt.Errorf("attach task %s: %w", taskID, err)
	}
	sb := n.sandbox(l)
	if err := n.wire(ctx, &sb); err != nil {
		if fresh {
			// Nothing ran with this address yet: give it back rather than
			// leak it if the caller never retries.
			if derr := n.detach(taskID); derr != nil {
				n.log.Warn("undo failed attach", zap.String("task", taskID), zap.Error(derr))
			}
		}
		return nil, fmt.Errorf("attach task %s: %w", taskID, err)
	}
	n.log.Debug("task attached", zap.String("task", taskID), zap.Stringer("ip", sb.IP), zap.String("veth", sb.HostVeth))
	return &sb, nil
}

// wire makes the kernel match sb: namespace, veth pair, addresses, routes.
func (n *Network) wire(ctx context.Context, sb *Sandbox) error {
	if err := createNetNS(sb.NetNSPath); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ns, err := unix.Open(sb.NetNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", sb.NetNSPath, err)
	}
	defer unix.Close(ns)
	nsh, err := handleIn(sb.NetNSPath)
	if err != nil {
		return err
	}
	defer nsh.Close()

	br, err := netlink.LinkByName(n.cfg.BridgeName)
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w; restart warren to recreate it", n.cfg.BridgeName, err)
	}
	host, err := n.ensureVeth(sb, ns, nsh)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.configureHostEnd(host, br, sb.TaskID); err != nil {
		return err
	}
	return n.configureTaskEnd(nsh, sb)
}

// handleIn returns a netlink handle whose sockets live in the namespace at
// path. It is made here rather than with netlink.NewHandleAt so that a
// thread that fails to leave the namespace is never reused (see withNetNS).
func handleIn(path string) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := withNetNS(path, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", path, err)
	}
	return h, nil
}

// ensureVeth returns the host end of sb's veth pair, creating the pair if it
// is missing. A host end whose peer is not eth0 in the task's namespace
// (the namespace was recreated, or an earlier Attach died half-way) is
// deleted and made again.
func (n *Network) ensureVeth(sb *Sandbox, ns int, nsh *netlink.Handle) (netlink.Link, error) {
	alias := vethAliasPrefix + sb.TaskID
	host, err := netlink.LinkByName(sb.HostVeth)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		host = nil
	case err != nil:
		return nil, fmt.Errorf("look up veth %s: %w", sb.HostVeth, err)
	case host.Type() != "veth":
		return nil, fmt.Errorf("interface %s exists but is a %s, not task %s's veth; remove it", sb.HostVeth, host.Type(), sb.TaskID)
	case host.Attrs().Alias != "" && host.Attrs().Alias != alias:
		return nil, fmt.Errorf("veth %s belongs to %q, not task %s (veth name hash collision); detach that task first", sb.HostVeth, strings.TrimPrefix(host.Attrs().Alias, vethAliasPrefix), sb.TaskID)
	}

	peer, err := nsh.LinkByName(taskIfName)
	if err != nil && !errors.As(err, &notFound) {
		return nil, fmt.Errorf("look up %s in netns %s: %w", taskIfName, sb.NetNSPath, err)
	}
	if err != nil {
		peer = nil
	}
	if host != nil && peer != nil && peer.Type() == "veth" && peer.Attrs().ParentIndex == host.Attrs().Index {
		return host, nil
	}
	if host != nil {
		n.log.Info("recreating broken veth pair", zap.String("task", sb.TaskID), zap.String("veth", sb.HostVeth))
		if err := netlink.LinkDel(host); err != nil && !errors.As(err, &notFound) {
			return nil, fmt.Errorf("delete broken veth %s: %w", sb.HostVeth, err)
		}
	}
	if peer != nil {
		if err := nsh.LinkDel(peer); err != nil && !errors.As(err, &notFound) {
			return nil, fmt.Errorf("delete stale %s in netns %s: %w", taskIfName, sb.NetNSPath, err)
		}
	}

	attrs := netlink.NewLinkAttrs()
	attrs.Name = sb.HostVeth
	attrs.MTU = n.cfg.MTU
	v := &netlink.Veth{
		LinkAttrs: attrs,
		// The peer is born in the task's namespace, so its name never
		// clashes with the host's own eth0.
		PeerName:         taskIfName,
		PeerNamespace:    netlink.NsFd(ns),
		PeerMTU:          uint32(n.cfg.MTU),
		PeerTxQLen:       -1,
		PeerHardwareAddr: macFor(sb.IP),
	}
	if err := netlink.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create veth %s for task %s: %w", sb.HostVeth, sb.TaskID, err)
	}
	host, err = netlink.LinkByName(sb.HostVeth)
	if err != nil {
		return nil, fmt.Errorf("look up veth %s after creating it: %w", sb.HostVeth, err)
	}
	return host, nil
}

// configureHostEnd makes the host end a bridge port with hairpin on, so a
// task can reach itself through a VIP, labels it, and brings it up.
func (n *Network) configureHostEnd(host, br netlink.Link, taskID string) error {
	name := host.Attrs().Name
	if alias := vethAliasPrefix + taskID; host.Attrs().Alias != alias {
		if err := netlink.LinkSetAlias(host, alias); err != nil {
			return fmt.Errorf("label veth %s: %w", name, err)
		}
	}
	if host.Attrs().MTU != n.cfg.MTU {
		if err := netlink.LinkSetMTU(host, n.cfg.MTU); err != nil {
			return fmt.Errorf("set MTU on veth %s: %w", name, err)
		}
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(host, br); err != nil {
			return fmt.Errorf("add veth %s to bridge %s: %w", name, br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetHairpin(host, true); err != nil {
		return fmt.Errorf("enable hairpin on veth %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring veth %s up: %w", name, err)
	}
	return nil
}

// configureTaskEnd sets up the namespace side: lo up, eth0 with the task's
// MAC, MTU and address (and no other IPv4 address), up, default route.
func (n *Network) configureTaskEnd(nsh *netlink.Handle, sb *Sandbox) error {
	lo, err := nsh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo in netns %s: %w", sb.NetNSPath, err)
	}
	if err := nsh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up in netns %s: %w", sb.NetNSPath, err)
	}
	eth, err := nsh.LinkByName(taskIfName)
	if err != nil {
		return fmt.Errorf("look up %s in netns %s: %w", taskIfName, sb.NetNSPath, err)
	}
	if eth.Attrs().MTU != n.cfg.MTU {
		if err := nsh.LinkSetMTU(eth, n.cfg.MTU); err != nil {
			return fmt.Errorf("set MTU on %s in netns %s: %w", taskIfName, sb.NetNSPath, err)
		}
	}
	if mac := macFor(sb.IP); eth.Attrs().HardwareAddr.String() != mac.String() {
		if err := nsh.LinkSetHardwareAddr(eth, mac); err != nil {
			return fmt.Errorf("set MAC on %s in netns %s: %w", taskIfName, sb.NetNSPath, err)
		}
	}
	want := netip.PrefixFrom(sb.IP, n.cfg.Subnet.Bits())
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return nsh.AddrList(eth, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses in netns %s: %w", sb.NetNSPath, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			continue
		}
		if err := nsh.AddrDel(eth, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s in netns %s: %w", a.IPNet, sb.NetNSPath, err)
		}
	}
	if err := nsh.AddrReplace(eth, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
		return fmt.Errorf("set address %s in netns %s: %w", want, sb.NetNSPath, err)
	}
	if err := nsh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring %s up in netns %s: %w", taskIfName, sb.NetNSPath, err)
	}
	route := &netlink.Route{
		LinkIndex: eth.Attrs().Index,
		Dst:       ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)),
		Gw:        sb.Gateway.AsSlice(),
	}
	if err := nsh.RouteReplace(route); err != nil {
		return fmt.Errorf("set default route via %s in netns %s: %w", sb.Gateway, sb.NetNSPath, err)
	}
	return nil
}

// Detach removes taskID's network: its veth pair, its namespace mount and
// file, and its lease. Detaching a task that has none of them is not an
// error. A container still running in the namespace keeps the (now
// unreachable) namespace until it exits.
func (n *Network) Detach(ctx context.Context, taskID string) error {
	if err := validTaskID(taskID); err != nil {
		return err
	}
	if err := n.lock(); err != nil {
		return err
	}
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.detach(taskID)
}

func (n *Network) detach(taskID string) error {
	name := hostVethName(taskID)
	var notFound netlink.LinkNotFoundError
	l, err := netlink.LinkByName(name)
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		return fmt.Errorf("detach task %s: look up veth %s: %w", taskID, name, err)
	case l.Type() == "veth" && (l.Attrs().Alias == "" || l.Attrs().Alias == vethAliasPrefix+taskID):
		if err := netlink.LinkDel(l); err != nil && !errors.As(err, &notFound) {
			return fmt.Errorf("detach task %s: delete veth %s: %w", taskID, name, err)
		}
	}
	if err := removeNetNS(n.netnsPath(taskID)); err != nil {
		return fmt.Errorf("detach task %s: %w", taskID, err)
	}
	if err := n.leases.release(taskID); err != nil {
		return fmt.Errorf("detach task %s: release lease: %w", taskID, err)
	}
	return nil
}

// taskVeths maps task IDs to the host veths labelled with them.
func taskVeths() (map[string]netlink.Link, error) {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]netlink.Link{}
	for _, l := range links {
		a := l.Attrs()
		id, ok := strings.CutPrefix(a.Alias, vethAliasPrefix)
		if !ok || l.Type() != "veth" || a.Name != hostVethName(id) {
			continue
		}
		out[id] = l
	}
	return out, nil
}

// removeOrphanVeths deletes unlabelled veths named like Warren's on the
// bridge: left when Attach died between creating the pair and labelling
// it. keep is consulted by name, so a kept task's veth is never touched.
func (n *Network) removeOrphanVeths(keep map[string]bool) error {
	br, err := netlink.LinkByName(n.cfg.BridgeName)
	if err != nil {
		return nil // no bridge, no ports
	}
	kept := map[string]bool{}
	for id := range keep {
		kept[hostVethName(id)] = true
	}
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || a.Alias != "" || a.MasterIndex != br.Attrs().Index ||
			!strings.HasPrefix(a.Name, vethPrefix) || kept[a.Name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete orphan veth %s: %w", a.Name, err))
			continue
		}
		n.log.Info("deleted orphan veth", zap.String("veth", a.Name))
	}
	return errors.Join(errs...)
}
