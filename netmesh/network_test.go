package netmesh

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
)

// testConfig is a config whose state lives in the test's temp dirs.
func testConfig(t *testing.T, subnet string) Config {
	t.Helper()
	return Config{
		BridgeName: "warren0",
		Subnet:     netip.MustParsePrefix(subnet),
		StateDir:   t.TempDir(),
		NetNSDir:   filepath.Join(t.TempDir(), "netns"),
		Log:        zaptest.NewLogger(t),
	}
}

// newNet runs New and registers a Teardown, so each test leaves the
// namespace as clean as it found it, even when it closed or replaced n.
func newNet(t *testing.T, cfg Config) *Network {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		tn, err := New(cfg)
		if err != nil {
			t.Errorf("cleanup: New: %v", err)
			return
		}
		if err := tn.Teardown(context.Background()); err != nil {
			t.Errorf("cleanup: Teardown: %v", err)
		}
		_ = tn.Close()
	})
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func attach(t *testing.T, n *Network, id string) *Sandbox {
	t.Helper()
	sb, err := n.Attach(context.Background(), id)
	if err != nil {
		t.Fatalf("Attach %s: %v", id, err)
	}
	return sb
}

// listenIn listens on addr inside the namespace at nsPath ("" = this one).
func listenIn(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	listen := func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	}
	var err error
	if nsPath == "" {
		err = listen()
	} else {
		err = withNetNS(nsPath, listen)
	}
	if err != nil {
		t.Fatalf("listen on %s in %q: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// exchange dials l from the namespace at nsPath ("" = this one), sends a
// line, expects it echoed, and returns the client address the server saw.
func exchange(t *testing.T, nsPath string, l net.Listener) netip.Addr {
	t.Helper()
	seen := make(chan netip.Addr, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(seen)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = c.Write([]byte(line))
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	}()
	var conn net.Conn
	dial := func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", l.Addr().String(), 5*time.Second)
		return err
	}
	var err error
	if nsPath == "" {
		err = dial()
	} else {
		err = withNetNS(nsPath, dial)
	}
	if err != nil {
		t.Fatalf("dial %s from %q: %v", l.Addr(), nsPath, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || got != "hello\n" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	return <-seen
}

func linkNames(t *testing.T) map[string]netlink.Link {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]netlink.Link{}
	for _, l := range links {
		m[l.Attrs().Name] = l
	}
	return m
}

func tableRules(t *testing.T) (chains map[string]*nftables.Chain, rules map[string][]*nftables.Rule) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var table *nftables.Table
	for _, tb := range tables {
		if tb.Name == TableName {
			table = tb
		}
	}
	if table == nil {
		return nil, nil
	}
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	chains, rules = map[string]*nftables.Chain{}, map[string][]*nftables.Rule{}
	for _, ch := range all {
		if ch.Table.Name != TableName {
			continue
		}
		chains[ch.Name] = ch
		rs, err := c.GetRules(table, ch)
		if err != nil {
			t.Fatal(err)
		}
		rules[ch.Name] = rs
	}
	return chains, rules
}

func TestNewCreatesBridgeAndTable(t *testing.T) {
	needKernel(t)
	tests := []struct {
		subnet  string
		gateway string
		nftRule string
	}{
		{"10.88.1.0/24", "10.88.1.1/24", `ip saddr 10.88.1.0/24 oifname != "warren0" oifname != "warren-wg" masquerade`},
		{"10.88.2.0/23", "10.88.2.1/23", `ip saddr 10.88.2.0/23 oifname != "warren0" oifname != "warren-wg" masquerade`},
		{"10.88.4.128/25", "10.88.4.129/25", `ip saddr 10.88.4.128/25 oifname != "warren0" oifname != "warren-wg" masquerade`},
	}
	for _, tc := range tests {
		t.Run(tc.subnet, func(t *testing.T) {
			cfg := testConfig(t, tc.subnet)
			n := newNet(t, cfg)

			br, err := netlink.LinkByName("warren0")
			if err != nil {
				t.Fatalf("bridge: %v", err)
			}
			if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().MTU != 1500 {
				t.Fatalf("bridge is %s flags=%v mtu=%d, want an up bridge with MTU 1500", br.Type(), br.Attrs().Flags, br.Attrs().MTU)
			}
			as, err := netlink.AddrList(br, netlink.FAMILY_V4)
			if err != nil || len(as) != 1 || as[0].IPNet.String() != tc.gateway {
				t.Fatalf("bridge addresses = %v, %v; want only %s", as, err, tc.gateway)
			}
			if fwd, _ := os.ReadFile(ipForwardPath); strings.TrimSpace(string(fwd)) != "1" {
				t.Fatalf("ip_forward = %q, want 1", fwd)
			}

			check := func() {
				t.Helper()
				chains, rules := tableRules(t)
				post, fwd := chains[chainPostrouting], chains[chainForward]
				if post == nil || fwd == nil {
					t.Fatalf("table inet warren has chains %v, want postrouting and forward", chains)
				}
				if post.Type != nftables.ChainTypeNAT || *post.Hooknum != *nftables.ChainHookPostrouting || *post.Priority != *nftables.ChainPriorityNATSource {
					t.Errorf("postrouting chain = %+v, want type nat hook postrouting priority srcnat", post)
				}
				if fwd.Type != nftables.ChainTypeFilter || *fwd.Hooknum != *nftables.ChainHookForward {
					t.Errorf("forward chain = %+v, want type filter hook forward", fwd)
				}
				if len(rules[chainPostrouting]) != 1 || len(rules[chainForward]) != 6 {
					t.Fatalf("rules: %d in postrouting, %d in forward; want 1 and 6", len(rules[chainPostrouting]), len(rules[chainForward]))
				}
				pr := rules[chainPostrouting][0].Exprs
				if _, ok := pr[len(pr)-1].(*expr.Masq); !ok {
					t.Errorf("postrouting rule ends in %T, want masquerade", pr[len(pr)-1])
				}
				out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput()
				if err != nil {
					t.Fatalf("nft list table: %v\n%s", err, out)
				}
				for _, want := range []string{
					"type nat hook postrouting priority srcnat",
					"type filter hook forward priority filter; policy accept;",
					tc.nftRule,
					`iifname "warren0" accept`,
					`oifname "warren0" drop`,
				} {
					if !strings.Contains(string(out), want) {
						t.Errorf("nft list table inet warren lacks %q:\n%s", want, out)
					}
				}
			}
			check()

			// New again on a live node: nothing duplicated.
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			newNet(t, cfg)
			check()
			as, _ = netlink.AddrList(br, netlink.FAMILY_V4)
			if len(as) != 1 {
				t.Fatalf("bridge has %d addresses after a second New, want 1", len(as))
			}
		})
	}
}

func TestNewLeavesOtherTablesAlone(t *testing.T) {
	needKernel(t)
	if out, err := exec.Command("nft", "add table inet other; add chain inet other c; add rule inet other c accept").CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	defer exec.Command("nft", "delete", "table", "inet", "other").Run()
	n := newNet(t, testConfig(t, "10.88.1.0/24"))
	if err := n.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nft", "list", "table", "inet", "other").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "accept") {
		t.Fatalf("table inet other changed by New/Teardown: %v\n%s", err, out)
	}
}

