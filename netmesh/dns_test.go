package netmesh

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
)

// fakeUpstream is a resolver on 127.0.0.1 that knows example.com and
// counts the queries it gets.
type fakeUpstream struct {
	addr    string
	queries atomic.Int64
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	loopbackUp(t)
	u := &fakeUpstream{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case strings.EqualFold(q.Name, "example.com.") && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 1)})
		case strings.EqualFold(q.Name, "example.com."):
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return u
}

// blackhole is a UDP address that reads queries and never answers.
func blackhole(t *testing.T) string {
	t.Helper()
	loopbackUp(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// loopbackUp brings lo up when the tests run as root in their fresh
// network namespace, where it starts down; elsewhere it is up already.
func loopbackUp(t *testing.T) {
	t.Helper()
	if os.Getenv(inNSEnv) == "" {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring lo up: %v", err)
	}
}

func newTestDNS(t *testing.T, upstreams []string, opts ...DNSOption) *DNS {
	t.Helper()
	loopbackUp(t)
	d, err := NewDNS(netip.MustParseAddrPort("127.0.0.1:0"), upstreams, zaptest.NewLogger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func query(t *testing.T, d *DNS, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, d.Addr().String())
	if err != nil {
		t.Fatalf("%s %s over %s: %v", dns.TypeToString[qtype], name, network, err)
	}
	return r
}

// answers renders a reply's answer section compactly, sorted.
func answers(r *dns.Msg) string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %d %d %s", rr.Priority, rr.Weight, rr.Port, rr.Target))
		default:
			out = append(out, rr.String())
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func testRecords() DNSRecords {
	return DNSRecords{Services: map[string]DNSService{
		"web": {
			VIP:   netip.MustParseAddr("10.89.0.10"),
			Tasks: []netip.Addr{netip.MustParseAddr("10.88.1.3"), netip.MustParseAddr("10.88.1.2"), netip.MustParseAddr("10.88.2.2")},
			Ports: []DNSPort{{Name: "http", Protocol: "tcp", Port: 80}, {Protocol: "udp", Port: 8125}},
		},
		// No VIP: the service name answers with its tasks (dnsrr).
		"Cache": {Tasks: []netip.Addr{netip.MustParseAddr("10.88.1.9")}},
		// An idle service: the names exist, without addresses.
		"idle": {VIP: netip.MustParseAddr("10.89.0.12")},
		// An unnamed well-known port answers by number and by IANA name.
		"api": {VIP: netip.MustParseAddr("10.89.0.14"), Ports: []DNSPort{{Protocol: "tcp", Port: 443}}},
		// Not a DNS label: no records, and no panic.
		"bad.name": {VIP: netip.MustParseAddr("10.89.0.13")},
	}}
}

func TestDNSAnswers(t *testing.T) {
	up := newFakeUpstream(t)
	d := newTestDNS(t, []string{up.addr})
	d.Set(testRecords())

	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer string
		auth   bool
	}{
		{"web.warren.", dns.TypeA, dns.RcodeSuccess, "10.89.0.10", true},
		{"web.", dns.TypeA, dns.RcodeSuccess, "10.89.0.10", true},
		{"WEB.Warren.", dns.TypeA, dns.RcodeSuccess, "10.89.0.10", true},
		{"tasks.web.warren.", dns.TypeA, dns.RcodeSuccess, "10.88.1.2,10.88.1.3,10.88.2.2", true},
		{"tasks.web.", dns.TypeA, dns.RcodeSuccess, "10.88.1.2,10.88.1.3,10.88.2.2", true},
		{"_http._tcp.web.warren.", dns.TypeSRV, dns.RcodeSuccess, "0 0 80 web.warren.", true},
		{"_http._tcp.web.", dns.TypeSRV, dns.RcodeSuccess, "0 0 80 web.warren.", true},
		{"_8125._udp.web.warren.", dns.TypeSRV, dns.RcodeSuccess, "0 0 8125 web.warren.", true},
		{"_443._tcp.api.warren.", dns.TypeSRV, dns.RcodeSuccess, "0 0 443 api.warren.", true},
		{"_https._tcp.api.warren.", dns.TypeSRV, dns.RcodeSuccess, "0 0 443 api.warren.", true},
		{"_https._udp.api.warren.", dns.TypeSRV, dns.RcodeNameError, "", true},
		{"cache.warren.", dns.TypeA, dns.RcodeSuccess, "10.88.1.9", true},
		{"idle.warren.", dns.TypeA, dns.RcodeSuccess, "10.89.0.12", true},
		{"tasks.idle.warren.", dns.TypeA, dns.RcodeSuccess, "", true},
		// Existing names, other types: NODATA.
		{"web.warren.", dns.TypeAAAA, dns.RcodeSuccess, "", true},
		{"_tcp.web.warren.", dns.TypeSRV, dns.RcodeSuccess, "", true},
		{"warren.", dns.TypeA, dns.RcodeSuccess, "", true},
		// Unknown names in the zone.
		{"nope.warren.", dns.TypeA, dns.RcodeNameError, "", true},
		{"tasks.nope.warren.", dns.TypeA, dns.RcodeNameError, "", true},
		{"_ftp._tcp.web.warren.", dns.TypeSRV, dns.RcodeNameError, "", true},
		{"bad.name.warren.", dns.TypeA, dns.RcodeNameError, "", true},
		// Everything else goes upstream.
		{"example.com.", dns.TypeA, dns.RcodeSuccess, "192.0.2.1", false},
		{"example.com.", dns.TypeAAAA, dns.RcodeSuccess, "", false},
		{"nope.", dns.TypeA, dns.RcodeNameError, "", false},
		{"web.example.com.", dns.TypeA, dns.RcodeNameError, "", false},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+dns.TypeToString[tc.qtype]+"/"+tc.name, func(t *testing.T) {
				r := query(t, d, network, tc.name, tc.qtype)
				if r.Rcode != tc.rcode || answers(r) != tc.answer || r.Authoritative != tc.auth {
					t.Fatalf("got %s %q authoritative=%v, want %s %q authoritative=%v\n%s",
						dns.RcodeToString[r.Rcode], answers(r), r.Authoritative, dns.RcodeToString[tc.rcode], tc.answer, tc.auth, r)
				}
				for _, rr := range r.Answer {
					if tc.auth && rr.Header().Ttl != DNSTTL {
						t.Errorf("TTL %d, want %d: %s", rr.Header().Ttl, DNSTTL, rr)
					}
				}
				if tc.auth && len(r.Answer) == 0 && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
					t.Errorf("negative answer without SOA in authority: %s", r)
				}
			})
		}
	}
	// The SRV answer carries its target's address.
	r := query(t, d, "udp", "_http._tcp.web.warren.", dns.TypeSRV)
	if len(r.Extra) != 1 || r.Extra[0].(*dns.A).A.String() != "10.89.0.10" || r.Extra[0].Header().Name != "web.warren." {
		t.Errorf("SRV additional = %v, want web.warren. A 10.89.0.10", r.Extra)
	}
	// Zone answers never reached the upstream.
	if n := up.queries.Load(); n != 8 {
		t.Errorf("upstream got %d queries, want 8 (4 forwarded names over UDP and TCP)", n)
	}
}

