package manager

import (
	"fmt"
	"net/netip"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
)

// Bounds on what a node may say about a task; longer texts are cut, not
// refused, so a chatty error still reaches the user.
const (
	maxStatusText  = 4 << 10
	maxContainerID = 128
)

// checkStatus checks a task status a node reported before it is written to
// replicated state, where every node programs its VIPs and published ports
// from it. A task address must be an IPv4 host address in the reporting
// node's own task subnet: anything else would let one node point every
// node's load balancing at an address of its choosing (or, for an address
// nftables cannot take, break VIP programming on every node).
func checkStatus(n *messages.Node, s *messages.TaskStatus) error {
	if s == nil {
		return fmt.Errorf("no status")
	}
	if _, ok := messages.TaskState_name[int32(s.State)]; !ok {
		return fmt.Errorf("unknown task state %d", s.State)
	}
	if _, ok := messages.HealthState_name[int32(s.Health)]; !ok {
		return fmt.Errorf("unknown health state %d", s.Health)
	}
	if len(s.ContainerId) > maxContainerID {
		return fmt.Errorf("container id of %d bytes", len(s.ContainerId))
	}
	s.Message, s.Err = cut(s.Message), cut(s.Err)
	if s.Ip == "" {
		return nil
	}
	if err := TaskAddrOK(n.GetSubnet(), s.Ip); err != nil {
		return err
	}
	return nil
}

// TaskAddrOK reports why ip cannot be a task address on a node whose task
// subnet is subnet (nil if it can).
func TaskAddrOK(subnet, ip string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return fmt.Errorf("task address %q is not an IPv4 address", ip)
	}
	pfx, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("task address %s reported by a node without a task subnet", ip)
	}
	pfx = pfx.Masked()
	if !pfx.Contains(addr) {
		return fmt.Errorf("task address %s is outside the node's task subnet %s", ip, pfx)
	}
	if !netmesh.IsTaskAddr(pfx, addr) {
		return fmt.Errorf("task address %s is the network, gateway or broadcast address of %s", ip, pfx)
	}
	return nil
}

func cut(s string) string {
	if len(s) > maxStatusText {
		return s[:maxStatusText] + "…"
	}
	return s
}
