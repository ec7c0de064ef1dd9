package netmesh

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PersistentKeepalive is the keepalive every mesh peer gets. 25 s is below
// the UDP timeout of common NATs and stateful firewalls (30 s and up), so a
// node behind one stays reachable, and its peers learn its public address
// from the keepalives even when it advertises none.
const PersistentKeepalive = 25 * time.Second

// PeerFormat is the version of the mesh peer record (the MeshPeer each
// assignment set carries) this node understands. Fields may be added within
// a format (protobuf readers skip fields they do not know); a change that
// older nodes would misread gets a new format, and a node refuses peers of
// a newer one, saying so, rather than half understand them.
const PeerFormat = 1

// ErrInvalidPeer is returned (wrapped) for a peer record that cannot be
// used: undecodable, of an unknown version, or conflicting with this node
// or another peer.
var ErrInvalidPeer = errors.New("invalid mesh peer")

// Peer is one node of the mesh as the other nodes see it: what goes through
// Raft. It carries no secret.
type Peer struct {
	// NodeID names the node in logs and errors.
	NodeID string
	// PublicKey is the node's WireGuard public key, base64 as `wg pubkey`
	// prints it.
	PublicKey string
	// Endpoint is the ip:port peers send to, or empty when the node cannot
	// be reached from outside (behind NAT without a forwarded port): peers
	// then learn its address from the handshakes and keepalives it sends.
	// An IP address, not a name: a record in Raft must mean the same on
	// every node.
	Endpoint string
	// Subnet is the node's task subnet, routed to it through the mesh.
	Subnet netip.Prefix
	// Format is the record's PeerFormat; 0 (unset) is format 1.
	Format uint32
}

// meshPeer is a validated Peer in the types the device speaks.
type meshPeer struct {
	nodeID   string
	key      wgtypes.Key
	endpoint netip.AddrPort // invalid when the peer advertises none
	subnet   netip.Prefix
}

// ValidatePeer checks a peer record as SetPeers will.
func ValidatePeer(p Peer) error {
	_, err := parsePeer(p)
	return err
}

func parsePeer(p Peer) (meshPeer, error) {
	fail := func(format string, a ...any) (meshPeer, error) {
		return meshPeer{}, fmt.Errorf("%w: node %q: %s", ErrInvalidPeer, p.NodeID, fmt.Sprintf(format, a...))
	}
	if p.NodeID == "" {
		return fail("no node ID")
	}
	if p.Format > PeerFormat {
		return fail("peer record format %d is newer than this node understands (up to %d); upgrade warren on this node", p.Format, PeerFormat)
	}
	key, err := wgtypes.ParseKey(p.PublicKey)
	if err != nil {
		return fail("public key %q is not a base64 WireGuard key", p.PublicKey)
	}
	if key == (wgtypes.Key{}) {
		return fail("public key is all zeros")
	}
	ep, err := parseEndpoint(p.Endpoint)
	if err != nil {
		return fail("%v", err)
	}
	if err := validateSubnet(p.Subnet); err != nil {
		return fail("%v", err)
	}
	return meshPeer{nodeID: p.NodeID, key: key, endpoint: ep, subnet: p.Subnet}, nil
}

// ValidEndpoint checks a WireGuard endpoint as nodes advertise it.
func ValidEndpoint(s string) error {
	_, err := parseEndpoint(s)
	return err
}

// parseEndpoint accepts "" (no endpoint) or ip:port.
func parseEndpoint(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if host, _, herr := net.SplitHostPort(s); herr == nil {
			if _, aerr := netip.ParseAddr(host); aerr != nil {
				return netip.AddrPort{}, fmt.Errorf("endpoint %q: %q is not an IP address; advertise an address, not a name", s, host)
			}
		}
		return netip.AddrPort{}, fmt.Errorf("endpoint %q is not ip:port (e.g. 192.0.2.10:51820 or [2001:db8::1]:51820)", s)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q cannot be dialled: give a unicast address and a non-zero port", s)
	}
	return ap, nil
}

// selectPeers validates peers against each other and this node, in NodeID
// order so the outcome of a conflict does not depend on input order. It
// skips this node's own record (same key or node ID) silently, so callers
// can pass every node's record, and skips unusable records with an error
// naming each; the returned peers are still meant to be applied.
func selectPeers(selfID string, selfKey wgtypes.Key, selfSubnet netip.Prefix, peers []Peer) ([]meshPeer, error) {
	sorted := append([]Peer(nil), peers...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].NodeID < sorted[j].NodeID })
	var (
		out  []meshPeer
		errs []error
		keys = map[wgtypes.Key]string{}
	)
	for _, p := range sorted {
		mp, err := parsePeer(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if mp.key == selfKey || (selfID != "" && mp.nodeID == selfID) {
			continue
		}
		if other, ok := keys[mp.key]; ok {
			errs = append(errs, fmt.Errorf("%w: node %q has the same public key as node %q; skipped it", ErrInvalidPeer, mp.nodeID, other))
			continue
		}
		if mp.subnet.Overlaps(selfSubnet) {
			errs = append(errs, fmt.Errorf("%w: node %q: subnet %s overlaps this node's subnet %s; skipped it", ErrInvalidPeer, mp.nodeID, mp.subnet, selfSubnet))
			continue
		}
		clash := ""
		for _, q := range out {
			if q.subnet.Overlaps(mp.subnet) {
				clash = fmt.Sprintf("%s of node %q", q.subnet, q.nodeID)
				break
			}
		}
		if clash != "" {
			errs = append(errs, fmt.Errorf("%w: node %q: subnet %s overlaps %s; skipped it", ErrInvalidPeer, mp.nodeID, mp.subnet, clash))
			continue
		}
		keys[mp.key] = mp.nodeID
		out = append(out, mp)
	}
	return out, errors.Join(errs...)
}

