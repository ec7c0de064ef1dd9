package netmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestVIPPlanWeights(t *testing.T) {
	ep := func(ip string, port uint16, w uint32) Endpoint {
		return Endpoint{IP: netip.MustParseAddr(ip), Port: port, Weight: w}
	}
	tests := []struct {
		name      string
		endpoints []Endpoint
		total     uint32
		slots     string
	}{
		{"equal weights reduce to 1 each", []Endpoint{ep("10.88.1.3", 80, 5), ep("10.88.1.2", 80, 5)}, 2,
			"[0,1)->10.88.1.2:80 [1,2)->10.88.1.3:80"},
		{"9 to 1", []Endpoint{ep("10.88.1.2", 80, 90), ep("10.88.1.3", 80, 10)}, 10,
			"[0,9)->10.88.1.2:80 [9,10)->10.88.1.3:80"},
		{"canary percent", []Endpoint{ep("10.88.1.2", 80, 95), ep("10.88.1.3", 80, 5)}, 20,
			"[0,19)->10.88.1.2:80 [19,20)->10.88.1.3:80"},
		{"weight 0 drains", []Endpoint{ep("10.88.1.2", 80, 0), ep("10.88.1.3", 80, 7)}, 1,
			"[0,1)->10.88.1.3:80"},
		{"duplicates add up", []Endpoint{ep("10.88.1.2", 80, 1), ep("10.88.1.2", 80, 1), ep("10.88.1.3", 80, 2)}, 2,
			"[0,1)->10.88.1.2:80 [1,2)->10.88.1.3:80"},
		{"same IP, two ports", []Endpoint{ep("10.88.1.2", 81, 1), ep("10.88.1.2", 80, 2)}, 3,
			"[0,2)->10.88.1.2:80 [2,3)->10.88.1.2:81"},
		{"no endpoints", nil, 0, ""},
		{"all drained", []Endpoint{ep("10.88.1.2", 80, 0)}, 0, ""},
		{"huge weights scale to maxSlots", []Endpoint{ep("10.88.1.2", 80, 1<<31), ep("10.88.1.3", 80, 1<<31-1)}, 1000,
			"[0,500)->10.88.1.2:80 [500,1000)->10.88.1.3:80"},
		{"tiny share keeps one slot", []Endpoint{ep("10.88.1.2", 80, 1), ep("10.88.1.3", 80, 1), ep("10.88.1.4", 80, 10000)}, 1002,
			"[0,1)->10.88.1.2:80 [1,2)->10.88.1.3:80 [2,1002)->10.88.1.4:80"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planPort("web", VIPPort{Protocol: "TCP", Port: 80, Endpoints: tc.endpoints})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range p.slots {
				got = append(got, fmt.Sprintf("[%d,%d)->%s", s.from, s.to, s.ep))
			}
			if p.total != tc.total || strings.Join(got, " ") != tc.slots {
				t.Fatalf("total %d slots %q, want %d %q", p.total, strings.Join(got, " "), tc.total, tc.slots)
			}
			if p.proto != "tcp" || p.mapBase != "svc-web-tcp-80" || !strings.HasPrefix(p.mapName, "svc-web-tcp-80-") {
				t.Fatalf("proto %q map %q, want tcp svc-web-tcp-80-<hash>", p.proto, p.mapName)
			}
			// The map is named by its content: same endpoints, same map.
			again, _ := planPort("web", VIPPort{Protocol: "tcp", Port: 80, Endpoints: slices.Clone(tc.endpoints)})
			if again.mapName != p.mapName {
				t.Fatalf("same endpoints named %s and %s", p.mapName, again.mapName)
			}
		})
	}
}

