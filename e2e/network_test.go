package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// execIn runs the test app's tools inside a task's container on host n,
// through containerd: the container's own network, resolver and routes.
func execIn(t *testing.T, n *cluster.Host, taskID string, args ...string) string {
	t.Helper()
	out, err := execInErr(n, taskID, args...)
	must(t, err)
	return out
}

// execInErr is execIn for goroutines and expected failures: a non-zero
// exit is an error carrying the output.
func execInErr(n *cluster.Host, taskID string, args ...string) (string, error) {
	return execInTimeout(n, taskID, 90*time.Second, args...)
}

func execInTimeout(n *cluster.Host, taskID string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rt, err := runtime.NewContainerd(ctx, n.ContainerdSocket(), runtime.DefaultNamespace, zap.NewNop())
	if err != nil {
		return "", err
	}
	defer rt.Close()
	code, out, err := rt.Exec(ctx, taskID, append([]string{"/app"}, args...))
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("/app %v in %s exited %d: %s", args, taskID, code, out)
	}
	return out, nil
}

// serveUpstreamDNS answers A queries for names on addr (UDP), as the
// hosts' upstream resolver: every other name is NXDOMAIN.
func serveUpstreamDNS(t *testing.T, addr string, names map[string]string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	must(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if ip, ok := names[strings.ToLower(q.Name)]; ok && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

func spread(t *testing.T, out string) map[string]int {
	t.Helper()
	m := map[string]int{}
	must(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &m))
	return m
}

// hostSpread GETs url n times from host's network namespace, a new
// connection each, and counts which task answered ("failed" for errors).
func hostSpread(host *cluster.Host, url string, n int) map[string]int {
	m := map[string]int{}
	for i := 0; i < n; i++ {
		body, err := host.HTTPGet(url+"?format=json", 5*time.Second)
		var r struct {
			Task string `json:"task"`
		}
		if err != nil || json.Unmarshal([]byte(body), &r) != nil || r.Task == "" {
			m["failed"]++
			continue
		}
		m[r.Task]++
	}
	return m
}

// TestServiceNetwork: three hosts, a service of 3 replicas, one per host;
// from a container, its name resolves to a VIP that balances over all
// three across the WireGuard mesh; tasks. resolves to the task IPs; the
// published port answers on every host, from the host itself (loopback
// included) and from another; an unhealthy task leaves the VIP and the
// published port.
func TestServiceNetwork(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 3, Bin: warrenBin})
	m0 := h.Hosts[0]
	must(t, m0.StartAndWait(90*time.Second))
	// Host 2 stands for a node behind NAT: its WireGuard endpoint is an
	// address other than the one it advertises. The mesh only works if
	// peers use it (WireGuard listens on every address, so both reach it).
	h2 := h.Hosts[2]
	wgIP := strings.TrimSuffix(h.Gateway(), ".254") + ".202"
	_, err := h2.Exec("ip", "addr", "add", wgIP+"/24", "dev", "eth0")
	must(t, err)
	wtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q"))
	for _, w := range h.Hosts[1:] {
		w.SetJoin(wtok, m0.JoinAddr())
	}
	must(t, h.Hosts[1].Start())
	must(t, h2.Start("--wg-endpoint", wgIP+":51820"))
	waitNodes(t, m0, 3, 1)
	ni := &messages.NodeReply{}
	must(t, jsonOf(cli(t, m0, "node", "inspect", h2.Name, "-o", "json"), ni))
	if got := ni.GetNode().GetDescription().GetWgEndpoint(); got != wgIP+":51820" {
		t.Fatalf("node inspect shows WireGuard endpoint %q, want %s:51820", got, wgIP)
	}
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "3", "--publish", "8080:80",
		"--health-cmd", "http GET /healthz", "--health-interval", "300ms", "--health-retries", "1",
		// SIGTERM makes the test app exit 0: an unhealthy replica then stays
		// out (on-failure), so the test sees it gone, not back already.
		"--restart-condition", "on-failure")
	cli(t, m0, "service", "create", "client", "--image", "demo:v1", "--constraint", "node.hostname=="+m0.Name)
	web := waitRunning(t, m0, "web", 3)
	per := map[string]bool{}
	for _, tk := range web {
		per[tk.NodeId] = true
	}
	if len(per) != 3 {
		t.Fatalf("web not spread over the 3 hosts: %v", per)
	}
	client := waitRunning(t, m0, "client", 1)[0]
	svc := &messages.Service{}
	must(t, jsonOf(cli(t, m0, "service", "inspect", "web", "-o", "json"), svc))

	eventually(t, 60*time.Second, "the name resolves to the VIP in a container", func() error {
		out := execIn(t, m0, client.Id, "-resolve", "web")
		if strings.TrimSpace(out) != svc.Vip {
			return fmt.Errorf("web resolves to %q, VIP %s", out, svc.Vip)
		}
		return nil
	})
	eventually(t, 60*time.Second, "tasks.web.warren resolves to the 3 healthy tasks", func() error {
		out, err := execInErr(m0, client.Id, "-resolve", "tasks.web.warren")
		if err != nil {
			return err
		}
		if got := strings.Fields(out); len(got) != 3 {
			return fmt.Errorf("tasks.web.warren resolves to %v", got)
		}
		return nil
	})

	eventually(t, 60*time.Second, "300 requests through the VIP reach all 3 replicas", func() error {
		s := spread(t, execIn(t, m0, client.Id, "-fetch", "http://web/", "-n", "300"))
		for _, tk := range web {
			if s[tk.Id] == 0 {
				return fmt.Errorf("replica %s got none: %v", tk.Id, s)
			}
		}
		if s["failed"] > 0 {
			return fmt.Errorf("%d failed: %v", s["failed"], s)
		}
		return nil
	})

	// The routing mesh: every host's published port reaches all three
	// replicas, whether the host calls itself or another host calls it.
	for i, host := range h.Hosts {
		from := h.Hosts[(i+1)%len(h.Hosts)]
		for _, c := range []struct {
			from *cluster.Host
			url  string
		}{{host, "http://" + host.IP + ":8080/"}, {host, "http://127.0.0.1:8080/"}, {from, "http://" + host.IP + ":8080/"}} {
			eventually(t, 30*time.Second, fmt.Sprintf("%s from %s reaches all 3 replicas", c.url, c.from.Name), func() error {
				s := hostSpread(c.from, c.url, 60)
				for _, tk := range web {
					if s[tk.Id] == 0 {
						return fmt.Errorf("replica %s got none: %v", tk.Id, s)
					}
				}
				if s["failed"] > 0 {
					return fmt.Errorf("%d failed: %v", s["failed"], s)
				}
				return nil
			})
		}
	}

	// DNS: SRV records for the published port (by number and by its IANA
	// name), names outside the zone forwarded to the host's resolver.
	serveUpstreamDNS(t, h.Gateway()+":53", map[string]string{"upstream.test.": "192.0.2.7"})
	for _, name := range []string{"_http._tcp.web.warren", "_80._tcp.web"} {
		if out := strings.TrimSpace(execIn(t, m0, client.Id, "-srv", name)); out != "web.warren. 80" {
			t.Errorf("SRV %s = %q, want web.warren. 80", name, out)
		}
	}
	if out := strings.TrimSpace(execIn(t, m0, client.Id, "-resolve", "upstream.test")); out != "192.0.2.7" {
		t.Errorf("upstream.test forwarded = %q, want 192.0.2.7", out)
	}
	// A deleted service's name stops resolving, within a second or so.
	cli(t, m0, "service", "create", "gone", "--image", "demo:v1", "--wait")
	eventually(t, 30*time.Second, "gone resolves", func() error {
		_, err := execInErr(m0, client.Id, "-resolve", "gone")
		return err
	})
	cli(t, m0, "service", "rm", "gone")
	deleted := time.Now()
	eventually(t, 30*time.Second, "a deleted service's name stops resolving", func() error {
		if out, err := execInErr(m0, client.Id, "-resolve", "gone.warren"); err == nil {
			return fmt.Errorf("gone.warren still resolves to %q", out)
		}
		return nil
	})
	t.Logf("deleted service stopped resolving after %s", time.Since(deleted).Round(10*time.Millisecond))

	// Continuous requests, through the VIP from a container and through a
	// published port from a host, while web scales 3 → 9 → 3: not one
	// fails, and the new replicas serve while they are up.
	type fetched struct {
		out string
		err error
	}
	inside := make(chan fetched, 1)
	go func() {
		out, err := execInErr(m0, client.Id, "-fetch", "http://web/", "-for", "25s")
		inside <- fetched{out, err}
	}()
	stop := make(chan struct{})
	outside := make(chan map[string]int, 1)
	go func() {
		m := map[string]int{}
		for {
			select {
			case <-stop:
				outside <- m
				return
			default:
			}
			for k, v := range hostSpread(h.Hosts[1], "http://"+h.Hosts[2].IP+":8080/", 5) {
				m[k] += v
			}
		}
	}()
	time.Sleep(2 * time.Second)
	scaleStart := time.Now()
	scale := func(to string) {
		if _, stderr, err := m0.CLI("service", "scale", "web="+to, "--wait", "--wait-timeout", "60s"); err != nil {
			t.Fatalf("scale web=%s: %v %s\n%s", to, err, stderr, cli(t, m0, "service", "ps", "web", "-a"))
		}
	}
	scale("9")
	time.Sleep(2 * time.Second)
	scale("3")
	scaled := time.Since(scaleStart)
	time.Sleep(2 * time.Second)
	close(stop)
	out := <-outside
	in := <-inside
	must(t, in.err)
	s := spread(t, in.out)
	t.Logf("scaling 3 → 9 → 3 took %s; through the VIP: %v; through the published port: %v", scaled.Round(10*time.Millisecond), s, out)
	if scaled > 20*time.Second {
		t.Fatalf("scaling took %s, longer than the in-container load ran", scaled)
	}
	for name, m := range map[string]map[string]int{"VIP": s, "published port": out} {
		if m["failed"] > 0 || m["unknown"] > 0 {
			t.Errorf("%s: requests failed while scaling: %v", name, m)
		}
		if len(m) <= 3 {
			t.Errorf("%s: only %d replicas answered while scaling to 9: %v", name, len(m), m)
		}
	}
	web = waitRunning(t, m0, "web", 3)

	// An unhealthy replica receives nothing more, on any host.
	victim := web[0]
	var vh *cluster.Host
	for _, host := range h.Hosts {
		if host.NodeID() == victim.NodeId {
			vh = host
		}
	}
	must(t, vh.HTTPPost("http://"+victim.Status.Ip+"/healthz/fail", 5*time.Second))
	eventually(t, 30*time.Second, "the unhealthy replica leaves the VIP", func() error {
		s := spread(t, execIn(t, m0, client.Id, "-fetch", "http://web/", "-n", "60"))
		if s[victim.Id] > 0 {
			return fmt.Errorf("unhealthy replica still served %d: %v", s[victim.Id], s)
		}
		return nil
	})
	for _, host := range h.Hosts {
		if s := hostSpread(host, "http://"+host.IP+":8080/", 30); s[victim.Id] > 0 || s["failed"] > 0 {
			t.Errorf("published port of %s after the replica turned unhealthy: %v", host.Name, s)
		}
	}

	// A node leaves: its mesh route (the WireGuard peer's allowed IPs) and
	// its tasks' endpoints disappear on every other node.
	subnet := netip.MustParsePrefix(ni.GetNode().GetSubnet())
	prefix := strings.TrimSuffix(subnet.Masked().Addr().String(), "0") // "10.88.3."
	knows := func(host *cluster.Host) (route, endpoint bool, err error) {
		var routes []netlink.Route
		if err := host.InNetNS(func() error {
			var err error
			routes, err = netlink.RouteList(nil, netlink.FAMILY_V4)
			return err
		}); err != nil {
			return false, false, err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == subnet.String() {
				route = true
			}
		}
		out, err := host.Exec("nft", "list", "table", "inet", "warren")
		return route, strings.Contains(out, prefix), err
	}
	// A service pinned to the leaving node has an endpoint in its subnet.
	cli(t, m0, "service", "create", "pinned", "--image", "demo:v1", "--wait", "--publish", "80", "--constraint", "node.hostname=="+h2.Name)
	for _, host := range h.Hosts[:2] {
		eventually(t, 30*time.Second, fmt.Sprintf("%s routes to %s's tasks", host.Name, h2.Name), func() error {
			if route, endpoint, err := knows(host); err != nil || !route || !endpoint {
				return fmt.Errorf("route to its subnet %v, an endpoint in it %v (%v)", route, endpoint, err)
			}
			return nil
		})
	}
	// Removed while it runs, the node leaves by itself: tasks stopped,
	// Warren's table, bridge and WireGuard device gone, process ended; it
	// does not come back on a restart.
	cli(t, m0, "node", "rm", "--force", h2.Name)
	eventually(t, 60*time.Second, h2.Name+" leaves by itself", func() error {
		if h2.Running() {
			return fmt.Errorf("warren still runs")
		}
		return nil
	})
	for _, probe := range [][]string{{"nft", "list", "table", "inet", "warren"}, {"ip", "link", "show", "warren0"}, {"ip", "link", "show", "warren-wg"}} {
		if out, err := h2.Exec(probe...); err == nil {
			t.Errorf("after leaving, %v on %s still finds something:\n%s", probe, h2.Name, out)
		}
	}
	if out, err := h2.Exec("sh", "-c", "find /sys/fs/cgroup/*/warren-"+h2.NodeID()[:12]+" -mindepth 1 -type d 2>/dev/null | grep -c . || true"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("after leaving, task cgroups of %s remain: %q %v", h2.Name, out, err)
	}
	// Start may already find warren gone (it refuses at once): the log
	// says whether it refused for the right reason.
	_ = h2.Start("--wg-endpoint", wgIP+":51820")
	eventually(t, 30*time.Second, "a restart of the removed node refuses to run", func() error {
		if h2.Running() {
			return fmt.Errorf("warren runs again")
		}
		if !strings.Contains(h2.LogTail(5), "has left it") {
			return fmt.Errorf("no explanation in the log: %s", h2.LogTail(5))
		}
		return nil
	})
	for _, host := range h.Hosts[:2] {
		eventually(t, 30*time.Second, fmt.Sprintf("%s forgets %s", host.Name, h2.Name), func() error {
			route, endpoint, err := knows(host)
			if err != nil || route || endpoint {
				return fmt.Errorf("route to %s still there: %v; an endpoint in it still in the rules: %v (%v)", subnet, route, endpoint, err)
			}
			return nil
		})
	}
}
