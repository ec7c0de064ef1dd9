package cluster

// Fault injection: what goes wrong in a real cluster, done to the harness's
// hosts with the real mechanisms (nftables, link state, signals), so a test
// can break the cluster on purpose and watch Warren cope.
//
//	Partition / PartitionOneWay / Isolate   nft drops between hosts
//	Heal                                    remove every nft drop
//	Host.Unplug / Host.Plug                 the host's cable, for everyone
//	Host.Kill (cluster.go)                  kill warren with any signal
//	Host.KillContainerd                     SIGKILL the embedded containerd
//	Host.PowerOff / Host.Boot               pull the plug, then boot again
//
// Harness.Close undoes the network faults before it stops anything, so a
// failed test never leaves a drop rule or a downed link behind, and a
// powered-off host simply has no processes left to stop.

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// FaultsTable is the nftables table (family inet) that holds the harness's
// drop rules in each host's network namespace. It is the only table the
// faults code writes or deletes; Warren's own `inet warren` is never touched.
const FaultsTable = "wrn_e2e_faults"

// Drops happen where a packet arrives, never where it leaves: a packet a
// local process sends and netfilter drops on output fails the send with
// EPERM at once, while on a real broken network the send succeeds and the
// packet vanishes. So "a cannot reach b" is a rule in b dropping packets
// from a, and the sender sees only silence and timeouts.
//
// The chain hooks prerouting rather than input: prerouting sees every
// arriving packet, including the forwarded ones (a published port DNATed to
// a task) that input never sees. Priority raw runs before conntrack and
// before any of Warren's chains, so a dropped packet leaves no trace in the
// host and nothing Warren adds can undo it (a drop in any base chain is
// final). Addresses are the hosts' eth0 addresses, which is what every
// packet between hosts carries (task traffic leaving a host is masqueraded
// to it, tunnels use it as outer source).
const chainIn = "in"

// Partition cuts every host of a from every host of b, both ways: no packet
// between them in either direction, established connections included. The
// gateway (where the CLI and the test's own servers live) still reaches
// every host, as do hosts on the same side. Partitions add up: a second
// call drops more, Heal removes them all.
func (h *Harness) Partition(a, b []*Host) error {
	if err := h.checkSides(a, b); err != nil {
		return fmt.Errorf("partition: %w", err)
	}
	for _, x := range a {
		if err := x.addDrops(hostIPs(b)); err != nil {
			return fmt.Errorf("partition: %w", err)
		}
	}
	for _, y := range b {
		if err := y.addDrops(hostIPs(a)); err != nil {
			return fmt.Errorf("partition: %w", err)
		}
	}
	return nil
}

// PartitionOneWay drops packets from the hosts of from to the hosts of to;
// the reverse direction still passes. TCP needs both directions, so this
// breaks TCP connections opened from either side; it is meant for UDP
// (gossip, health probes) and for asymmetric-reachability bugs.
func (h *Harness) PartitionOneWay(from, to []*Host) error {
	if err := h.checkSides(from, to); err != nil {
		return fmt.Errorf("one-way partition: %w", err)
	}
	for _, t := range to {
		if err := t.addDrops(hostIPs(from)); err != nil {
			return fmt.Errorf("one-way partition: %w", err)
		}
	}
	return nil
}

// Isolate partitions hosts from every other host of the harness (but not
// from the gateway): "a worker loses all managers", "the leader is cut off".
func (h *Harness) Isolate(hosts ...*Host) error {
	var others []*Host
	for _, o := range h.Hosts {
		if !hasHost(hosts, o) {
			others = append(others, o)
		}
	}
	if len(others) == 0 {
		return fmt.Errorf("isolate: no other host to isolate %s from", hostNames(hosts))
	}
	return h.Partition(hosts, others)
}