func TestVIPMapNames(t *testing.T) {
	eps := func(ws ...uint32) []Endpoint {
		var out []Endpoint
		for i, w := range ws {
			out = append(out, Endpoint{IP: netip.AddrFrom4([4]byte{10, 88, 1, byte(2 + i)}), Port: 8080, Weight: w})
		}
		return out
	}
	names := map[string]string{}
	for _, tc := range []struct {
		name string
		eps  []Endpoint
	}{
		{"a", eps(1)}, {"a b", eps(1, 1)}, {"a 3 b", eps(3, 1)}, {"b only", eps(0, 1)},
	} {
		p, err := planPort("web", VIPPort{Protocol: "tcp", Port: 80, Endpoints: tc.eps})
		if err != nil {
			t.Fatal(err)
		}
		if other, ok := names[p.mapName]; ok {
			t.Errorf("%s and %s share map name %s", tc.name, other, p.mapName)
		}
		names[p.mapName] = tc.name
		if mapBaseOf(p.mapName) != "svc-web-tcp-80" {
			t.Errorf("mapBaseOf(%s) = %s", p.mapName, mapBaseOf(p.mapName))
		}
	}
	// 1:1 and 2:2 are the same split, so the same map.
	p1, _ := planPort("web", VIPPort{Protocol: "tcp", Port: 80, Endpoints: eps(1, 1)})
	p2, _ := planPort("web", VIPPort{Protocol: "tcp", Port: 80, Endpoints: eps(2, 2)})
	if p1.mapName != p2.mapName {
		t.Errorf("1:1 and 2:2 got maps %s and %s", p1.mapName, p2.mapName)
	}
	if !udpMapPattern.MatchString("svc-dns-udp-53-0123456789abcdef") || udpMapPattern.MatchString("svc-x-udp-y-tcp-53-0123456789abcdef") {
		t.Errorf("udpMapPattern misclassifies map names")
	}
}

func TestVIPPlanRejects(t *testing.T) {
	subnet := netip.MustParsePrefix("10.88.1.0/24")
	vip := netip.MustParseAddr("10.89.0.10")
	ep := []Endpoint{{IP: netip.MustParseAddr("10.88.1.2"), Port: 8080, Weight: 1}}
	port := func(proto string, p, pub uint16) VIPPort {
		return VIPPort{Protocol: proto, Port: p, PublishedPort: pub, Endpoints: ep}
	}
	tests := []struct {
		name string
		svcs []VIPService
		want string
	}{
		{"bad name", []VIPService{{Name: "-x", VIP: vip}}, "invalid service name"},
		{"duplicate name", []VIPService{{Name: "a", VIP: vip}, {Name: "a", VIP: vip.Next()}}, "listed twice"},
		{"IPv6 VIP", []VIPService{{Name: "a", VIP: netip.MustParseAddr("fd00::1")}}, "not an IPv4"},
		{"no VIP", []VIPService{{Name: "a"}}, "not an IPv4"},
		{"VIP in task subnet", []VIPService{{Name: "a", VIP: netip.MustParseAddr("10.88.1.9")}}, "task subnet"},
		{"shared VIP", []VIPService{{Name: "a", VIP: vip}, {Name: "b", VIP: vip}}, "share VIP"},
		{"bad protocol", []VIPService{{Name: "a", VIP: vip, Ports: []VIPPort{port("sctp", 80, 0)}}}, "not tcp or udp"},
		{"port 0", []VIPService{{Name: "a", VIP: vip, Ports: []VIPPort{port("tcp", 0, 0)}}}, "port 0"},
		{"duplicate port", []VIPService{{Name: "a", VIP: vip, Ports: []VIPPort{port("tcp", 80, 0), port("tcp", 80, 0)}}}, "twice"},
		{"published twice", []VIPService{
			{Name: "a", VIP: vip, Ports: []VIPPort{port("tcp", 80, 8080)}},
			{Name: "b", VIP: vip.Next(), Ports: []VIPPort{port("tcp", 80, 8080)}},
		}, "both publish"},
		{"bad endpoint", []VIPService{{Name: "a", VIP: vip, Ports: []VIPPort{{Protocol: "tcp", Port: 80, Endpoints: []Endpoint{{IP: netip.MustParseAddr("10.88.1.2"), Weight: 1}}}}}}, "non-zero port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planVIPs(tc.svcs, subnet)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("planVIPs = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The same port number on tcp and udp, and publishing udp/8080 next to
	// tcp/8080, are fine.
	ok := []VIPService{
		{Name: "a", VIP: vip, Ports: []VIPPort{port("tcp", 53, 8080), port("udp", 53, 8080)}},
	}
	p, err := planVIPs(ok, subnet)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.published) != 2 || len(p.hairpin) != 1 || p.hairpin[0] != ep[0].IP {
		t.Fatalf("published %d hairpin %v, want 2 and [10.88.1.2]", len(p.published), p.hairpin)
	}
}

// vipHarness is a node with two backend tasks serving HTTP on :8080 and a
// client task.
type vipHarness struct {
	n            *Network
	a, b, client *Sandbox
}

func newVIPHarness(t *testing.T) *vipHarness {
	t.Helper()
	needKernel(t)
	// Every harness reuses the same addresses: start without the
	// previous test's connections in conntrack, whose TIME_WAIT entries a
	// new connection from a reused port would run into.
	if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		t.Fatalf("flush conntrack: %v", err)
	}
	n := newNet(t, testConfig(t, "10.88.1.0/24"))
	h := &vipHarness{n: n, a: attach(t, n, "task-a"), b: attach(t, n, "task-b"), client: attach(t, n, "task-c")}
	serveHTTP(t, h.a.NetNSPath, "0.0.0.0:8080", h.a.IP.String())
	serveHTTP(t, h.b.NetNSPath, "0.0.0.0:8080", h.b.IP.String())
	return h
}

