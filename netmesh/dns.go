package netmesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// The node's embedded DNS server. Tasks get the bridge gateway as their only
// nameserver (see WriteResolvConf); it answers service names from the last
// snapshot the node set, and forwards every other query to the host's own
// resolvers, so tasks resolve the outside world as the host does.
//
// Names answered, for a service "web" (the ".warren" suffix is optional in
// every name, so both the search-list form and the short form a client
// tries first resolve without a round trip upstream):
//
//	web.warren                 A    the VIP (or the task IPs when there is
//	                                no VIP, like Swarm's dnsrr mode)
//	tasks.web.warren           A    every healthy task IP, shuffled per answer
//	_http._tcp.web.warren      SRV  0 0 <port> web.warren. for a port named
//	                                "http", A of web.warren in additional
//	_8080._tcp.web.warren      SRV  the same for a port without a name: the
//	                                port number stands in for the name, and
//	                                so does its IANA service name if common
//	                                (_http._tcp for an unnamed port 80)
//
// Other names under warren. are NXDOMAIN (NODATA for names that exist with
// another type or only as a parent, like _tcp.web.warren). Answers carry a
// TTL of DNSTTL seconds so clients follow tasks coming and going.
const (
	// DNSZone is the zone the embedded server is authoritative for.
	DNSZone = "warren."
	// DNSTTL is the TTL of every answer from the zone, in seconds.
	DNSTTL = 5
	// DefaultDNSForwardTimeout bounds a forwarded query across all
	// upstreams, below the 5s a glibc client waits before it retries.
	DefaultDNSForwardTimeout = 2 * time.Second
	// DefaultResolvConf is where NewDNS reads upstreams when given none.
	DefaultResolvConf = "/etc/resolv.conf"
)

// DNSRecords is the snapshot the server answers from.
type DNSRecords struct {
	Services map[string]DNSService // by service name
}

// DNSService is what DNS tells about one service.
type DNSService struct {
	VIP   netip.Addr   // invalid: web.warren answers with the task IPs
	Tasks []netip.Addr // healthy tasks only
	Ports []DNSPort
}

// DNSPort is a port published as an SRV record.
type DNSPort struct {
	Name     string // SRV service label; "" uses the port number
	Protocol string // "tcp" or "udp"
	Port     uint16
}

// DNSOption tunes NewDNS.
type DNSOption func(*DNS)

// WithForwardTimeout bounds each forwarded query, across all upstreams;
// after it the client gets SERVFAIL. Default DefaultDNSForwardTimeout.
func WithForwardTimeout(d time.Duration) DNSOption {
	return func(s *DNS) { s.timeout = d }
}

// DNS is a running embedded DNS server, on UDP and TCP of one address.
type DNS struct {
	log       *zap.Logger
	addr      netip.AddrPort
	upstreams []string
	timeout   time.Duration
	zone      atomic.Pointer[dnsZone]
	servers   []*dns.Server

	closeOnce sync.Once
	closeErr  error
}

// NewDNS starts a server on UDP and TCP at listen (port 0 picks a free one,
// see Addr). upstreams are host:port resolvers for names outside the zone,
// tried in order; nil reads them from /etc/resolv.conf, an empty slice
// means none (every such query gets SERVFAIL). An upstream equal to listen
// is dropped, so the server never forwards to itself. It answers NXDOMAIN
// for the whole zone until the first Set.
func NewDNS(listen netip.AddrPort, upstreams []string, log *zap.Logger, opts ...DNSOption) (*DNS, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if upstreams == nil {
		upstreams = UpstreamsFromResolvConf(DefaultResolvConf)
	}
	d := &DNS{log: log.With(zap.Stringer("dns", listen)), timeout: DefaultDNSForwardTimeout}
	for _, o := range opts {
		o(d)
	}
	if d.timeout <= 0 {
		return nil, fmt.Errorf("dns forward timeout %s: must be positive", d.timeout)
	}
	pc, l, err := listenDNS(listen)
	if err != nil {
		return nil, err
	}
	d.addr = netip.AddrPortFrom(listen.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	for _, u := range upstreams {
		if ap, err := netip.ParseAddrPort(u); err == nil && ap == d.addr {
			continue
		}
		d.upstreams = append(d.upstreams, u)
	}
	d.zone.Store(buildZone(DNSRecords{}, d.log))

	started := make(chan struct{}, 2)
	d.servers = []*dns.Server{
		{PacketConn: pc, Handler: d, UDPSize: dns.MaxMsgSize, NotifyStartedFunc: func() { started <- struct{}{} }},
		{Listener: l, Handler: d, NotifyStartedFunc: func() { started <- struct{}{} }},
	}
	for _, s := range d.servers {
		go func() {
			if err := s.ActivateAndServe(); err != nil {
				d.log.Error("dns server stopped", zap.Error(err))
			}
		}()
	}
	for range d.servers {
		<-started
	}
	d.log.Info("dns server listening", zap.Strings("upstreams", d.upstreams))
	return d, nil
}

// listenDNS opens UDP and TCP on the same port; with port 0 it retries a
// few times in case the TCP port of the free UDP port is taken.
func listenDNS(listen netip.AddrPort) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 5 {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen on udp %s: %w", listen, err)
		}
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(listen.Addr(), port)))
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = err
		if listen.Port() != 0 {
			break
		}
	}
	return nil, nil, fmt.Errorf("dns: listen on tcp %s: %w", listen, lastErr)
}

