package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NAT is where an operator's laptop sits: a network namespace that is not a
// Warren host (no warren, no containerd, no pid or mount namespace of its
// own) whose only way out is a router namespace on the hosts' switch. The
// router masquerades what it forwards (the hosts see only the router's
// address, and nothing of theirs can reach the client's) and forwards only
// new TCP connections to one address and port; everything else to or from
// the client is dropped, the router's own addresses included.
//
//	client ns (ClientIP) --lan--> router ns --eth0--> switch --> host
type NAT struct {
	h        *Harness
	Router   string // the router's namespace name
	Client   string // the client's namespace name
	NetNS    string // /run/netns/<Client>
	RouterIP string // the router's address on the switch: what hosts see
	ClientIP string // the client's own address, behind the router
	To       string // the one host:port the client may reach
}

// NATTable is the nftables table (family ip) in the router's namespace.
const NATTable = "wrn_e2e_nat"

// AddNAT builds a client namespace behind a masquerading router that lets
// it reach only to (host:port on the switch). The harness removes both
// namespaces when the test ends.
func (h *Harness) AddNAT(to string) (*NAT, error) {
	host, port, err := net.SplitHostPort(to)
	if err != nil {
		return nil, err
	}
	dst, err := netip.ParseAddr(host)
	if err != nil || !dst.Is4() {
		return nil, fmt.Errorf("NAT target %q: want an IPv4 host:port", to)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("NAT target %q: %w", to, err)
	}
	n := &NAT{h: h, Router: fmt.Sprintf("wrn%s-rt", h.ID), Client: fmt.Sprintf("wrn%s-lan", h.ID),
		RouterIP: fmt.Sprintf("10.99.%d.200", h.net), ClientIP: fmt.Sprintf("10.98.%d.2", h.net), To: to}
	n.NetNS = "/run/netns/" + n.Client
	h.t.Cleanup(n.close)
	if err := n.build(dst, uint16(p)); err != nil {
		return nil, fmt.Errorf("NAT for %s: %w", to, err)
	}
	return n, nil
}

func (n *NAT) build(dst netip.Addr, port uint16) error {
	lanGW := fmt.Sprintf("10.98.%d.1", n.h.net)
	for _, ns := range []string{n.Router, n.Client} {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	// The router's cable to the switch, and its link to the client.
	if err := n.link(fmt.Sprintf("wrt%s", n.h.ID), "", n.Router, "eth0", n.RouterIP+"/24", n.h.gateway()); err != nil {
		return err
	}
	if err := n.link(fmt.Sprintf("wla%s", n.h.ID), n.Router, n.Client, "eth0", n.ClientIP+"/24", lanGW); err != nil {
		return err
	}
	if err := addrIn(n.Router, "wla"+n.h.ID, lanGW+"/24"); err != nil {
		return err
	}
	// ip_forward is per namespace: the router's own.
	if err := run("ip", "netns", "exec", n.Router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		return err
	}
	// As on a real network, the hosts have no route to the client's LAN:
	// whatever a host sends there fails at once in that host, and never
	// leaves it by its default route.
	for _, host := range n.h.Hosts {
		if err := run("ip", "-n", host.Name, "route", "add", "unreachable", n.LAN()); err != nil {
			return err
		}
	}
	return n.rules(dst, port)
}

// link makes a veth pair: outer in namespace from ("" is the root, where
// it joins the switch), inner renamed to name in namespace to, with addr
// and a default route via gw.
func (n *NAT) link(outer, from, to, name, addr, gw string) error {
	peer := outer + "p"
	if err := run("ip", "link", "add", outer, "type", "veth", "peer", "name", peer); err != nil {
		return err
	}
	if from == "" {
		if err := run("ip", "link", "set", outer, "master", n.h.bridge, "up"); err != nil {
			return err
		}
	} else if err := run("ip", "link", "set", outer, "netns", from); err != nil {
		return err
	} else if err := run("ip", "-n", from, "link", "set", outer, "up"); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", peer, "netns", to},
		{"-n", to, "link", "set", peer, "name", name},
		{"-n", to, "addr", "add", addr, "dev", name},
		{"-n", to, "link", "set", name, "up"},
		{"-n", to, "link", "set", "lo", "up"},
		{"-n", to, "route", "add", "default", "via", gw},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// LAN is the client's network, behind the router.
func (n *NAT) LAN() string { return fmt.Sprintf("10.98.%d.0/24", n.h.net) }

func addrIn(ns, dev, addr string) error { return run("ip", "-n", ns, "addr", "add", addr, "dev", dev) }

// rules programs the router: masquerade out of eth0; forward new
// connections from the client only to dst:port over TCP, and replies;
// nothing from the client to the router itself.
func (n *NAT) rules(dst netip.Addr, port uint16) error {
	ns, err := netns.GetFromPath("/run/netns/" + n.Router)
	if err != nil {
		return err
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return err
	}
	lan := "wla" + n.h.ID
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable})
	drop, accept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{Name: "post", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: "fwd", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	in := c.AddChain(&nftables.Chain{Name: "in", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	d := dst.As4()
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(metaIfname(expr.MetaKeyOIFNAME, "eth0"), &expr.Masq{})})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	exprs := metaIfname(expr.MetaKeyIIFNAME, lan)
	exprs = append(exprs, metaIfname(expr.MetaKeyOIFNAME, "eth0")...)
	exprs = append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: d[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Verdict{Kind: expr.VerdictAccept})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: exprs})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(metaIfname(expr.MetaKeyIIFNAME, lan), &expr.Verdict{Kind: expr.VerdictDrop})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program the router's nft table: %w", err)
	}
	return nil
}

// metaIfname matches the input or output interface name.
func metaIfname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// Command is a command run in the client's network namespace (the rest of
// the machine's view, files included, as a process there would have).
func (n *NAT) Command(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NetNS, "--"}, args...)...)
	cmd.Env = env
	return cmd
}

// Exec runs a command in the client's namespace and returns its output.
func (n *NAT) Exec(env []string, args ...string) (string, error) {
	out, err := n.Command(env, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s behind the NAT: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Dial tries a TCP connection from the client's namespace.
func (n *NAT) Dial(addr string, timeout time.Duration) error {
	// The client is no host, but InNetNS needs only the namespace.
	return (&Host{NetNS: n.NetNS}).InNetNS(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func (n *NAT) close() {
	for _, ns := range []string{n.Client, n.Router} {
		_ = run("ip", "netns", "del", ns)
	}
	// The router's switch end goes with its namespace; make sure.
	if l, err := netlink.LinkByName("wrt" + n.h.ID); err == nil {
		_ = netlink.LinkDel(l)
	}
}