// serveHTTP answers every request with "<name> <client address>".
func serveHTTP(t *testing.T, nsPath, addr, name string) {
	t.Helper()
	l := listenIn(t, nsPath, addr)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintf(w, "%s %s", name, host)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// dialIn dials from the namespace at nsPath ("" = this one).
func dialIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var c net.Conn
	dial := func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
		return err
	}
	if nsPath == "" {
		return c, dial()
	}
	return c, withNetNS(nsPath, dial)
}

// clientIn is an HTTP client in the namespace at nsPath with a new
// connection per request, so every request is a fresh load-balancing pick.
func clientIn(nsPath string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialIn(ctx, nsPath, network, addr)
			},
		},
	}
}

// get returns which backend answered and the client address it saw.
func get(c *http.Client, url string) (backend, client string, err error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	backend, client, _ = strings.Cut(string(body), " ")
	return backend, client, nil
}

// hits makes n requests and counts answers by backend, failing on any
// error or on a client address other than wantClient (when set).
func hits(t *testing.T, c *http.Client, url string, n int, wantClient string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		backend, client, err := get(c, url)
		if err != nil {
			t.Fatalf("GET %s #%d: %v", url, i, err)
		}
		if wantClient != "" && client != wantClient {
			t.Fatalf("GET %s: backend %s saw client %s, want %s", url, backend, client, wantClient)
		}
		out[backend]++
	}
	return out
}

func webService(port VIPPort) []VIPService {
	return []VIPService{{Name: "web", VIP: netip.MustParseAddr("10.89.0.10"), Ports: []VIPPort{port}}}
}

func endpoints(weights map[*Sandbox]uint32) []Endpoint {
	var out []Endpoint
	for sb, w := range weights {
		out = append(out, Endpoint{IP: sb.IP, Port: 8080, Weight: w})
	}
	return out
}

func nftListWarren(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table inet %s: %v\n%s", TableName, err, out)
	}
	return string(out)
}