// Heal removes every drop rule from every host (it deletes the faults
// table in each network namespace). Healing a healthy harness is a no-op.
func (h *Harness) Heal() error {
	var errs []error
	for _, host := range h.Hosts {
		if err := host.deleteFaultsTable(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// undoFaults is Close's first step: heal and plug every host, so warren's
// own shutdown is not cut off and nothing outlives the harness.
func (h *Harness) undoFaults() {
	if err := h.Heal(); err != nil {
		h.t.Logf("heal: %v", err)
	}
	for _, host := range h.Hosts {
		if err := host.Plug(); err != nil {
			h.t.Logf("plug: %v", err)
		}
	}
}

func (h *Harness) checkSides(a, b []*Host) error {
	if len(a) == 0 || len(b) == 0 {
		return fmt.Errorf("both sides need at least one host (got %s and %s)", hostNames(a), hostNames(b))
	}
	for _, x := range append(append([]*Host{}, a...), b...) {
		if x == nil || x.h != h {
			return fmt.Errorf("a host is not one of this harness's")
		}
	}
	for _, x := range a {
		if hasHost(b, x) {
			return fmt.Errorf("%s is on both sides", x.Name)
		}
	}
	return nil
}

// addDrops adds, in one atomic batch, rules dropping every packet the host
// receives from any of src.
func (host *Host) addDrops(src []netip.Addr) error {
	return host.nft(func(c *nftables.Conn) error {
		t := c.AddTable(faultsTable())
		// Adding an existing chain is not an error: partitions add up.
		accept := nftables.ChainPolicyAccept
		in := c.AddChain(&nftables.Chain{Name: chainIn, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept})
		for _, a := range src {
			c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: dropSaddr(a),
				UserData: nftComment("wrn e2e: partitioned from " + a.String())})
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("add drop rules on %s: %w", host.Name, err)
		}
		return nil
	})
}

func (host *Host) deleteFaultsTable() error {
	if _, err := os.Stat(host.NetNS); err != nil {
		return nil // no namespace, no rules
	}
	return host.nft(func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("list nft tables on %s: %w", host.Name, err)
		}
		for _, t := range tables {
			if t.Name != FaultsTable {
				continue
			}
			c.DelTable(t)
			if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete table inet %s on %s: %w", FaultsTable, host.Name, err)
			}
		}
		return nil
	})
}

// nft runs fn with an nftables connection bound to the host's network
// namespace; the test process itself stays where it is.
func (host *Host) nft(fn func(*nftables.Conn) error) error {
	ns, err := netns.GetFromPath(host.NetNS)
	if err != nil {
		return fmt.Errorf("open netns of %s: %w", host.Name, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", host.Name, err)
	}
	return fn(c)
}

func faultsTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: FaultsTable}
}

// dropSaddr is `meta nfproto ipv4 ip saddr <a> drop` (offset 12 is the
// source address in the IPv4 header).
func dropSaddr(a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func nftComment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

func hostIPs(hosts []*Host) []netip.Addr {
	out := make([]netip.Addr, 0, len(hosts))
	for _, x := range hosts {
		out = append(out, netip.MustParseAddr(x.IP))
	}
	return out
}

func hasHost(hosts []*Host, x *Host) bool {
	for _, y := range hosts {
		if y == x {
			return true
		}
	}
	return false
}

func hostNames(hosts []*Host) string {
	var n []string
	for _, x := range hosts {
		if x != nil {
			n = append(n, x.Name)
		}
	}
	return "[" + strings.Join(n, " ") + "]"
}

// outerVeth is the host's end of its cable: the veth in the root namespace
// that addHost enslaves to the switch bridge.
func (host *Host) outerVeth() string { return fmt.Sprintf("wve%s%d", host.h.ID, host.Index) }

// Unplug pulls the host's cable: its veth on the switch goes down, so
// nothing reaches the host and the host reaches nothing, the gateway (and
// so the CLI) included. Inside, eth0 loses its carrier but keeps its
// address and routes, as a real NIC does.
func (host *Host) Unplug() error {
	return host.setLink(false)
}

// Plug puts the cable back. Plugging a plugged host is a no-op.
func (host *Host) Plug() error {
	return host.setLink(true)
}

func (host *Host) setLink(up bool) error {
	l, err := netlink.LinkByName(host.outerVeth())
	if err != nil {
		return fmt.Errorf("cable of %s: %w", host.Name, err)
	}
	if up {
		err = netlink.LinkSetUp(l)
	} else {
		err = netlink.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set cable of %s up=%v: %w", host.Name, up, err)
	}
	return nil
}

// KillContainerd SIGKILLs the host's embedded containerd (the process
// `containerd --config <DataDir>/containerd/config.toml`), waits until it
// is gone and returns its pid (as the root namespace sees it). Warren's
// supervisor is expected to start a new one.
func (host *Host) KillContainerd() (int, error) {
	pid, err := host.containerdPid()
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("kill containerd %d on %s: %w", pid, host.Name, err)
	}
	if !procGone(pid, 10*time.Second) {
		return pid, fmt.Errorf("containerd %d on %s still alive 10s after SIGKILL", pid, host.Name)
	}
	return pid, nil
}

