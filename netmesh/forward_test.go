package netmesh

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestForwardChain: an L2 neighbour on the host's network that routes the
// task subnet (and another node's) via this node reaches a task only
// through a published port; tasks still reach each other, the outside and
// other nodes' tasks, and other nodes' tasks reach them. With the forward
// chain emptied (the old accept-everything behaviour) the same neighbour
// reaches the task ports directly, which shows the test can fail.
func TestForwardChain(t *testing.T) {
	h := newVIPHarness(t)
	a := h.a.IP.String()
	// An unpublished port on task a, besides the published 8080.
	serveHTTP(t, h.a.NetNSPath, "0.0.0.0:9090", "a-private")

	// The neighbour: on the node's uplink, default route via the node.
	neighbour := peerNS(t, "neighbour", "uplink0", netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24"))
	nh, err := handleIn(neighbour)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if err := nh.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.51.100.1")}); err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, neighbour, "198.51.100.2:80", "outside")

	// Another node behind the mesh interface, with a task address of its
	// own (10.88.2.5) and a route back to this node's tasks.
	remote := peerNS(t, "remote", DefaultMeshInterface, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	rh, err := handleIn(remote)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	rlo, _ := rh.LinkByName("lo")
	if err := rh.AddrAdd(rlo, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.88.2.5/32"))}); err != nil {
		t.Fatal(err)
	}
	// A default route, as a real node has: only the forward chain stops
	// a neighbour's connection into the mesh, not a missing reply route.
	if err := rh.RouteAdd(&netlink.Route{Gw: net.ParseIP("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, remote, "10.88.2.5:80", "remote-task")
	mesh, err := netlink.LinkByName(DefaultMeshInterface)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: mesh.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("10.88.2.0/24")), Gw: net.ParseIP("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}

	if err := h.n.SetServices(webService(VIPPort{Protocol: "tcp", Port: 80, PublishedPort: 8080,
		Endpoints: endpoints(map[*Sandbox]uint32{h.a: 1})})); err != nil {
		t.Fatal(err)
	}

	reach := func(from, url string) (string, error) {
		c := clientIn(from)
		c.Timeout = 2 * time.Second
		backend, _, err := get(c, url)
		return backend, err
	}
	mustReach := func(what, from, url, want string) {
		t.Helper()
		if got, err := reach(from, url); err != nil || got != want {
			t.Errorf("%s (%s): got %q, %v; want an answer from %s", what, url, got, err, want)
		}
	}
	blocked := func() []string {
		var got []string
		for _, url := range []string{
			"http://" + a + ":9090/", // an unpublished port
			"http://" + a + ":8080/", // the published service's target port, but not through DNAT
			"http://10.88.2.5:80/",   // another node's task, through this node
		} {
			if backend, err := reach(neighbour, url); err == nil {
				got = append(got, url+" answered by "+backend)
			}
		}
		return got
	}

	if got := blocked(); len(got) > 0 {
		t.Errorf("an L2 neighbour reached task ports directly: %v", got)
	}
	mustReach("neighbour to the published port", neighbour, "http://198.51.100.1:8080/", a)
	mustReach("task to task, unpublished port", h.client.NetNSPath, "http://"+a+":9090/", "a-private")
	mustReach("task to task", h.client.NetNSPath, "http://"+h.b.IP.String()+":8080/", h.b.IP.String())
	mustReach("task to VIP", h.client.NetNSPath, "http://10.89.0.10/", a)
	mustReach("task to the outside", h.client.NetNSPath, "http://198.51.100.2/", "outside")
	mustReach("task to another node's task", h.client.NetNSPath, "http://10.88.2.5/", "remote-task")
	// The other node (here from its own address; for real from its tasks'
	// subnet, which WireGuard checks) to a task's unpublished port.
	mustReach("another node to a task", remote, "http://"+a+":9090/", "a-private")

	list := nftListWarren(t)
	for _, want := range []string{
		"ct state established,related accept",
		"ct status dnat accept",
		`iifname "warren0" accept`,
		`iifname "warren-wg" oifname "warren0" accept`,
		`oifname "warren0" drop`,
		`oifname "warren-wg" drop`,
	} {
		if !strings.Contains(list, want) {
			t.Errorf("forward chain lacks %q:\n%s", want, list)
		}
	}

	// The old chain: nothing in it, policy accept.
	if out, err := exec.Command("nft", "flush", "chain", "inet", TableName, chainForward).CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	if got := blocked(); len(got) != 3 {
		t.Fatalf("with an empty forward chain the neighbour reached only %v: the test proves nothing", got)
	}
}