func TestAttachConnectivity(t *testing.T) {
	needKernel(t)
	cfg := testConfig(t, "10.88.1.0/24")
	cfg.MTU = 1400
	n := newNet(t, cfg)
	a := attach(t, n, "task-a")
	b := attach(t, n, "task-b")

	if a.IP == b.IP || !cfg.Subnet.Contains(a.IP) || !cfg.Subnet.Contains(b.IP) {
		t.Fatalf("IPs %s and %s: want two distinct addresses in %s", a.IP, b.IP, cfg.Subnet)
	}
	if a.IP.String() != "10.88.1.2" || a.Gateway.String() != "10.88.1.1" {
		t.Fatalf("task-a = %s via %s, want 10.88.1.2 via 10.88.1.1", a.IP, a.Gateway)
	}
	br, _ := netlink.LinkByName("warren0")
	// A bridge without a set MAC takes the lowest port MAC, changing under
	// neighbours' ARP caches as tasks come and go; ours must not move.
	if got, want := br.Attrs().HardwareAddr.String(), macFor(a.Gateway).String(); got != want {
		t.Errorf("bridge MAC after attaching ports = %s, want %s", got, want)
	}
	for _, sb := range []*Sandbox{a, b} {
		if ok, err := isNetNSMount(sb.NetNSPath); !ok || err != nil {
			t.Fatalf("%s is not a netns mount: %v", sb.NetNSPath, err)
		}
		host, err := netlink.LinkByName(sb.HostVeth)
		if err != nil {
			t.Fatalf("host veth %s: %v", sb.HostVeth, err)
		}
		if host.Attrs().MasterIndex != br.Attrs().Index || host.Attrs().MTU != 1400 || host.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("veth %s: master=%d mtu=%d flags=%v; want on the bridge, MTU 1400, up", sb.HostVeth, host.Attrs().MasterIndex, host.Attrs().MTU, host.Attrs().Flags)
		}
		if pi, err := netlink.LinkGetProtinfo(host); err != nil || !pi.Hairpin {
			t.Errorf("veth %s hairpin = %v, %v; want on", sb.HostVeth, pi.Hairpin, err)
		}
		nsh, err := handleIn(sb.NetNSPath)
		if err != nil {
			t.Fatal(err)
		}
		eth, err := nsh.LinkByName("eth0")
		if err != nil {
			t.Fatalf("eth0 in %s: %v", sb.NetNSPath, err)
		}
		if eth.Attrs().MTU != 1400 || eth.Attrs().HardwareAddr.String() != sb.MAC || eth.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("eth0: mtu=%d mac=%s flags=%v; want 1400, %s, up", eth.Attrs().MTU, eth.Attrs().HardwareAddr, eth.Attrs().Flags, sb.MAC)
		}
		as, _ := nsh.AddrList(eth, netlink.FAMILY_V4)
		if len(as) != 1 || as[0].IPNet.String() != sb.IP.String()+"/24" {
			t.Errorf("eth0 addresses = %v, want %s/24", as, sb.IP)
		}
		rs, _ := nsh.RouteList(nil, netlink.FAMILY_V4)
		var def bool
		for _, r := range rs {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == sb.Gateway.String() {
				def = true
			}
		}
		if !def {
			t.Errorf("no default route via %s in %s: %v", sb.Gateway, sb.NetNSPath, rs)
		}
		nsh.Close()
	}

	// Task to task across the bridge, and host to task.
	lb := listenIn(t, b.NetNSPath, b.IP.String()+":0")
	if got := exchange(t, a.NetNSPath, lb); got != a.IP {
		t.Errorf("task-b saw the connection from %s, want task-a's %s", got, a.IP)
	}
	la := listenIn(t, a.NetNSPath, a.IP.String()+":0")
	if got := exchange(t, "", la); got != a.Gateway {
		t.Errorf("task-a saw the host's connection from %s, want the gateway %s", got, a.Gateway)
	}

	// Idempotent: same sandbox, one veth.
	again := attach(t, n, "task-a")
	if *again != *a {
		t.Fatalf("second Attach = %+v, want %+v", again, a)
	}
	var count int
	for name, l := range linkNames(t) {
		if l.Attrs().Alias == vethAliasPrefix+"task-a" {
			count++
			if name != a.HostVeth {
				t.Errorf("extra veth %s for task-a", name)
			}
		}
	}
	if count != 1 {
		t.Fatalf("%d veths for task-a after two Attaches, want 1", count)
	}

	// Attach repairs: the host veth deleted by someone else comes back.
	if err := netlink.LinkDel(linkNames(t)[a.HostVeth]); err != nil {
		t.Fatal(err)
	}
	repaired := attach(t, n, "task-a")
	if *repaired != *a {
		t.Fatalf("Attach after veth loss = %+v, want %+v", repaired, a)
	}
	la2 := listenIn(t, a.NetNSPath, a.IP.String()+":0")
	if got := exchange(t, b.NetNSPath, la2); got != b.IP {
		t.Errorf("after repair task-a saw %s, want %s", got, b.IP)
	}
}