func TestDNSTasksShuffled(t *testing.T) {
	d := newTestDNS(t, []string{})
	var tasks []netip.Addr
	for i := range 8 {
		tasks = append(tasks, netip.AddrFrom4([4]byte{10, 88, 1, byte(2 + i)}))
	}
	d.Set(DNSRecords{Services: map[string]DNSService{"web": {Tasks: tasks}}})
	orders := map[string]bool{}
	for range 20 {
		r := query(t, d, "udp", "tasks.web.warren.", dns.TypeA)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.(*dns.A).A.String())
		}
		if len(got) != 8 {
			t.Fatalf("got %d addresses, want 8", len(got))
		}
		orders[strings.Join(got, ",")] = true
	}
	if len(orders) < 2 {
		t.Fatalf("20 answers all in one order: %v", orders)
	}
}

func TestDNSTruncatesOverUDP(t *testing.T) {
	d := newTestDNS(t, []string{})
	var tasks []netip.Addr
	for i := range 200 {
		tasks = append(tasks, netip.AddrFrom4([4]byte{10, 88, byte(i / 250), byte(2 + i%250)}))
	}
	d.Set(DNSRecords{Services: map[string]DNSService{"big": {Tasks: tasks}}})
	udp := query(t, d, "udp", "tasks.big.warren.", dns.TypeA)
	if !udp.Truncated || len(udp.Answer) >= 200 {
		t.Fatalf("UDP answer: truncated=%v with %d records, want truncated", udp.Truncated, len(udp.Answer))
	}
	tcp := query(t, d, "tcp", "tasks.big.warren.", dns.TypeA)
	if tcp.Truncated || len(tcp.Answer) != 200 {
		t.Fatalf("TCP answer: truncated=%v with %d records, want all 200", tcp.Truncated, len(tcp.Answer))
	}
}

