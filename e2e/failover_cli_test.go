package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/e2e/cluster"
)

// userConfig writes to dir a copy of src's admin config, as a user copying
// ~/.warren to another machine would have it, listing managers in the
// order given (the one about to die first).
func userConfig(t *testing.T, src *cluster.Host, dir string, managers ...string) {
	t.Helper()
	cfg, err := client.LoadConfig(src.ConfigDir)
	must(t, err)
	for id, e := range cfg.Clusters {
		cdir := filepath.Join(dir, "clusters", id)
		must(t, os.MkdirAll(cdir, 0o700))
		for _, f := range []string{"ca.pem", "admin.pem", "admin-key.pem"} {
			b, err := os.ReadFile(filepath.Join(e.Dir, f))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(cdir, f), b, 0o600))
		}
		e.Dir = cdir
		if id == cfg.Current {
			e.Managers = managers
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, client.ConfigFile), b, 0o600))
}

// hostCLI runs the real CLI inside on (its network, mount and pid
// namespaces), as a user logged in on that host would, with the config in
// configDir; it returns the combined output and how long the command took.
func hostCLI(on *cluster.Host, configDir string, env []string, args ...string) (string, time.Duration, error) {
	cmd := append([]string{"env", "WARREN_CONFIG_DIR=" + configDir}, env...)
	cmd = append(append(cmd, warrenBin), args...)
	t0 := time.Now()
	out, err := on.Exec(cmd...)
	return out, time.Since(t0), err
}

// leaderAndOthers finds the leader among the first n hosts (the managers)
// and the others, in host order.
func leaderAndOthers(t *testing.T, h *cluster.Harness, n int) (*cluster.Host, []*cluster.Host) {
	t.Helper()
	var ask *cluster.Host
	for _, m := range h.Hosts[:n] {
		if m.Running() {
			ask = m
			break
		}
	}
	lead := byNodeID(h, leader(t, ask))
	if lead == nil {
		t.Fatal("no leader among the hosts")
	}
	var others []*cluster.Host
	for _, m := range h.Hosts[:n] {
		if m != lead {
			others = append(others, m)
		}
	}
	return lead, others
}

// managerAddrs lists the hosts' actor addresses, in order.
func managerAddrs(hosts ...*cluster.Host) []string {
	var out []string
	for _, m := range hosts {
		out = append(out, m.IP+":4280")
	}
	return out
}

// hangOn makes host's 4280 complete TCP handshakes and then say nothing,
// as the kernel of a host on its way down (or one whose warren hangs)
// does; the returned func stops it.
func hangOn(t *testing.T, on *cluster.Host) func() {
	t.Helper()
	var ln net.Listener
	must(t, on.InNetNS(func() error {
		var err error
		ln, err = net.Listen("tcp", on.IP+":4280")
		return err
	}))
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	stop := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(stop)
	return stop
}

// rebootManager boots a powered-off manager, starts warren with its own
// command line and waits until the cluster has all its nodes again.
func rebootManager(t *testing.T, m *cluster.Host, via *cluster.Host, nodes, managers int) {
	t.Helper()
	must(t, m.Boot())
	must(t, m.StartAndWait(90*time.Second))
	waitNodes(t, via, nodes, managers)
}

// TestCLIAfterLeaderPowerOff is issue 10's failover as the user saw it: 3
// managers and a worker; the leader's host loses power (its whole pid
// namespace killed) and a user on another manager, with a copied admin
// config that lists the dead manager first, runs `cluster info` and then
// `service scale` with the real CLI. Both must work with a --timeout of
// 5 s, and the CLI's verbose log must show that it dropped the dead
// manager at its probe and sent the requests to a live one.
//
// The second subtest powers off the next leader while its host still
// completes TCP handshakes on 4280 (a host on its way down, or a hung
// warren): a TCP connect there succeeds. Before the CLI probed with the
// cluster's TLS handshake it picked that manager, and the request waited
// on protoactor's reconnect retries (~10 s, issue 10's figure): over the
// 5 s timeout, so this subtest failed.
func TestCLIAfterLeaderPowerOff(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 4, Bin: warrenBin})
	formCluster(t, h, 3)
	m0 := h.Hosts[0]
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "probe", "--image", "demo:v1", "--replicas", "0")
	verbose := []string{"WARREN_VERBOSE=1"}

	t.Run("leader's host powered off", func(t *testing.T) {
		lead, others := leaderAndOthers(t, h, 3)
		via := others[len(others)-1]
		cfg := filepath.Join(h.Dir, "user-cli-1")
		userConfig(t, lead, cfg, managerAddrs(append([]*cluster.Host{lead}, others...)...)...)
		must(t, lead.PowerOff())
		for i, args := range [][]string{{"cluster", "info"}, {"service", "scale", "probe=1"}} {
			out, took, err := hostCLI(via, cfg, verbose, append([]string{"--timeout", "5s"}, args...)...)
			t.Logf("%s on %s, %s after the power-off: %s\n%s", strings.Join(args, " "), via.Name, lead.Name, took, out)
			must(t, err)
			if i > 0 {
				continue
			}
			// The dead manager was probed and dropped, and the request went
			// to a live one.
			var probed, asked bool
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "probe manager") && strings.Contains(l, `"`+lead.IP+`:4280"`) {
					probed = true
					if !strings.Contains(l, `"error"`) {
						t.Errorf("the probe of the dead manager did not fail: %s", l)
					}
				}
				if strings.Contains(l, "\trequest\t") {
					asked = true
					if strings.Contains(l, `"`+lead.IP+`:4280"`) {
						t.Errorf("a request went to the dead manager: %s", l)
					}
				}
			}
			if !probed || !asked {
				t.Fatalf("the CLI's verbose log shows no probe of %s or no request:\n%s", lead.IP, out)
			}
		}
		rebootManager(t, lead, via, 4, 3)
	})

	t.Run("leader's host hangs on its way down", func(t *testing.T) {
		lead, others := leaderAndOthers(t, h, 3)
		via := others[0]
		cfg := filepath.Join(h.Dir, "user-cli-2")
		userConfig(t, lead, cfg, managerAddrs(append([]*cluster.Host{lead}, others...)...)...)
		must(t, lead.PowerOff())
		stop := hangOn(t, lead)
		for _, args := range [][]string{{"cluster", "info"}, {"service", "scale", "probe=0"}} {
			out, took, err := hostCLI(via, cfg, verbose, append([]string{"--timeout", "5s"}, args...)...)
			t.Logf("%s on %s, %s hanging: %s\n%s", strings.Join(args, " "), via.Name, lead.Name, took, out)
			if err != nil {
				t.Fatalf("%v: the CLI waited on the hanging manager", err)
			}
		}
		stop()
		rebootManager(t, lead, via, 4, 3)
	})
}