// Addr is the address the server answers on, UDP and TCP.
func (d *DNS) Addr() netip.AddrPort { return d.addr }

// Set replaces the records; queries answered after it returns see only r.
// The caller keeps ownership of r: Set copies what it needs.
func (d *DNS) Set(r DNSRecords) {
	d.zone.Store(buildZone(r, d.log))
}

// Close stops both listeners, waiting for queries in progress.
func (d *DNS) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		for _, s := range d.servers {
			if err := s.Shutdown(); err != nil {
				errs = append(errs, err)
			}
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// dnsZone is an immutable index of one DNSRecords snapshot.
type dnsZone struct {
	names map[string]*dnsName // lowercase FQDN -> records
	// parents are names that exist only as ancestors of others inside
	// the zone (web.warren's _tcp.web.warren): NODATA, not NXDOMAIN.
	parents map[string]bool
}

type dnsName struct {
	a       []netip.Addr
	shuffle bool
	srv     []*dns.SRV
	extra   []netip.Addr // A records of the SRV target
	target  string       // SRV target name
}

// dnsLabel is what a service or port name must look like to get records:
// one DNS label, as it is used inside names.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

func buildZone(r DNSRecords, log *zap.Logger) *dnsZone {
	z := &dnsZone{names: map[string]*dnsName{}, parents: map[string]bool{}}
	add := func(rel string, n *dnsName) {
		// Every name answers with and without the zone suffix.
		z.names[rel+"."+DNSZone] = n
		z.names[rel+"."] = n
		for p := rel; ; {
			_, rest, ok := strings.Cut(p, ".")
			if !ok {
				break
			}
			z.parents[rest+"."+DNSZone] = true
			p = rest
		}
	}
	for name, svc := range r.Services {
		svcName := strings.ToLower(name)
		if !dnsLabel.MatchString(svcName) || svcName+"." == DNSZone {
			log.Warn("service has no DNS records: its name is not a DNS label", zap.String("service", name))
			continue
		}
		tasks := slices.Clone(svc.Tasks)
		slices.SortFunc(tasks, netip.Addr.Compare)
		tasks = slices.DeleteFunc(slices.Compact(tasks), func(a netip.Addr) bool { return !a.Is4() })
		main := &dnsName{a: tasks, shuffle: true}
		if svc.VIP.Is4() {
			main = &dnsName{a: []netip.Addr{svc.VIP}}
		}
		add(svcName, main)
		add("tasks."+svcName, &dnsName{a: tasks, shuffle: true})
		target := svcName + "." + DNSZone
		for _, p := range svc.Ports {
			proto := strings.ToLower(p.Protocol)
			labels := []string{strings.ToLower(p.Name)}
			if labels[0] == "" {
				// Unnamed: by number, and by its IANA service name if it
				// has a common one (_http._tcp for 80).
				labels = []string{fmt.Sprint(p.Port)}
				if wk := wellKnownPorts[proto+"/"+fmt.Sprint(p.Port)]; wk != "" {
					labels = append(labels, wk)
				}
			}
			if (proto != "tcp" && proto != "udp") || !dnsLabel.MatchString(labels[0]) || p.Port == 0 {
				log.Warn("port has no SRV record: it needs tcp or udp, a DNS label for a name and a non-zero port",
					zap.String("service", name), zap.String("port", p.Name), zap.String("protocol", p.Protocol), zap.Uint16("number", p.Port))
				continue
			}
			for _, label := range labels {
				rel := "_" + label + "._" + proto + "." + svcName
				n := z.names[rel+"."+DNSZone]
				if n == nil {
					n = &dnsName{target: target, extra: main.a}
					add(rel, n)
				}
				n.srv = append(n.srv, &dns.SRV{Target: target, Port: p.Port})
			}
		}
	}
	return z
}

// wellKnownPorts names the common ports by their IANA service names, so an
// unnamed port 80 answers _http._tcp as clients expect.
var wellKnownPorts = map[string]string{
	"tcp/80": "http", "tcp/443": "https", "tcp/8080": "http-alt", "tcp/22": "ssh", "tcp/25": "smtp",
	"tcp/53": "domain", "udp/53": "domain", "tcp/6379": "redis", "tcp/5432": "postgresql",
	"tcp/3306": "mysql", "tcp/27017": "mongodb", "tcp/5672": "amqp", "tcp/11211": "memcache",
}

// ServeDNS answers one query; it implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		rcode := dns.RcodeFormatError
		if req.Opcode != dns.OpcodeQuery {
			rcode = dns.RcodeNotImplemented
		}
		_ = w.WriteMsg(m.SetRcode(req, rcode))
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z := d.zone.Load()
	switch n := z.names[name]; {
	case n != nil:
		d.reply(w, req, d.answer(q, n))
	case name == DNSZone || z.parents[name]:
		d.reply(w, req, d.nodata(req, q))
	case dns.IsSubDomain(DNSZone, name):
		m := d.nodata(req, q)
		m.Rcode = dns.RcodeNameError
		d.reply(w, req, m)
	default:
		d.forward(w, req)
	}
}

