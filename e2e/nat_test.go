package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
)

// TestCLIBehindNAT is issue 14's acceptance for "the CLI works from where
// operators sit": the real CLI runs in a namespace that is not a node and
// reaches the cluster only through a masquerading router that forwards
// nothing but TCP to the manager's remoting port, as a laptop behind NAT
// or an `ssh -L` tunnel does. Every command works, `events -f` and
// `logs -f` included. Before the gateway, replies came on a connection the
// manager dialled back to the CLI's address, which no packet from the
// manager can reach here: every command timed out.
//
// It also logs `service ls` latency (p50 of 20) run directly on the
// manager's host and behind the NAT. With WARREN_E2E_OLD_CLI naming a CLI
// built before the gateway, it checks that one gets no answer behind the
// NAT (the control) and logs its direct latency too.
func TestCLIBehindNAT(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 2, Bin: warrenBin})
	formCluster(t, h, 1)
	m0, w1 := h.Hosts[0], h.Hosts[1]
	cli(t, m0, "image", "import", demoV1)

	nat, err := h.AddNAT(m0.IP + ":4280")
	must(t, err)
	// The network is what the test says: the manager's remoting port and
	// nothing else, not even the manager's join port or the worker.
	must(t, nat.Dial(m0.IP+":4280", 3*time.Second))
	for _, addr := range []string{m0.IP + ":4282", w1.IP + ":4280", nat.RouterIP + ":4280"} {
		if err := nat.Dial(addr, 2*time.Second); err == nil {
			t.Fatalf("the client behind the NAT reached %s", addr)
		}
	}

	cfg := filepath.Join(h.Dir, "nat-cli")
	userConfig(t, m0, cfg, m0.IP+":4280")
	env := append(os.Environ(), "WARREN_CONFIG_DIR="+cfg)
	run := func(args ...string) string {
		t.Helper()
		out, err := nat.Exec(env, append([]string{warrenBin, "--timeout", "20s"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// events -f from before the writes, to see one of them.
	events := nat.Command(env, warrenBin, "events", "-f", "-o", "json")
	evLines := follow(t, events)

	info := run("cluster", "info")
	if !strings.Contains(info, m0.NodeID()[:12]) {
		t.Fatalf("cluster info behind the NAT does not name the manager %s:\n%s", m0.NodeID(), info)
	}
	if out := run("node", "ls"); !strings.Contains(out, w1.NodeID()[:12]) {
		t.Fatalf("node ls behind the NAT does not list the worker:\n%s", out)
	}
	run("service", "create", "web", "--image", "demo:v1", "--replicas", "2")
	waitRunning(t, m0, "web", 2)
	if out := run("service", "ls"); !strings.Contains(out, "web") {
		t.Fatalf("service ls:\n%s", out)
	}
	if out := run("service", "ps", "web"); strings.Count(out, "web.") < 2 {
		t.Fatalf("service ps web shows fewer than 2 tasks:\n%s", out)
	}
	if out := run("service", "inspect", "web"); !strings.Contains(out, "demo:v1") {
		t.Fatalf("service inspect web:\n%s", out)
	}
	waitEvent(t, evLines, `"service.created"`, "web")

	// logs -f: lines the replicas wrote at start, then a new replica's.
	logs := nat.Command(env, warrenBin, "service", "logs", "-f", "web")
	logLines := follow(t, logs)
	waitEvent(t, logLines, "testapp starting", "")
	run("service", "scale", "web=3")
	waitRunning(t, m0, "web", 3)
	run("service", "update", "web", "--env-add", "BEHIND=nat")
	eventually(t, 90*time.Second, "the update rolled out", func() error {
		if !strings.Contains(run("service", "inspect", "web", "--pretty"), "BEHIND=nat") {
			return fmt.Errorf("spec without BEHIND=nat")
		}
		return nil
	})
	waitEvent(t, logLines, "env BEHIND=nat", "")
	stop(t, logs)

	run("service", "rm", "web")
	waitEvent(t, evLines, `"service.deleted"`, "web")
	stop(t, events)

	// The manager saw the router's address, never the client's own.
	ss, err := m0.Exec("ss", "-tnH", "state", "established", "( sport = :4280 )")
	must(t, err)
	if strings.Contains(ss, nat.ClientIP) {
		t.Fatalf("the manager saw the client's own address:\n%s", ss)
	}

	// Latency: service ls, p50 of 20, direct on the manager's host and
	// behind the NAT.
	lat := func(what string, do func() error) time.Duration {
		var ds []time.Duration
		for i := 0; i < 20; i++ {
			t0 := time.Now()
			must(t, do())
			ds = append(ds, time.Since(t0))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		t.Logf("service ls %s: p50 %s, min %s, max %s", what, ds[10].Round(time.Millisecond), ds[0].Round(time.Millisecond), ds[19].Round(time.Millisecond))
		return ds[10]
	}
	lat("direct", func() error { _, _, err := hostCLI(m0, m0.ConfigDir, nil, "service", "ls"); return err })
	lat("behind the NAT", func() error { _, err := nat.Exec(env, warrenBin, "service", "ls"); return err })
	if old := os.Getenv("WARREN_E2E_OLD_CLI"); old != "" {
		// The control: a CLI the manager must dial back gets no answer
		// here, so the commands above passing is the gateway's doing.
		if out, err := nat.Exec(env, old, "--timeout", "5s", "cluster", "info"); err == nil {
			t.Fatalf("the CLI from before the gateway worked behind the NAT:\n%s", out)
		} else {
			t.Logf("the CLI from before the gateway, behind the NAT: %v", err)
		}
		lat("direct, CLI before the gateway", func() error {
			_, err := m0.Exec("env", "WARREN_CONFIG_DIR="+m0.ConfigDir, old, "service", "ls")
			return err
		})
	}
}

// follow starts cmd and returns its output lines, stdout and stderr, as
// they come; the test's end kills it if stop did not.
func follow(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	r, w, err := os.Pipe()
	must(t, err)
	cmd.Stdout, cmd.Stderr = w, w
	must(t, cmd.Start())
	w.Close()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string, 100000)
	go func() {
		defer close(lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// waitEvent waits up to a minute for a line holding both strings.
func waitEvent(t *testing.T, lines <-chan string, a, b string) {
	t.Helper()
	var seen []string
	deadline := time.After(time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the follower ended before a line with %q and %q:\n%s", a, b, strings.Join(seen, "\n"))
			}
			if strings.Contains(l, a) && strings.Contains(l, b) {
				return
			}
			seen = append(seen, l)
		case <-deadline:
			t.Fatalf("no line with %q and %q within a minute; the last ones:\n%s", a, b, strings.Join(seen[max(0, len(seen)-20):], "\n"))
		}
	}
}

// stop ends a follower as Ctrl-C does; it must exit cleanly.
func stop(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	must(t, cmd.Process.Signal(syscall.SIGINT))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s did not end cleanly on SIGINT: %v", strings.Join(cmd.Args[2:], " "), err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s still running 15s after SIGINT", strings.Join(cmd.Args[2:], " "))
	}
}