// TestMasquerade checks the nat rule on real traffic: a task reaching an
// "upstream" namespace through the node arrives from the node's uplink
// address, not its task address.
func TestMasquerade(t *testing.T) {
	needKernel(t)
	n := newNet(t, testConfig(t, "10.88.1.0/24"))
	sb := attach(t, n, "task-a")

	upstream := filepath.Join(t.TempDir(), "upstream")
	if err := createNetNS(upstream); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNetNS(upstream) })
	ns, err := os.Open(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "uplink0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.Fd()), PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(&netlink.Veth{LinkAttrs: attrs}) })
	up, _ := netlink.LinkByName("uplink0")
	if err := netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.1/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(up); err != nil {
		t.Fatal(err)
	}
	uh, err := handleIn(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer uh.Close()
	peer, _ := uh.LinkByName("eth0")
	if err := uh.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.2/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := uh.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}

	l := listenIn(t, upstream, "198.51.100.2:0")
	if got := exchange(t, sb.NetNSPath, l); got.String() != "198.51.100.1" {
		t.Fatalf("upstream saw the task as %s, want the node's uplink address 198.51.100.1 (masquerade)", got)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	needKernel(t)
	cfg := testConfig(t, "10.88.1.0/24")
	n := newNet(t, cfg)
	a := attach(t, n, "task-a")
	b := attach(t, n, "task-b")
	before, err := n.Sandboxes()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attach(context.Background(), "task-c"); !errors.Is(err, errClosed) {
		t.Fatalf("Attach on a closed network = %v, want errClosed", err)
	}

	n2 := newNet(t, cfg)
	after, err := n2.Sandboxes()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("Sandboxes after restart = %+v, want %+v", after, before)
	}
	if again := attach(t, n2, "task-a"); *again != *a {
		t.Fatalf("Attach after restart = %+v, want %+v", again, a)
	}
	c := attach(t, n2, "task-c")
	if c.IP == a.IP || c.IP == b.IP {
		t.Fatalf("task-c got %s, already leased to task-a %s / task-b %s", c.IP, a.IP, b.IP)
	}
	// The running task kept working through the restart.
	l := listenIn(t, b.NetNSPath, b.IP.String()+":0")
	if got := exchange(t, c.NetNSPath, l); got != c.IP {
		t.Fatalf("task-b saw %s, want task-c %s", got, c.IP)
	}
}