func (d *DNS) answer(q dns.Question, n *dnsName) *dns.Msg {
	m := new(dns.Msg)
	m.Authoritative = true
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: DNSTTL}
	}
	switch q.Qtype {
	case dns.TypeA, dns.TypeANY:
		addrs := n.a
		if n.shuffle && len(addrs) > 1 {
			addrs = slices.Clone(addrs)
			rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		}
		for _, a := range addrs {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(q.Name, dns.TypeA), A: a.AsSlice()})
		}
	case dns.TypeSRV:
		for _, s := range n.srv {
			rr := *s
			rr.Hdr = hdr(q.Name, dns.TypeSRV)
			m.Answer = append(m.Answer, &rr)
		}
		for _, a := range n.extra {
			m.Extra = append(m.Extra, &dns.A{Hdr: hdr(n.target, dns.TypeA), A: a.AsSlice()})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{d.soa()}
	}
	return m
}

// nodata is an authoritative empty answer with the zone's SOA, which tells
// caches how long to remember the absence.
func (d *DNS) nodata(req *dns.Msg, q dns.Question) *dns.Msg {
	m := new(dns.Msg)
	m.Authoritative = true
	if strings.ToLower(q.Name) == DNSZone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
		m.Answer = []dns.RR{d.soa()}
		return m
	}
	m.Ns = []dns.RR{d.soa()}
	return m
}

func (d *DNS) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: DNSZone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: DNSTTL},
		Ns:      "ns." + DNSZone,
		Mbox:    "hostmaster." + DNSZone,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: DNSTTL,
	}
}

// reply completes m as the answer to req and sends it, truncated to what
// the client can take over UDP.
func (d *DNS) reply(w dns.ResponseWriter, req *dns.Msg, m *dns.Msg) {
	rcode := m.Rcode
	m.SetReply(req)
	m.Rcode = rcode
	m.RecursionAvailable = true
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		m.SetEdns0(uint16(min(size, 1232)), false)
		size = min(size, 1232)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(size)
	}
	if err := w.WriteMsg(m); err != nil {
		d.log.Debug("write dns answer", zap.Stringer("client", w.RemoteAddr()), zap.Error(err))
	}
}

// forward relays req to the upstreams in turn, over the transport the
// client used, within the forward timeout, and answers SERVFAIL when none
// gives a usable answer.
func (d *DNS) forward(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		network = "tcp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	var lastErr error
	for i, u := range d.upstreams {
		// Each upstream gets an equal share of what is left, so one dead
		// resolver does not eat the whole budget.
		deadline, _ := ctx.Deadline()
		share := time.Until(deadline) / time.Duration(len(d.upstreams)-i)
		c := &dns.Client{Net: network, Timeout: share, UDPSize: dns.MaxMsgSize}
		resp, _, err := c.ExchangeContext(ctx, req, u)
		if err == nil && (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) && i < len(d.upstreams)-1 {
			err = fmt.Errorf("upstream answered %s", dns.RcodeToString[resp.Rcode])
		}
		if err != nil {
			lastErr = fmt.Errorf("%s: %w", u, err)
			continue
		}
		resp.Id = req.Id
		if err := w.WriteMsg(resp); err != nil {
			d.log.Debug("write forwarded dns answer", zap.Stringer("client", w.RemoteAddr()), zap.Error(err))
		}
		return
	}
	if lastErr == nil {
		lastErr = errors.New("no upstream resolvers configured")
	}
	d.log.Debug("dns forward failed", zap.String("name", req.Question[0].Name), zap.Error(lastErr))
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	_ = w.WriteMsg(m)
}

// UpstreamsFromResolvConf returns the nameservers of a resolv.conf file as
// host:port, or nil if it cannot be read.
func UpstreamsFromResolvConf(path string) []string {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range cfg.Servers {
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out
}

// WriteResolvConf writes a resolv.conf for a task: nameserver (the node's
// DNS on the bridge gateway) only, the warren zone first in the search
// list, and ndots:1, so a bare service name is tried as name.warren first
// while dotted names go out as they are.
func WriteResolvConf(path string, nameserver netip.Addr, search []string) error {
	if !nameserver.IsValid() {
		return errors.New("write resolv.conf: no nameserver address")
	}
	domains := []string{strings.TrimSuffix(DNSZone, ".")}
	for _, s := range search {
		s = strings.TrimSuffix(strings.ToLower(s), ".")
		if s != "" && !slices.Contains(domains, s) {
			domains = append(domains, s)
		}
	}
	content := fmt.Sprintf("# Written by Warren: the node's DNS answers service names and forwards the rest.\nnameserver %s\nsearch %s\noptions ndots:1\n",
		nameserver, strings.Join(domains, " "))
	f, err := os.CreateTemp(filepath.Dir(path), ".resolv.conf-*")
	if err != nil {
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing left
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	return nil
}
