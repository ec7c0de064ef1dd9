package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/nftables"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/e2e/loadgen"
	"github.com/warrenorch/warren/messages"
)

// TestBenchNetwork measures issue 6's figures on a 3-host cluster
// (`go tool task bench`): how long an unhealthy task stays routable on
// any node, container-to-container throughput through the WireGuard mesh
// against the same hosts' underlay, and requests per second through a VIP
// against the same task addressed directly. Baselines run in the same run,
// interleaved with what they are compared to.
func TestBenchNetwork(t *testing.T) {
	if os.Getenv("WARREN_BENCH") == "" {
		t.Skip("benchmarks run with WARREN_BENCH=1 (go tool task bench)")
	}
	h := cluster.New(t, cluster.Options{Hosts: 3, Bin: warrenBin})
	formCluster(t, h, 1, "--log-level", "info") // what users run
	m0, h1 := h.Hosts[0], h.Hosts[1]
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "3", "--wait", "--publish", "80",
		"--health-cmd", "http GET /healthz", "--health-interval", "200ms", "--health-retries", "1")
	cli(t, m0, "service", "create", "client", "--image", "demo:v1", "--wait", "--constraint", "node.hostname=="+m0.Name)
	cli(t, m0, "service", "create", "target", "--image", "demo:v1", "--wait", "--publish", "80", "--constraint", "node.hostname=="+h1.Name)
	client := waitRunning(t, m0, "client", 1)[0]
	target := waitRunning(t, m0, "target", 1)[0]
	tsvc := &messages.Service{}
	must(t, jsonOf(cli(t, m0, "service", "inspect", "target", "-o", "json"), tsvc))

	type row struct{ name, warren, base, ratio, target string }
	var rows []row

	// 1. Unhealthy to removed on every node.
	const trials = 20
	var lat []time.Duration
	for i := 0; i < trials; i++ {
		lat = append(lat, unhealthyToRemoved(t, h, m0, i))
	}
	rows = append(rows, row{fmt.Sprintf("task unhealthy -> out of the VIP on all 3 nodes, p50 (%d trials)", trials),
		percentile(lat, 0.5).Round(time.Millisecond).String(), "-", "-", "-"},
		row{"  same, p99", percentile(lat, 0.99).Round(time.Millisecond).String(), "-", "-", "< 1s"})

	// 2. Throughput, container to container across nodes through the mesh,
	// against host to host over the underlay.
	l, err := listenIn(h1, h1.IP+":9001")
	must(t, err)
	defer l.Close()
	go loadgen.Sink(l)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = execInErr(h1, target.Id, "-sink", ":9000", "-for", "60s")
	}()
	time.Sleep(time.Second)
	var mesh, under []float64
	for i := 0; i < 3; i++ {
		var r loadgen.Result
		must(t, json.Unmarshal([]byte(execIn(t, m0, client.Id, "-blast", target.Status.Ip+":9000", "-for", "5s")), &r))
		mesh = append(mesh, r.Mbps())
		must(t, m0.InNetNS(func() error {
			r, err = loadgen.Blast(h1.IP+":9001", 5*time.Second)
			return err
		}))
		under = append(under, r.Mbps())
	}
	wm, wu := medianF(mesh), medianF(under)
	rows = append(rows, row{"TCP throughput container->container across nodes (WireGuard, median of 3)",
		fmt.Sprintf("%.0f Mbit/s", wm), fmt.Sprintf("%.0f Mbit/s (host->host underlay)", wu), fmt.Sprintf("%.2f", wm/wu),
		"report (plan: >= 0.9 with kernel WireGuard)"})

	// 3. Requests per second through the VIP against the task's own
	// address: one replica on another node, 4 workers, a new connection per
	// request so the address translation is paid every time.
	var vip, direct []float64
	type run struct {
		url string
		to  *[]float64
	}
	for i := 0; i < 5; i++ {
		runs := []run{{"http://" + tsvc.Vip + "/", &vip}, {"http://" + target.Status.Ip + "/", &direct}}
		if i%2 == 1 { // alternate which goes first
			runs[0], runs[1] = runs[1], runs[0]
		}
		for _, c := range runs {
			var r loadgen.Result
			must(t, json.Unmarshal([]byte(execIn(t, m0, client.Id, "-load", c.url, "-for", "4s", "-c", "4")), &r))
			if r.Failed > 0 {
				t.Errorf("%s: %d requests failed", c.url, r.Failed)
			}
			*c.to = append(*c.to, r.RPS())
		}
	}
	v, d := medianF(vip), medianF(direct)
	rows = append(rows, row{"requests/s through the VIP (new connection each, median of 5)",
		fmt.Sprintf("%.0f", v), fmt.Sprintf("%.0f (task IP directly)", d), fmt.Sprintf("%.2f", v/d), ">= 0.95"})
	wg.Wait()

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nBENCHMARK\tWARREN\tBASELINE (same run)\tRATIO\tTARGET")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.name, r.warren, r.base, r.ratio, r.target)
	}
	tw.Flush()
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func listenIn(host *cluster.Host, addr string) (net.Listener, error) {
	var l net.Listener
	err := host.InNetNS(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// unhealthyToRemoved makes one healthy web replica fail its health check
// and returns the time from its task deciding it is unhealthy (the task
// actor's log line) to the last node's VIP map no longer holding it, as
// read from each node's kernel every few milliseconds. It then waits for
// the replica to be restarted and healthy again.
func unhealthyToRemoved(t *testing.T, h *cluster.Harness, m0 *cluster.Host, trial int) time.Duration {
	t.Helper()
	var healthy []*messages.Task
	eventually(t, 60*time.Second, "3 healthy web replicas", func() error {
		healthy = nil
		for _, tk := range running(tasks(t, m0, "web", false)) {
			if tk.Status.Health == messages.HealthState_HEALTH_STATE_HEALTHY {
				healthy = append(healthy, tk)
			}
		}
		if len(healthy) != 3 {
			return fmt.Errorf("%d healthy", len(healthy))
		}
		// And routable everywhere again.
		for _, host := range h.Hosts {
			for _, tk := range healthy {
				if in, err := inWebMap(host, netip.MustParseAddr(tk.Status.Ip)); err != nil || !in {
					return fmt.Errorf("%s not in %s's map yet (%v)", tk.Status.Ip, host.Name, err)
				}
			}
		}
		return nil
	})
	sort.Slice(healthy, func(i, j int) bool { return healthy[i].NodeId < healthy[j].NodeId })
	victim := healthy[trial%len(healthy)]
	vh := byNodeID(h, victim.NodeId)
	ip := netip.MustParseAddr(victim.Status.Ip)

	gone := make([]time.Time, len(h.Hosts))
	var wg sync.WaitGroup
	for i, host := range h.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				if in, err := inWebMap(host, ip); err == nil && !in {
					gone[i] = time.Now()
					return
				}
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	must(t, vh.HTTPPost("http://"+victim.Status.Ip+"/healthz/fail", 5*time.Second))
	wg.Wait()
	var last time.Time
	for i, g := range gone {
		if g.IsZero() {
			t.Fatalf("trial %d: %s still routes to the unhealthy %s after 20s", trial, h.Hosts[i].Name, ip)
		}
		if g.After(last) {
			last = g
		}
	}
	var decided time.Time
	eventually(t, 10*time.Second, "the task's unhealthy log line", func() error {
		decided = unhealthyLogged(vh.LogPath, victim.Id)
		if decided.IsZero() {
			return fmt.Errorf("no unhealthy line for %s in %s", victim.Id, vh.LogPath)
		}
		return nil
	})
	return last.Sub(decided)
}

// inWebMap reports whether ip is a backend in the host's map for web's
// port 80.
func inWebMap(host *cluster.Host, ip netip.Addr) (bool, error) {
	in := false
	err := host.NFT(func(c *nftables.Conn) error {
		tab := &nftables.Table{Family: nftables.TableFamilyINet, Name: "warren"}
		sets, err := c.GetSets(tab)
		if err != nil {
			return err
		}
		for _, s := range sets {
			if !strings.HasPrefix(s.Name, "svc-web-tcp-80-") {
				continue
			}
			els, err := c.GetSetElements(s)
			if err != nil {
				return err
			}
			a := ip.As4()
			for _, e := range els {
				if bytes.HasPrefix(e.Val, a[:]) {
					in = true
				}
			}
			return nil
		}
		return fmt.Errorf("no map for web port 80")
	})
	return in, err
}

// unhealthyLogged is when the task actor logged its unhealthy decision for
// task (the last such line), or zero.
func unhealthyLogged(logPath, task string) time.Time {
	f, err := os.Open(logPath)
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	var at time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte("task unhealthy")) || !bytes.Contains(line, []byte(task)) {
			continue
		}
		// ts is an RFC 3339 time since nodes log with --log-format's
		// encoder; older logs wrote epoch seconds.
		var e struct {
			TS   json.RawMessage `json:"ts"`
			Task string          `json:"task"`
		}
		if json.Unmarshal(line, &e) != nil || e.Task != task {
			continue
		}
		var iso string
		var epoch float64
		if json.Unmarshal(e.TS, &iso) == nil {
			if t, err := time.Parse(time.RFC3339Nano, iso); err == nil {
				at = t
			}
		} else if json.Unmarshal(e.TS, &epoch) == nil {
			at = time.Unix(0, int64(epoch*1e9))
		}
	}
	return at
}