func TestVIPBalance(t *testing.T) {
	h := newVIPHarness(t)
	a, b := h.a.IP.String(), h.b.IP.String()
	c := clientIn(h.client.NetNSPath)

	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1, h.b: 1})})); err != nil {
		t.Fatal(err)
	}
	// Same-node clients keep their address (bridge netfilter undoes the
	// DNAT on the bridged reply), so backends see task-c, not the gateway.
	got := hits(t, c, "http://10.89.0.10/", 200, h.client.IP.String())
	t.Logf("1:1 split over 200 requests: %v", got)
	if got[a] < 60 || got[b] < 60 {
		t.Errorf("1:1 weights gave %v; want both backends near 100", got)
	}

	listing := nftListWarren(t)
	for _, want := range []string{
		"chain prerouting", "type nat hook prerouting priority dstnat",
		"chain output", "type nat hook output priority -100",
		"chain svc-web", "chain vip-postrouting", "map svc-web-tcp-80-", "set vip-hairpin-",
		"ip daddr vmap @vip-dispatch-", "10.89.0.10 : jump svc-web",
		"dnat ip to numgen random mod 2 map @svc-web-tcp-80-",
		"10.88.1.2 . 8080", "10.88.1.3 . 8080",
		// nat.go's chains are still there.
		"chain postrouting", "chain forward",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("nft list table inet warren lacks %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("nft list table inet warren:\n%s", listing)
	}

	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 9, h.b: 1})})); err != nil {
		t.Fatal(err)
	}
	got = hits(t, c, "http://10.89.0.10/", 200, "")
	t.Logf("9:1 split over 200 requests: %v", got)
	if got[a] < 150 || got[b] == 0 || got[b] > 50 {
		t.Errorf("9:1 weights gave %v; want about 180:20", got)
	}

	// Weight 0 drains b.
	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1, h.b: 0})})); err != nil {
		t.Fatal(err)
	}
	if got = hits(t, c, "http://10.89.0.10/", 30, ""); got[a] != 30 {
		t.Errorf("with b drained got %v, want all 30 on a", got)
	}

	// A node restart (New again) rewrites nat.go's chains but keeps the
	// services: tasks keep their VIPs while the agent comes back.
	cfg := h.n.cfg
	if err := h.n.Close(); err != nil {
		t.Fatal(err)
	}
	n2 := newNet(t, cfg)
	if got = hits(t, c, "http://10.89.0.10/", 10, ""); got[a] != 10 {
		t.Errorf("after New got %v, want all 10 on a", got)
	}
	// Teardown removes the VIP chains with the table.
	if err := n2.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput(); err == nil {
		t.Fatalf("table inet warren still exists after Teardown:\n%s", out)
	}
}

func TestVIPSwapLosesNoRequest(t *testing.T) {
	h := newVIPHarness(t)
	set := func(w map[*Sandbox]uint32) {
		t.Helper()
		if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, Endpoints: endpoints(w)})); err != nil {
			t.Fatal(err)
		}
	}
	set(map[*Sandbox]uint32{h.a: 1, h.b: 1})

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clientIn(h.client.NetNSPath)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := get(c, "http://10.89.0.10/"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	// Remove and restore endpoints while the clients loop; every swap
	// replaces the map in one batch, so there is never an empty moment.
	states := []map[*Sandbox]uint32{{h.a: 1}, {h.a: 1, h.b: 1}, {h.b: 1}, {h.a: 3, h.b: 1}}
	for i := range 40 {
		set(states[i%len(states)])
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during 40 endpoint changes, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed while endpoints changed; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 40 {
		t.Fatalf("only %d requests ran; the swap was not exercised", ok.Load())
	}
}

func TestVIPHairpin(t *testing.T) {
	h := newVIPHarness(t)
	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1, h.b: 1})})); err != nil {
		t.Fatal(err)
	}
	// task-a is a client of its own service: half its requests land on
	// itself and only work through the hairpin masquerade.
	c := clientIn(h.a.NetNSPath)
	self, other := 0, 0
	for i := 0; i < 40; i++ {
		backend, client, err := get(c, "http://10.89.0.10/")
		if err != nil {
			t.Fatalf("task-a GET its own VIP #%d: %v", i, err)
		}
		switch backend {
		case h.a.IP.String():
			self++
			if client != h.a.Gateway.String() {
				t.Errorf("hairpin request arrived from %s, want the gateway %s (masquerade)", client, h.a.Gateway)
			}
		default:
			other++
			if client != h.a.IP.String() {
				t.Errorf("request to task-b arrived from %s, want task-a's own %s", client, h.a.IP)
			}
		}
	}
	if self == 0 || other == 0 {
		t.Fatalf("task-a reached itself %d times and task-b %d times; want both", self, other)
	}
}

// TestVIPNoBridgeNetfilter: without br_netfilter the reply from a local
// backend to a local client is bridged past conntrack, so Warren
// masquerades all task-to-local-task VIP traffic instead.
func TestVIPNoBridgeNetfilter(t *testing.T) {
	h := newVIPHarness(t)
	if !brNetfilterOn() {
		t.Skip("bridge netfilter is off already")
	}
	if err := os.WriteFile(brNetfilterSysctl, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(brNetfilterSysctl, []byte("1"), 0o644) })
	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1, h.b: 1})})); err != nil {
		t.Fatal(err)
	}
	got := hits(t, clientIn(h.client.NetNSPath), "http://10.89.0.10/", 40, h.client.Gateway.String())
	if len(got) != 2 {
		t.Fatalf("got %v, want both backends", got)
	}
}