func TestDNSSetSwaps(t *testing.T) {
	d := newTestDNS(t, []string{})
	if r := query(t, d, "udp", "web.warren.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before Set: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	rec := DNSRecords{Services: map[string]DNSService{"web": {VIP: netip.MustParseAddr("10.89.0.10")}}}
	d.Set(rec)
	if r := query(t, d, "udp", "web.warren.", dns.TypeA); answers(r) != "10.89.0.10" {
		t.Fatalf("after Set: %q", answers(r))
	}
	// Set copies: changing the caller's value changes nothing.
	rec.Services["web"] = DNSService{VIP: netip.MustParseAddr("10.89.0.99")}
	if r := query(t, d, "udp", "web.warren.", dns.TypeA); answers(r) != "10.89.0.10" {
		t.Fatalf("after changing the caller's map: %q", answers(r))
	}
	d.Set(DNSRecords{Services: map[string]DNSService{"api": {VIP: netip.MustParseAddr("10.89.0.11")}}})
	if r := query(t, d, "udp", "web.warren.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("web after swap: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, d, "udp", "api.warren.", dns.TypeA); answers(r) != "10.89.0.11" {
		t.Fatalf("api after swap: %q", answers(r))
	}
}

func TestDNSUpstreamFailure(t *testing.T) {
	up := newFakeUpstream(t)
	dead := blackhole(t)
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name      string
		upstreams []string
		rcode     int
		maxTime   time.Duration
	}{
		{"no upstreams", []string{}, dns.RcodeServerFailure, 100 * time.Millisecond},
		{"upstream never answers", []string{dead}, dns.RcodeServerFailure, timeout + 200*time.Millisecond},
		// Nothing listens on port 1: refused at once.
		{"upstream refuses", []string{"127.0.0.1:1"}, dns.RcodeServerFailure, 100 * time.Millisecond},
		{"dead first, live second", []string{dead, up.addr}, dns.RcodeSuccess, timeout + 200*time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDNS(t, tc.upstreams, WithForwardTimeout(timeout))
			start := time.Now()
			r := query(t, d, "udp", "example.com.", dns.TypeA)
			took := time.Since(start)
			if r.Rcode != tc.rcode || took > tc.maxTime {
				t.Fatalf("%s after %s, want %s within %s", dns.RcodeToString[r.Rcode], took, dns.RcodeToString[tc.rcode], tc.maxTime)
			}
		})
	}
}

func TestDNSDropsItselfAsUpstream(t *testing.T) {
	// Find a free port, then claim it as both listen address and upstream.
	probe := newTestDNS(t, []string{})
	addr := probe.Addr()
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := NewDNS(addr, []string{addr.String()}, zaptest.NewLogger(t))
	if err != nil {
		t.Skipf("port %s taken again: %v", addr, err)
	}
	defer d.Close()
	if len(d.upstreams) != 0 {
		t.Fatalf("upstreams = %v, want itself dropped", d.upstreams)
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("# comment\nnameserver 127.0.0.53\nnameserver 2001:db8::1\nsearch example.com\noptions edns0 trust-ad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := UpstreamsFromResolvConf(path)
	if want := []string{"127.0.0.53:53", "[2001:db8::1]:53"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := UpstreamsFromResolvConf(filepath.Join(dir, "missing")); got != nil {
		t.Fatalf("missing file: %v, want nil", got)
	}
}

func TestWriteResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := WriteResolvConf(path, netip.MustParseAddr("10.88.1.1"), []string{"Corp.Example.", "warren", ""}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Written by Warren: the node's DNS answers service names and forwards the rest.\nnameserver 10.88.1.1\nsearch warren corp.example\noptions ndots:1\n"
	if string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	// The file parses as the resolver will read it.
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil || cfg.Ndots != 1 || !slices.Equal(cfg.Search, []string{"warren", "corp.example"}) || !slices.Equal(cfg.Servers, []string{"10.88.1.1"}) {
		t.Fatalf("parsed back as %+v, %v", cfg, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want only resolv.conf (no temp file left)", len(entries))
	}
	if err := WriteResolvConf(path, netip.Addr{}, nil); err == nil {
		t.Fatal("WriteResolvConf without a nameserver succeeded")
	}
}

// TestDNSOnBridgeGateway runs the server where a node runs it, on the
// bridge gateway's port 53, and asks it from inside a task's namespace.
func TestDNSOnBridgeGateway(t *testing.T) {
	needKernel(t)
	up := newFakeUpstream(t)
	n := newNet(t, testConfig(t, "10.88.1.0/24"))
	sb := attach(t, n, "task-a")
	d, err := NewDNS(netip.AddrPortFrom(sb.Gateway, 53), []string{up.addr}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Set(DNSRecords{Services: map[string]DNSService{"web": {VIP: netip.MustParseAddr("10.89.0.10")}}})
	for _, network := range []string{"udp", "tcp"} {
		for name, want := range map[string]string{"web.warren.": "10.89.0.10", "example.com.": "192.0.2.1"} {
			var r *dns.Msg
			err := withNetNS(sb.NetNSPath, func() error {
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
				var err error
				r, _, err = (&dns.Client{Net: network, Timeout: 3 * time.Second}).Exchange(m, "10.88.1.1:53")
				return err
			})
			if err != nil || answers(r) != want {
				t.Errorf("%s over %s from the task: %v %v, want %s", name, network, r, err, want)
			}
		}
	}
}
