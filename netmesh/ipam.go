package netmesh

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrSubnetExhausted is returned (wrapped) by Attach when every task address
// in the node's subnet is leased.
var ErrSubnetExhausted = errors.New("subnet exhausted")

// Prefix lengths a node subnet may have. /30 is the smallest subnet that
// still has one task address after network, gateway and broadcast; /8 keeps
// a typo like 10.0.0.0/0 from claiming the whole address space.
const (
	minSubnetBits = 8
	maxSubnetBits = 30
)

// validateSubnet checks that p can serve as a node's task subnet.
func validateSubnet(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("no subnet configured: set the node's task subnet, e.g. 10.88.1.0/24")
	}
	if !p.Addr().Is4() {
		return fmt.Errorf("subnet %s is not IPv4: task networking supports IPv4 subnets only, e.g. 10.88.1.0/24", p)
	}
	if p.Bits() < minSubnetBits || p.Bits() > maxSubnetBits {
		return fmt.Errorf("subnet %s has prefix length /%d: use a prefix between /%d and /%d", p, p.Bits(), minSubnetBits, maxSubnetBits)
	}
	if p.Masked() != p {
		return fmt.Errorf("subnet %s has host bits set: did you mean %s?", p, p.Masked())
	}
	a := p.Addr()
	if a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
		return fmt.Errorf("subnet %s is not a unicast range usable for tasks: pick a private range such as 10.88.1.0/24", p)
	}
	return nil
}

// gatewayOf returns the first address of the subnet, which the bridge holds.
func gatewayOf(p netip.Prefix) netip.Addr {
	return p.Masked().Addr().Next()
}

// broadcastOf returns the last address of an IPv4 subnet.
func broadcastOf(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// taskAddrCount is how many addresses of p can be leased to tasks: all but
// network, gateway and broadcast.
func taskAddrCount(p netip.Prefix) int {
	return 1<<(32-p.Bits()) - 3
}

// IsTaskAddr reports whether a may be leased to a task in subnet p: not
// its network, gateway or broadcast address.
func IsTaskAddr(p netip.Prefix, a netip.Addr) bool {
	return p.Contains(a) && a != p.Masked().Addr() && a != gatewayOf(p) && a != broadcastOf(p)
}

// lowestFree returns the lowest task address in p that is not in used.
// leases is only for the error message: it is the number of leases the
// caller holds, which can exceed len(used) when some are outside p.
func lowestFree(p netip.Prefix, used map[netip.Addr]bool, leases int) (netip.Addr, error) {
	if err := validateSubnet(p); err != nil {
		return netip.Addr{}, err
	}
	last := broadcastOf(p)
	// Scanning is O(subnet size) in the worst case; a /16 is 65k steps of
	// map lookups, cheap next to the netlink work an Attach does.
	for a := gatewayOf(p).Next(); a.IsValid() && a.Less(last); a = a.Next() {
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: all %d task addresses in %s are leased (%d leases exist); detach unused tasks or give this node a larger subnet",
		ErrSubnetExhausted, taskAddrCount(p), p, leases)
}