func TestVIPRejectsWithoutEndpoints(t *testing.T) {
	h := newVIPHarness(t)
	svcs := []VIPService{{Name: "web", VIP: netip.MustParseAddr("10.89.0.10"), Ports: []VIPPort{
		{Protocol: "tcp", Port: 80},
		{Protocol: "udp", Port: 53},
		{Protocol: "tcp", Port: 443, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1})},
	}}}
	if err := h.n.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.89.0.10:80" /* no endpoint */, "10.89.0.10:81" /* no such port */} {
		start := time.Now()
		c, err := dialIn(context.Background(), h.client.NetNSPath, "tcp4", addr)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded, want connection refused", addr)
		}
		// A blackholed SYN would hang until the dialer's 3s timeout; allow
		// one SYN retransmission (1s) for a lost first packet.
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
			t.Fatalf("dial %s: %v after %s; want connection refused at once", addr, err, time.Since(start))
		}
	}
	// UDP: the ICMP port unreachable shows up as ECONNREFUSED on a
	// connected socket. The kernel rate-limits ICMP errors per peer, and
	// the ICMP redirects it sends a task whose VIP traffic it routes back
	// onto the bridge count against the same budget, so the client
	// retries as a resolver would.
	c, err := dialIn(context.Background(), h.client.NetNSPath, "udp4", "10.89.0.10:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var readErr error
	for range 10 {
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, readErr = c.Read(make([]byte, 16)); errors.Is(readErr, syscall.ECONNREFUSED) {
			break
		}
	}
	if !errors.Is(readErr, syscall.ECONNREFUSED) {
		t.Fatalf("UDP to a port without endpoints: read %v, want connection refused", readErr)
	}
	if backend, _, err := get(clientIn(h.client.NetNSPath), "http://10.89.0.10:443/"); err != nil || backend != h.a.IP.String() {
		t.Fatalf("port with an endpoint: %q, %v", backend, err)
	}
}

// peerNS makes a namespace linked to this one by a veth: hostIf with
// hostAddr here, eth0 with peerAddr there. It stands for another machine.
func peerNS(t *testing.T, name, hostIf string, hostAddr, peerAddr netip.Prefix) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := createNetNS(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNetNS(path) })
	ns, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostIf
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.Fd()), PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(&netlink.Veth{LinkAttrs: attrs}) })
	l, err := netlink.LinkByName(hostIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(hostAddr)}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	nh, err := handleIn(path)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	peer, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(peerAddr)}); err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	lo, _ := nh.LinkByName("lo")
	_ = nh.LinkSetUp(lo)
	return path
}