// traces reports which of a task's kernel and db traces exist.
func traces(t *testing.T, n *Network, id string) (veth, mount, file, lease bool) {
	t.Helper()
	_, veth = linkNames(t)[hostVethName(id)]
	path := n.netnsPath(id)
	mps, err := mountPoints(path)
	if err != nil {
		t.Fatal(err)
	}
	mount = len(mps) > 0
	_, err = os.Stat(path)
	file = err == nil
	_, lease, err = n.leases.get(id)
	if err != nil {
		t.Fatal(err)
	}
	return veth, mount, file, lease
}

func TestDetach(t *testing.T) {
	needKernel(t)
	n := newNet(t, testConfig(t, "10.88.1.0/24"))
	attach(t, n, "task-a")
	if veth, mount, file, lease := traces(t, n, "task-a"); !veth || !mount || !file || !lease {
		t.Fatalf("after Attach: veth=%v mount=%v file=%v lease=%v, want all", veth, mount, file, lease)
	}
	for i := range 2 { // the second Detach is a no-op
		if err := n.Detach(context.Background(), "task-a"); err != nil {
			t.Fatalf("Detach #%d: %v", i+1, err)
		}
		if veth, mount, file, lease := traces(t, n, "task-a"); veth || mount || file || lease {
			t.Fatalf("after Detach #%d: veth=%v mount=%v file=%v lease=%v, want none", i+1, veth, mount, file, lease)
		}
	}
	if sbs, _ := n.Sandboxes(); len(sbs) != 0 {
		t.Fatalf("Sandboxes after Detach = %+v", sbs)
	}
	// The address is free again.
	if b := attach(t, n, "task-b"); b.IP.String() != "10.88.1.2" {
		t.Fatalf("task-b got %s, want the released 10.88.1.2", b.IP)
	}
}