func (host *Host) containerdPid() (int, error) {
	config := filepath.Join(host.DataDir, "containerd", "config.toml")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != "containerd" {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for i, a := range args {
			if a == "--config="+config || (a == "--config" && i+1 < len(args) && args[i+1] == config) {
				if procZombie(pid) {
					break
				}
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no containerd running with %s on %s", config, host.Name)
}

// PoweredOn reports whether the host has an init, i.e. it was not powered
// off (or was booted again since).
func (host *Host) PoweredOn() bool { return host.unshare != nil }

// PowerOff pulls the host's plug: one SIGKILL to the host's init, after
// which the kernel kills everything else in its pid namespace at once
// (warren, containerd, shims, containers) with no chance to clean up. The
// host's mount namespace dies with its last process, so its tmpfs mounts
// (/run/containerd, /run/warren, the task netns mounts under the data dir)
// are gone as after a reboot; data dirs on disk survive. The network
// namespace survives too, with eth0, Warren's bridge and Warren's nft
// table in it (the drops of a partition as well: they model the network,
// not the host); task veths go, with the task namespaces.
func (host *Host) PowerOff() error {
	if host.unshare == nil || host.InitPid == 0 {
		return fmt.Errorf("power off %s: it is not on", host.Name)
	}
	nodeID := host.NodeID()
	if err := syscall.Kill(host.InitPid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("power off %s: kill init %d: %w", host.Name, host.InitPid, err)
	}
	// unshare reaps the init, and the init's exit completes only once every
	// other process of the namespace is dead.
	if err := waitCmd(host.unshare, 15*time.Second); err != nil {
		return fmt.Errorf("power off %s: %w", host.Name, err)
	}
	host.unshare, host.InitPid = nil, 0
	if host.warren != nil {
		// warren's nsenter, in the root namespace, dies of its child's signal.
		select {
		case <-host.waitErr:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("power off %s: warren's nsenter %d did not exit", host.Name, host.warren.Process.Pid)
		}
		host.warren, host.WarrenPid = nil, 0
	}
	// Killed containers never ran runc delete: their cgroups are left over,
	// empty, as after a real power loss. A cgroup may stay busy for a moment
	// after its last task died.
	deadline := time.Now().Add(5 * time.Second)
	for {
		removeCgroups(nodeID)
		if !cgroupsLeft(nodeID) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("power off %s: task cgroups of node %s not removable", host.Name, nodeID)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Boot starts a fresh init for a powered-off host, in the same network
// namespace, with fresh mount, pid and uts namespaces (and so an empty
// /run/containerd and /run/warren). Warren stays stopped: the test starts it
// with Start, with the same command line, as a systemd unit would on boot.
func (host *Host) Boot() error {
	if host.unshare != nil {
		return fmt.Errorf("boot %s: it is on; PowerOff first", host.Name)
	}
	if err := host.boot(); err != nil {
		if host.unshare != nil {
			// unshare and the half-started init share a process group.
			_ = syscall.Kill(-host.unshare.Process.Pid, syscall.SIGKILL)
			_ = waitCmd(host.unshare, 5*time.Second)
			host.unshare, host.InitPid = nil, 0
		}
		return fmt.Errorf("boot %s: %w", host.Name, err)
	}
	return nil
}

func waitCmd(cmd interface{ Wait() error }, timeout time.Duration) error {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("process did not exit within %s", timeout)
	}
}

// cgroupsLeft reports whether any hierarchy still has the node's task
// cgroup parent (the directories removeCgroups deletes).
func cgroupsLeft(nodeID string) bool {
	if len(nodeID) < 12 {
		return false
	}
	parent := "warren-" + nodeID[:12]
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", parent))
	return len(dirs) > 0
}

// gone polls until pid has exited or is a zombie its parent must reap.
func procGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil || procZombie(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func procZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// NFT runs fn with an nftables connection in the host's network namespace
// (reading Warren's rules from a test, say).
func (host *Host) NFT(fn func(*nftables.Conn) error) error { return host.nft(fn) }