func TestVIPPublishedPort(t *testing.T) {
	h := newVIPHarness(t)
	loopbackUp(t) // the node's own loopback clients
	a, b := h.a.IP.String(), h.b.IP.String()
	// An outside client, and a "remote node" holding a third backend that
	// has no route to the client, only to this node's task subnet (as a
	// WireGuard peer whose allowed IPs are task subnets): only the
	// routing-mesh source NAT to the gateway lets its replies come back.
	outside := peerNS(t, "outside", "uplink0", netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24"))
	remote := peerNS(t, "remote", DefaultMeshInterface, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	rh, err := handleIn(remote)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	if err := rh.RouteAdd(&netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.88.1.0/24")), Gw: net.ParseIP("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, remote, "192.0.2.2:8080", "remote")

	eps := endpoints(map[*Sandbox]uint32{h.a: 1, h.b: 1})
	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, PublishedPort: 8080, Endpoints: eps})); err != nil {
		t.Fatal(err)
	}
	// From the node itself (output chain), on the gateway, the uplink
	// address and loopback.
	host := clientIn("")
	for _, url := range []string{"http://10.88.1.1:8080/", "http://198.51.100.1:8080/", "http://127.0.0.1:8080/"} {
		got := hits(t, host, url, 60, "")
		t.Logf("%s from the node: %v", url, got)
		if got[a] < 10 || got[b] < 10 {
			t.Errorf("%s from the node gave %v; want both backends", url, got)
		}
	}
	// From outside (prerouting): local backends see the real client.
	got := hits(t, clientIn(outside), "http://198.51.100.1:8080/", 60, "198.51.100.2")
	if got[a] < 10 || got[b] < 10 {
		t.Errorf("from outside gave %v; want both backends", got)
	}

	// Now with the remote backend too.
	eps = append(eps, Endpoint{IP: netip.MustParseAddr("192.0.2.2"), Port: 8080, Weight: 1})
	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, PublishedPort: 8080, Endpoints: eps})); err != nil {
		t.Fatal(err)
	}
	oc := clientIn(outside)
	seen := map[string]int{}
	for i := 0; i < 60; i++ {
		backend, client, err := get(oc, "http://198.51.100.1:8080/")
		if err != nil {
			t.Fatalf("outside GET #%d: %v", i, err)
		}
		seen[backend]++
		want := "198.51.100.2" // local backend: client address kept
		if backend == "remote" {
			want = h.a.Gateway.String() // other node: from this node's gateway
		}
		if client != want {
			t.Errorf("backend %s saw client %s, want %s", backend, client, want)
		}
	}
	t.Logf("from outside with a remote backend: %v", seen)
	if seen["remote"] == 0 || seen[a]+seen[b] == 0 {
		t.Errorf("got %v, want local and remote backends", seen)
	}
	// The node itself calling its published port on its uplink address
	// (source: that address, outside the task subnet) reaches the remote
	// backend too.
	for _, url := range []string{"http://198.51.100.1:8080/", "http://127.0.0.1:8080/"} {
		got = hits(t, host, url, 60, "")
		t.Logf("%s from the node with a remote backend: %v", url, got)
		if got["remote"] == 0 || got[a]+got[b] == 0 {
			t.Errorf("%s from the node gave %v, want local and remote backends", url, got)
		}
	}
	list := nftListWarren(t)
	if !strings.Contains(list, `fib daddr type local jump published`) {
		t.Errorf("no published-port jump in table inet warren")
	}
	// route_localnet is on for the bridge, so loopback addresses must be
	// refused from anywhere but lo.
	if !strings.Contains(list, `ip daddr 127.0.0.0/8 iifname != "lo" drop`) {
		t.Errorf("no loopback guard in table inet warren:\n%s", list)
	}
}

func TestVIPFromNodeAndRemoval(t *testing.T) {
	h := newVIPHarness(t)
	if out, err := exec.Command("nft", "add table inet other; add chain inet other c { type nat hook prerouting priority dstnat; }; add rule inet other c ip daddr 192.0.2.99 accept").CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	defer exec.Command("nft", "delete", "table", "inet", "other").Run()
	otherBefore, _ := exec.Command("nft", "list", "table", "inet", "other").CombinedOutput()

	svcs := []VIPService{
		{Name: "web", VIP: netip.MustParseAddr("10.89.0.10"), Ports: []VIPPort{{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1})}}},
		{Name: "api", VIP: netip.MustParseAddr("10.89.0.11"), Ports: []VIPPort{{Protocol: "tcp", Port: 80, Endpoints: endpoints(map[*Sandbox]uint32{h.b: 1})}}},
	}
	if err := h.n.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	if err := h.n.SetServices(svcs); err != nil { // idempotent
		t.Fatal(err)
	}
	// A process on the node reaches VIPs through the output chain. The
	// node needs a route towards the VIP range, as it has with a default
	// route; this namespace has none, so give it one.
	br, _ := netlink.LinkByName("warren0")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("10.89.0.0/16"))}); err != nil {
		t.Fatal(err)
	}
	host := clientIn("")
	for vip, want := range map[string]string{"10.89.0.10": h.a.IP.String(), "10.89.0.11": h.b.IP.String()} {
		if got := hits(t, host, "http://"+vip+"/", 5, h.a.Gateway.String()); got[want] != 5 {
			t.Errorf("node to %s: %v, want all on %s", vip, got, want)
		}
	}

	// Drop one service: its chain and map go, the other keeps working.
	if err := h.n.SetServices(svcs[1:]); err != nil {
		t.Fatal(err)
	}
	listing := nftListWarren(t)
	if strings.Contains(listing, "svc-web") || !strings.Contains(listing, "svc-api") {
		t.Fatalf("after removing web:\n%s", listing)
	}
	if got := hits(t, clientIn(h.client.NetNSPath), "http://10.89.0.11/", 5, ""); got[h.b.IP.String()] != 5 {
		t.Errorf("api after removing web: %v", got)
	}

	if err := h.n.SetServices(nil); err != nil {
		t.Fatal(err)
	}
	listing = nftListWarren(t)
	for _, gone := range []string{"svc-", "chain prerouting", "chain output", "chain vip-postrouting", "chain published"} {
		if strings.Contains(listing, gone) {
			t.Errorf("after SetServices(nil) the table still has %q:\n%s", gone, listing)
		}
	}
	for _, kept := range []string{"chain postrouting", "chain forward", "masquerade"} {
		if !strings.Contains(listing, kept) {
			t.Errorf("SetServices(nil) removed nat.go's %q:\n%s", kept, listing)
		}
	}
	if err := h.n.SetServices(nil); err != nil { // nothing to remove
		t.Fatal(err)
	}
	if otherAfter, _ := exec.Command("nft", "list", "table", "inet", "other").CombinedOutput(); string(otherAfter) != string(otherBefore) {
		t.Fatalf("table inet other changed:\n%s\nwas:\n%s", otherAfter, otherBefore)
	}
}