func TestGC(t *testing.T) {
	needKernel(t)
	cfg := testConfig(t, "10.88.1.0/24")
	n := newNet(t, cfg)
	keep := attach(t, n, "keep")
	for _, id := range []string{"gone-1", "gone-2"} {
		attach(t, n, id)
	}
	// A namespace without a lease (crash between mkdir and lease) ...
	if err := createNetNS(n.netnsPath("ghost")); err != nil {
		t.Fatal(err)
	}
	// ... and a labelled veth on the bridge with neither.
	br, _ := netlink.LinkByName("warren0")
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostVethName("phantom")
	attrs.MasterIndex = br.Attrs().Index
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "phantom-peer", PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetAlias(&netlink.Veth{LinkAttrs: attrs}, vethAliasPrefix+"phantom"); err != nil {
		t.Fatal(err)
	}
	// ... and an unlabelled one named like ours.
	orphan := netlink.NewLinkAttrs()
	orphan.Name = "wv0000000000"
	orphan.MasterIndex = br.Attrs().Index
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: orphan, PeerName: "orphan-peer", PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}

	if err := n.GC(context.Background(), map[string]bool{"keep": true}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	for _, id := range []string{"gone-1", "gone-2", "ghost", "phantom"} {
		if veth, mount, file, lease := traces(t, n, id); veth || mount || file || lease {
			t.Errorf("%s after GC: veth=%v mount=%v file=%v lease=%v, want none", id, veth, mount, file, lease)
		}
	}
	if _, ok := linkNames(t)["wv0000000000"]; ok {
		t.Error("orphan veth wv0000000000 survived GC")
	}
	if veth, mount, file, lease := traces(t, n, "keep"); !veth || !mount || !file || !lease {
		t.Fatalf("kept task after GC: veth=%v mount=%v file=%v lease=%v, want all", veth, mount, file, lease)
	}
	sbs, _ := n.Sandboxes()
	if len(sbs) != 1 || sbs[0] != *keep {
		t.Fatalf("Sandboxes after GC = %+v, want only %+v", sbs, keep)
	}
	l := listenIn(t, keep.NetNSPath, keep.IP.String()+":0")
	if got := exchange(t, "", l); got != keep.Gateway {
		t.Fatalf("kept task unreachable after GC (saw %s)", got)
	}
}

func TestExhaustion(t *testing.T) {
	needKernel(t)
	n := newNet(t, testConfig(t, "10.88.1.0/29"))
	for i := range 5 {
		sb := attach(t, n, "t"+string(rune('0'+i)))
		if want := netip.AddrFrom4([4]byte{10, 88, 1, byte(2 + i)}); sb.IP != want {
			t.Fatalf("task %d got %s, want %s", i, sb.IP, want)
		}
	}
	_, err := n.Attach(context.Background(), "t5")
	if !errors.Is(err, ErrSubnetExhausted) || !strings.Contains(err.Error(), "exhausted") || !strings.Contains(err.Error(), "5 leases") {
		t.Fatalf("6th Attach in a /29 = %v, want a subnet exhausted error counting 5 leases", err)
	}
	t.Logf("exhaustion error: %v", err)
	if _, mount, file, lease := traces(t, n, "t5"); mount || file || lease {
		t.Fatalf("failed Attach left mount=%v file=%v lease=%v", mount, file, lease)
	}
	if err := n.Detach(context.Background(), "t2"); err != nil {
		t.Fatal(err)
	}
	if sb := attach(t, n, "t5"); sb.IP.String() != "10.88.1.4" {
		t.Fatalf("after freeing 10.88.1.4, t5 got %s", sb.IP)
	}
}