// planPeers returns the device changes that turn the device's current peers
// into desired, and nothing for a peer that already matches, so SetPeers
// with an unchanged set touches nothing and drops no session. Removals come
// first, so an allowed IP that moves between peers is never claimed twice.
//
// An endpoint is set when a peer is new or when its advertised endpoint
// differs from the last one applied (lastEndpoint; after a restart, the
// device's current one). So a peer that roamed — WireGuard follows a
// peer's source address — is not pulled back on every SetPeers, only when
// its record changes. A peer that advertises no endpoint keeps whatever
// the device learned.
//
// Turning on a peer's persistent keepalive makes WireGuard send a
// handshake initiation at once. When two nodes add each other at the same
// moment both do, and in wireguard-go two crossing handshakes, handled by
// parallel handshake workers, can leave the pair with mismatched keys in
// one direction until the next rekey, about 15 s later (see keepaliveHold).
// So of two nodes only the one with the lower public key turns keepalive
// on when it adds the other; the higher one adds the peer without it and
// returns it in hold, to turn keepalive on once the lower one's handshake
// has had time to arrive. A peer in held is not given keepalive here.
// (Crossing handshakes started by data rather than by keepalive can still
// happen; WireGuard recovers from them by itself, in 5 to 15 s.)
func planPeers(self wgtypes.Key, current []wgtypes.Peer, desired []meshPeer, lastEndpoint map[wgtypes.Key]netip.AddrPort, held map[wgtypes.Key]bool) (plan []wgtypes.PeerConfig, hold []wgtypes.Key) {
	cur := make(map[wgtypes.Key]wgtypes.Peer, len(current))
	for _, p := range current {
		cur[p.PublicKey] = p
	}
	want := make(map[wgtypes.Key]bool, len(desired))
	for _, p := range desired {
		want[p.key] = true
	}
	var gone []wgtypes.Key
	for k := range cur {
		if !want[k] {
			gone = append(gone, k)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return bytes.Compare(gone[i][:], gone[j][:]) < 0 })
	for _, k := range gone {
		plan = append(plan, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	keepalive := PersistentKeepalive
	for _, p := range desired {
		c, exists := cur[p.key]
		pc := wgtypes.PeerConfig{PublicKey: p.key}
		changed := !exists
		if !exists || !sameAllowedIPs(c.AllowedIPs, p.subnet) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = []net.IPNet{*ipNet(p.subnet)}
			changed = true
		}
		switch {
		case !exists && bytes.Compare(self[:], p.key[:]) > 0:
			hold = append(hold, p.key)
		case held[p.key]:
		case !exists || c.PersistentKeepaliveInterval != keepalive:
			pc.PersistentKeepaliveInterval = &keepalive
			changed = true
		}
		if p.endpoint.IsValid() {
			last, ok := lastEndpoint[p.key]
			if !ok && exists {
				last = udpAddrPort(c.Endpoint)
			}
			if !exists || last != p.endpoint {
				pc.Endpoint = net.UDPAddrFromAddrPort(p.endpoint)
				changed = true
			}
		}
		if changed {
			plan = append(plan, pc)
		}
	}
	return plan, hold
}

func sameAllowedIPs(have []net.IPNet, want netip.Prefix) bool {
	if len(have) != 1 {
		return false
	}
	p, ok := prefixOf(&have[0])
	return ok && p == want
}

func udpAddrPort(a *net.UDPAddr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// describeChanges names the nodes a plan adds, updates and removes, for
// the log.
func describeChanges(plan []wgtypes.PeerConfig, current []wgtypes.Peer, desired []meshPeer) (added, updated, removed []string) {
	names := map[wgtypes.Key]string{}
	for _, p := range desired {
		names[p.key] = p.nodeID
	}
	had := map[wgtypes.Key]bool{}
	for _, p := range current {
		had[p.PublicKey] = true
	}
	for _, c := range plan {
		name, ok := names[c.PublicKey]
		if !ok {
			name = "key " + c.PublicKey.String()
		}
		switch {
		case c.Remove:
			removed = append(removed, name)
		case had[c.PublicKey]:
			updated = append(updated, name)
		default:
			added = append(added, name)
		}
	}
	return added, updated, removed
}