// TestVIPUDPConntrack: a UDP client that keeps its socket is moved off a
// removed endpoint instead of staying pinned to it by conntrack.
func TestVIPUDPConntrack(t *testing.T) {
	h := newVIPHarness(t)
	for _, sb := range []*Sandbox{h.a, h.b} {
		var pc net.PacketConn
		if err := withNetNS(sb.NetNSPath, func() error {
			var err error
			pc, err = net.ListenPacket("udp4", "0.0.0.0:5353")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		name := sb.IP.String()
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(name), from)
			}
		}()
	}
	dns := func(eps ...*Sandbox) []VIPService {
		var out []Endpoint
		for _, sb := range eps {
			out = append(out, Endpoint{IP: sb.IP, Port: 5353, Weight: 1})
		}
		return []VIPService{{Name: "dns", VIP: netip.MustParseAddr("10.89.0.53"), Ports: []VIPPort{{Protocol: "udp", Port: 53, Endpoints: out}}}}
	}
	if err := h.n.SetServices(dns(h.a)); err != nil {
		t.Fatal(err)
	}
	c, err := dialIn(context.Background(), h.client.NetNSPath, "udp4", "10.89.0.53:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func() string {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("UDP read: %v", err)
		}
		return string(buf[:n])
	}
	if got := ask(); got != h.a.IP.String() {
		t.Fatalf("first answer from %s, want %s", got, h.a.IP)
	}
	if err := h.n.SetServices(dns(h.b)); err != nil {
		t.Fatal(err)
	}
	if got := ask(); got != h.b.IP.String() {
		t.Fatalf("after moving the service to task-b the same socket still reaches %s", got)
	}
}

// TestVIPLocalnetGuard: published ports turn on route_localnet on the
// bridge, so a task that routes 127.0.0.0/8 to its gateway (it needs
// CAP_NET_ADMIN in its namespace, which a task may have) would reach the
// node's loopback-only services. The guard drops that; without it the
// same attempt gets through, which shows the test can fail.
func TestVIPLocalnetGuard(t *testing.T) {
	h := newVIPHarness(t)
	loopbackUp(t)
	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, PublishedPort: 8080, Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1})})); err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, "", "127.0.0.2:9999", "node-loopback")
	// The attacker: task c drops its own loopback route for 127.0.0.2 and
	// sends it to the gateway instead.
	ns := h.client.NetNSPath
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"},
		{"ip", "route", "del", "table", "local", "127.0.0.0/8", "dev", "lo"},
		{"ip", "route", "add", "127.0.0.2/32", "via", h.client.Gateway.String(), "dev", "eth0"},
	} {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v in the task: %v %s", args, err, out)
		}
	}
	attack := func() error {
		c := clientIn(ns)
		c.Timeout = 2 * time.Second
		resp, err := c.Get("http://127.0.0.2:9999/")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := attack(); err == nil {
		t.Fatal("a task reached the node's 127.0.0.2:9999 through its gateway")
	}
	out, err := exec.Command("nft", "flush", "chain", "inet", TableName, chainLocalnetGuard).CombinedOutput()
	if err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	if err := attack(); err != nil {
		t.Fatalf("without the guard the attempt still failed (%v): the test proves nothing", err)
	}
}