func TestOverlap(t *testing.T) {
	needKernel(t)
	// No dummy driver on the target kernel: a veth is the stand-in for
	// "some other interface of the host".
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ovl0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "ovl1", PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(&netlink.Veth{LinkAttrs: attrs})
	ovl, _ := netlink.LinkByName("ovl0")
	if err := netlink.AddrAdd(ovl, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.88.5.1/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(ovl); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: ovl.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("10.88.6.0/24"))}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		subnet string
		want   []string // substrings of the error; nil = no error
	}{
		{"10.88.5.0/24", []string{"ovl0", "10.88.5.1/24", "pick another subnet"}},
		{"10.88.5.128/25", []string{"ovl0", "10.88.5.1/24"}},
		{"10.88.6.128/25", []string{"ovl0", "route 10.88.6.0/24"}},
		{"10.88.0.0/16", []string{"ovl0"}},
		{"10.88.7.0/24", nil},
	}
	for _, tc := range tests {
		t.Run(tc.subnet, func(t *testing.T) {
			cfg := testConfig(t, tc.subnet)
			if tc.want == nil {
				newNet(t, cfg)
				return
			}
			n, err := New(cfg)
			if err == nil {
				n.Teardown(context.Background())
				n.Close()
				t.Fatalf("New(%s) succeeded, want an overlap error", tc.subnet)
			}
			if !errors.Is(err, ErrSubnetOverlap) {
				t.Errorf("error %v is not ErrSubnetOverlap", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, ok := linkNames(t)["warren0"]; ok {
				t.Error("refused New still created the bridge")
			}
			t.Logf("overlap error: %v", err)
		})
	}
}

func TestTeardown(t *testing.T) {
	needKernel(t)
	cfg := testConfig(t, "10.88.1.0/24")
	n := newNet(t, cfg)
	attach(t, n, "task-a")
	attach(t, n, "task-b")
	if err := n.Teardown(context.Background()); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	for name, l := range linkNames(t) {
		if name == "warren0" || strings.HasPrefix(name, vethPrefix) || l.Type() == "bridge" {
			t.Errorf("link %s (%s) survived Teardown", name, l.Type())
		}
	}
	if chains, _ := tableRules(t); chains != nil {
		t.Errorf("table inet warren survived Teardown: %v", chains)
	}
	mps, err := mountPoints(cfg.NetNSDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mps) != 0 {
		t.Errorf("mounts under %s survived Teardown: %v", cfg.NetNSDir, mps)
	}
	// Only our own: other namespace mounts (another test's hosts running
	// at the same time) are copied into this mount namespace too.
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, "nsfs") && strings.Contains(l, cfg.NetNSDir) {
			t.Errorf("nsfs mount survived Teardown: %s", l)
		}
	}
	if _, err := os.Stat(cfg.NetNSDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns dir %s survived Teardown: %v", cfg.NetNSDir, err)
	}
	if sbs, _ := n.Sandboxes(); len(sbs) != 0 {
		t.Errorf("leases survived Teardown: %+v", sbs)
	}
	// A second Teardown has nothing left to do.
	if err := n.Teardown(context.Background()); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
}

// TestNetNSDirMount checks the propagation setup: NetNSDir becomes a shared
// tmpfs, and New on a restart does not stack another one.
func TestNetNSDirMount(t *testing.T) {
	needKernel(t)
	cfg := testConfig(t, "10.88.1.0/24")
	n := newNet(t, cfg)
	n.Close()
	newNet(t, cfg)
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found int
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == cfg.NetNSDir {
			found++
			if !strings.Contains(line, "shared:") || !strings.Contains(line, " - tmpfs ") {
				t.Errorf("netns dir mount is not a shared tmpfs: %s", line)
			}
		}
	}
	if found != 1 {
		t.Fatalf("netns dir %s is mounted %d times, want 1", cfg.NetNSDir, found)
	}
}

func TestConcurrentAttach(t *testing.T) {
	needKernel(t)
	n := newNet(t, testConfig(t, "10.88.1.0/24"))
	const tasks = 8
	type result struct {
		sb  *Sandbox
		err error
	}
	results := make(chan result, tasks)
	for i := range tasks {
		go func() {
			sb, err := n.Attach(context.Background(), "c"+string(rune('a'+i)))
			results <- result{sb, err}
		}()
	}
	seen := map[netip.Addr]string{}
	for range tasks {
		r := <-results
		if r.err != nil {
			t.Fatalf("Attach: %v", r.err)
		}
		if other, dup := seen[r.sb.IP]; dup {
			t.Fatalf("%s and %s both got %s", other, r.sb.TaskID, r.sb.IP)
		}
		seen[r.sb.IP] = r.sb.TaskID
	}
}
