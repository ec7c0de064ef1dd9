package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

const (
	stDone       = messages.DeploymentState_DEPLOYMENT_STATE_DONE
	stRolledBack = messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK
	stFailed     = messages.DeploymentState_DEPLOYMENT_STATE_FAILED
	stGrace      = messages.DeploymentState_DEPLOYMENT_STATE_GRACE
	stWeighted   = messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED
	stAwaitProm  = messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION
	stMonitoring = messages.DeploymentState_DEPLOYMENT_STATE_MONITORING
	stAwaitHlth  = messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH
	stPromoting  = messages.DeploymentState_DEPLOYMENT_STATE_PROMOTING
	stGreen      = messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_GREEN
)

// deployCluster is TestDeployments' (and the deployment benchmarks')
// setup: hosts 0-2 are 3 managers that also run tasks, host 3 runs no
// warren and stands for a client outside the cluster. web runs demo:v1,
// published on 8080, health-checked every second. The load's targets: each
// node's VIP rules (from the node itself) and each node's published port
// (from the outside host).
func deployCluster(t *testing.T, replicas int, extra ...string) (*cluster.Harness, []loadTarget) {
	t.Helper()
	v2, v2bad := deployImages(t)
	h := cluster.New(t, cluster.Options{Hosts: 4, Bin: warrenBin})
	m0 := h.Hosts[0]
	must(t, m0.StartAndWait(90*time.Second, extra...))
	mtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "manager", "-q"))
	for _, m := range h.Hosts[1:3] {
		m.SetJoin(mtok, m0.JoinAddr())
		must(t, m.Start(extra...))
	}
	waitNodes(t, m0, 3, 3)
	for _, img := range []string{demoV1, v2, v2bad} {
		cli(t, m0, "image", "import", img)
	}
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", fmt.Sprint(replicas), "--publish", "8080:80",
		"--health-cmd", "http GET /healthz", "--health-interval", "1s", "--health-retries", "1", "--stop-grace-period", "2s",
		"--wait", "--wait-timeout", "2m")
	// The VIP is asked from tasks, as services use it: a client task on
	// every node.
	cli(t, m0, "service", "create", "client", "--image", "demo:v1", "--mode", "global", "--wait")
	clients := map[string]string{}
	for _, tk := range running(tasks(t, m0, "client", false)) {
		clients[tk.NodeId] = tk.Id
	}
	vip := inspect(t, m0, "web").Vip
	var targets []loadTarget
	for i, n := range h.Hosts[:3] {
		if clients[n.NodeID()] == "" {
			t.Fatalf("no client task on %s", n.Name)
		}
		targets = append(targets,
			loadTarget{name: "vip@" + n.Name, from: n, task: clients[n.NodeID()], url: "http://" + vip + "/", node: i},
			loadTarget{name: "port@" + n.Name, from: h.Hosts[3], url: "http://" + n.IP + ":8080/", node: i})
	}
	// Every path answers before the load starts counting.
	eventually(t, 60*time.Second, "every node's VIP and published port answer", func() error {
		if f := failures(burst(targets, 60)); len(f) > 0 {
			return fmt.Errorf("%d of 60 failed: %v", len(f), f[0].err)
		}
		return nil
	})
	return h, targets
}

// TestDeployments is issue 12's acceptance on 3 managers under continuous
// load (through every node's VIP rules and published port, from another
// host): rolling, rolling to a version that never gets healthy, blue/green
// with a rollback in its grace period and to done, canary weights and
// promotion, bad input, and the leader killed in the middle of each
// strategy. One cluster, one case after the other; each leaves web
// converged with nothing in flight.
func TestDeployments(t *testing.T) {
	h, targets := deployCluster(t, 6)
	m0 := h.Hosts[0]
	l := startLoad(targets, 10*time.Millisecond)
	defer l.Stop()
	w := watchDeployment(t, h.Hosts[1], "web")
	update := func(via *cluster.Host, args ...string) (string, error) {
		_, stderr, err := via.CLI(append([]string{"service", "update", "web", "--wait-timeout", "3m"}, args...)...)
		return stderr, err
	}
	// noFailures fails the test for any failed request started in [from, to).
	noFailures := func(t *testing.T, from, to time.Time) {
		t.Helper()
		as := l.between(from, to)
		f := failures(as)
		t.Logf("%d requests, by version %v", len(as), tally(as))
		if len(f) > 0 {
			t.Errorf("%d of %d requests failed:\n%s", len(f), len(as), describeFailures(f, from))
		}
	}
	settled := func(t *testing.T, via *cluster.Host, image string, replicas int) {
		t.Helper()
		eventually(t, 90*time.Second, "web converged on "+image, func() error {
			if err := onVersion(t, via, "web", image, replicas); err != nil {
				return err
			}
			return converged(t, h, via, "web", replicas)
		})
	}

	t.Run("rolling to a version that never gets healthy rolls back", func(t *testing.T) {
		t0 := time.Now()
		stderr, err := update(m0, "--image", "demo:v2bad", "--update-monitor", "2s")
		if err == nil || !strings.Contains(stderr, "rolled back") {
			t.Fatalf("update to a never-healthy version: want a non-zero exit saying it rolled back, got %v: %s", err, stderr)
		}
		t.Logf("update --wait said: %s", strings.TrimSpace(lastLine(stderr)))
		svc := waitDeployment(t, m0, "web", time.Minute, stRolledBack)
		if svc.Spec.Image != "demo:v1" {
			t.Fatalf("after the rollback the spec runs %s, want demo:v1", svc.Spec.Image)
		}
		settled(t, m0, "demo:v1", 6)
		time.Sleep(time.Second)
		// Requests may fail only while the failing version was deployed:
		// from the update to the committed rollback's end.
		start := w.first(stAwaitHlth, t0)
		end := w.first(stRolledBack, t0)
		if start.IsZero() || end.IsZero() {
			t.Fatalf("watcher missed the states: %v", w.states(t0))
		}
		as := l.between(t0, time.Now())
		var outside []answer
		for _, a := range failures(as) {
			if a.at.Before(start) || a.at.After(end.Add(time.Second)) {
				outside = append(outside, a)
			}
		}
		t.Logf("states %v; %d requests %v; window %s", w.states(t0), len(as), tally(as), end.Sub(start).Round(time.Millisecond))
		if len(outside) > 0 {
			t.Errorf("%d requests failed outside the window:\n%s", len(outside), describeFailures(outside, t0))
		}
		if v := tally(l.between(end.Add(time.Second), time.Now())); v["v2"] > 0 {
			t.Errorf("v2 answered after the rollback: %v", v)
		}
	})

	t.Run("rolling v1 to v2 of 6 replicas", func(t *testing.T) {
		t0 := time.Now()
		if stderr, err := update(m0, "--image", "demo:v2", "--update-monitor", "2s"); err != nil {
			t.Fatalf("update: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 10*time.Second, stDone)
		settled(t, m0, "demo:v2", 6)
		time.Sleep(time.Second)
		t.Logf("took %s; states %v", time.Since(t0).Round(time.Second), w.states(t0))
		// The default parallelism is 1: one slot out of service at a time.
		if b := w.maxBatch(t0); b != 1 {
			t.Errorf("an update without --update-parallelism moved %d slots in one batch, want 1 (the default)", b)
		}
		noFailures(t, t0, time.Now())
		if v := tally(burst(targets, 300)); v["v2"] < 250 || len(v) != 1 {
			t.Errorf("after the update: %v, want v2 only", v)
		}
	})

	t.Run("blue/green: rollback in the grace period switches back at once on every node", func(t *testing.T) {
		// web runs v2: green is v1 here, blue v2.
		t0 := time.Now()
		if stderr, err := update(m0, "--image", "demo:v1", "--strategy", "blue-green", "--grace", "60s", "--detach"); err != nil {
			t.Fatalf("update: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 90*time.Second, stGrace)
		grace := w.first(stGrace, t0)
		time.Sleep(1500 * time.Millisecond)
		if v := tally(l.between(grace.Add(100*time.Millisecond), time.Now())); v["v2"] > 0 || v["failed"] > 0 || v["v1"] == 0 {
			t.Errorf("after the switch (grace committed): %v, want v1 only", v)
		}
		cmd := time.Now()
		cli(t, m0, "service", "rollback", "web")
		answered := time.Now()
		waitDeployment(t, m0, "web", 30*time.Second, stRolledBack)
		time.Sleep(1500 * time.Millisecond)
		last := lastOf(l.between(cmd, time.Now()), "v1", 3)
		for i, at := range last {
			d := time.Duration(0)
			if !at.IsZero() {
				d = at.Sub(cmd)
			}
			t.Logf("%s: last green (v1) answer %s after the rollback command (which returned after %s)", h.Hosts[i].Name, d.Round(time.Millisecond), answered.Sub(cmd).Round(time.Millisecond))
			if d > time.Second {
				t.Errorf("%s still answered with green %s after the rollback command", h.Hosts[i].Name, d.Round(time.Millisecond))
			}
		}
		settled(t, m0, "demo:v2", 6)
		noFailures(t, t0, time.Now())
	})

	t.Run("blue/green to done", func(t *testing.T) {
		t0 := time.Now()
		if stderr, err := update(m0, "--image", "demo:v1", "--strategy", "blue-green", "--grace", "3s"); err != nil {
			t.Fatalf("update: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 10*time.Second, stDone)
		settled(t, m0, "demo:v1", 6)
		time.Sleep(time.Second)
		grace := w.first(stGrace, t0)
		if grace.IsZero() {
			t.Fatalf("watcher missed grace: %v", w.states(t0))
		}
		if v := tally(l.between(grace.Add(100*time.Millisecond), time.Now())); v["v2"] > 0 || v["failed"] > 0 {
			t.Errorf("after the switch: %v, want v1 only", v)
		}
		t.Logf("took %s; states %v", time.Since(t0).Round(time.Second), w.states(t0))
		noFailures(t, t0, time.Now())
	})

	t.Run("canary: weights 10 and 50, then promote", func(t *testing.T) {
		cli(t, m0, "service", "scale", "web=5", "--wait")
		settled(t, m0, "demo:v1", 5)
		t0 := time.Now()
		stderr, err := update(m0, "--image", "demo:v2", "--strategy", "canary", "--canary-replicas", "1", "--weight", "10")
		if err != nil {
			t.Fatalf("update: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 10*time.Second, stWeighted)
		share := func(want, tol float64) {
			time.Sleep(time.Second) // each node's rules follow the commit
			as := burst(targets, 2400)
			v := tally(as)
			got := percentShare(v, "v2")
			t.Logf("weight %.0f: %v over %d requests: v2 %.1f%%", want, v, len(as), got)
			if got < want-tol || got > want+tol || v["failed"] > 0 {
				t.Errorf("weight %.0f: v2 got %.1f%% of requests (%v), want %.0f%% ± %.0f", want, got, v, want, tol)
			}
		}
		share(10, 3)
		cli(t, m0, "service", "promote", "web", "--weight", "50")
		share(50, 5)
		if _, stderr, err := m0.CLI("service", "promote", "web", "--wait", "--wait-timeout", "3m"); err != nil {
			t.Fatalf("promote: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 10*time.Second, stDone)
		settled(t, m0, "demo:v2", 5)
		time.Sleep(time.Second)
		if v := tally(burst(targets, 300)); v["v2"] < 250 || len(v) != 1 {
			t.Errorf("after promote: %v, want v2 only", v)
		}
		for _, tk := range running(tasks(t, m0, "web", false)) {
			if tk.Side == "canary" || tk.Slot > 5 {
				t.Errorf("after promote, task %s still slot %d side %q", tk.Id, tk.Slot, tk.Side)
			}
		}
		t.Logf("states %v", w.states(t0))
		noFailures(t, t0, time.Now())
	})

	t.Run("bad input: a clear error, raft index unchanged", func(t *testing.T) {
		// Each case: the command, what its error must say. The raft index
		// and the service's version are read right before and after.
		// The cluster's index also moves with unrelated writes (task and
		// node status), so a refusal gets three tries to show it unmoved:
		// a refusal that wrote would move it every time. The service's own
		// version (the raft index of its last write) must never move.
		refused := func(t *testing.T, want string, args ...string) {
			t.Helper()
			var moved []string
			for try := 0; try < 3; try++ {
				before, sv := clusterIndex(t, m0), inspect(t, m0, "web").Meta.GetVersion()
				_, stderr, err := m0.CLI(args...)
				after, sa := clusterIndex(t, m0), inspect(t, m0, "web").Meta.GetVersion()
				if err == nil || !strings.Contains(stderr, want) {
					t.Fatalf("%v: want an error saying %q, got %v: %s", args, want, err, stderr)
				}
				if sv != sa {
					t.Fatalf("%v: the service's version moved %d -> %d: a refusal changed it", args, sv, sa)
				}
				if before == after {
					t.Logf("%v: %s", args[1:], strings.TrimSpace(lastLine(stderr)))
					return
				}
				moved = append(moved, fmt.Sprintf("%d -> %d", before, after))
			}
			t.Errorf("%v: the raft index moved on every try: %v", args, moved)
		}
		refused(t, "nothing to update", "service", "update", "web", "--image", "demo:v2")
		refused(t, "no deployment in flight", "service", "promote", "web")
		refused(t, "no deployment in flight", "service", "promote", "web", "--weight", "20")
		refused(t, "invalid --weight 0", "service", "promote", "web", "--weight", "0")
		refused(t, "invalid --weight 101", "service", "promote", "web", "--weight", "101")
		refused(t, "invalid --weight", "service", "update", "web", "--image", "demo:v1", "--strategy", "canary", "--weight", "150")

		// A manual blue/green waits for promote: in flight, and quiet.
		if stderr, err := update(m0, "--image", "demo:v1", "--strategy", "blue-green", "--switch-after", "manual", "--detach"); err != nil {
			t.Fatalf("update: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 90*time.Second, stAwaitProm)
		refused(t, "in flight", "service", "update", "web", "--image", "demo:v2bad")
		refused(t, "promote", "service", "promote", "web", "--weight", "50")
		// The server checks the weight too (a client that skips the CLI).
		cl, err := client.Dial(client.Options{ConfigDir: m0.ConfigDir, Managers: []string{m0.IP + ":4280"}})
		must(t, err)
		before := clusterIndex(t, m0)
		if _, err := cl.PromoteService("web", 150, false); err == nil || !strings.Contains(err.Error(), "outside 1-100") {
			t.Errorf("server-side promote with weight 150: %v", err)
		}
		cl.Close()
		if after := clusterIndex(t, m0); after != before {
			t.Errorf("refused weight 150 moved the raft index %d -> %d", before, after)
		}
		cli(t, m0, "service", "rollback", "web", "--wait")
		settled(t, m0, "demo:v2", 5)

		// A rolling deployment held in its monitor window.
		if stderr, err := update(m0, "--image", "demo:v1", "--strategy", "rolling", "--update-monitor", "60s", "--detach"); err != nil {
			t.Fatalf("update: %v: %s", err, stderr)
		}
		waitDeployment(t, m0, "web", 60*time.Second, stMonitoring)
		refused(t, "rolling deployment", "service", "promote", "web")
		refused(t, "in flight", "service", "update", "web", "--image", "demo:v2bad")
		cli(t, m0, "service", "rollback", "web", "--wait")
		settled(t, m0, "demo:v2", 5)
	})

	// The leader dies in the middle of each strategy: the new leader's
	// deployment actor resumes and completes it; containerd on every node
	// runs exactly what warren says.
	killLeader := func(t *testing.T) *cluster.Host {
		t.Helper()
		old := byNodeID(h, leader(t, m0))
		var via *cluster.Host
		for _, m := range h.Hosts[:3] {
			if m != old {
				via = m
				break
			}
		}
		must(t, old.Kill(syscall.SIGKILL, 10*time.Second))
		eventually(t, 30*time.Second, "a new leader", func() error {
			if l := leader(t, via); l == "" || l == old.NodeID() {
				return fmt.Errorf("leader %q", l)
			}
			return nil
		})
		must(t, old.StartAndWait(90*time.Second))
		t.Logf("killed the leader %s; new leader %s", old.Name, byNodeID(h, leader(t, via)).Name)
		return via
	}
	leaderKill := []struct {
		name    string
		image   string
		args    []string
		waitFor func(t *testing.T, s *messages.Service) error // the moment to kill
	}{
		{"rolling", "demo:v1", []string{"--strategy", "rolling", "--update-parallelism", "2", "--update-monitor", "2s"},
			func(t *testing.T, s *messages.Service) error {
				if len(s.GetDeployment().GetUpdated()) < 2 {
					return fmt.Errorf("%d slots updated", len(s.GetDeployment().GetUpdated()))
				}
				return nil
			}},
		{"blue-green", "demo:v2", []string{"--strategy", "blue-green", "--grace", "3s"},
			func(t *testing.T, s *messages.Service) error {
				if s.GetDeployment().GetState() != stGreen {
					return fmt.Errorf("state %s", s.GetDeployment().GetState())
				}
				n := 0
				for _, tk := range running(tasks(t, m0, "web", false)) {
					if tk.Side == "green" {
						n++
					}
				}
				if n < 2 {
					return fmt.Errorf("%d green running", n)
				}
				return nil
			}},
		{"canary", "demo:v1", []string{"--strategy", "canary", "--weight", "20", "--update-parallelism", "2", "--update-monitor", "2s"}, nil},
	}
	for _, c := range leaderKill {
		t.Run("leader killed during "+c.name, func(t *testing.T) {
			// Each case starts from a settled service and deploys the
			// other version, whatever an earlier case left.
			cur := waitDeployment(t, m0, "web", 3*time.Minute, stDone, stRolledBack, stFailed)
			if cur.Spec.Image == c.image {
				c.image = map[string]string{"demo:v1": "demo:v2", "demo:v2": "demo:v1"}[c.image]
			}
			settled(t, m0, cur.Spec.Image, 5)
			t0 := time.Now()
			if c.waitFor != nil {
				if stderr, err := update(m0, append([]string{"--image", c.image, "--detach"}, c.args...)...); err != nil {
					t.Fatalf("update: %v: %s", err, stderr)
				}
				eventually(t, 90*time.Second, "the moment to kill the leader", func() error { return c.waitFor(t, inspect(t, m0, "web")) })
			} else {
				// The canary: weighted, then a full promote, killed while
				// it rolls the stable replicas.
				if stderr, err := update(m0, append([]string{"--image", c.image}, c.args...)...); err != nil {
					t.Fatalf("update: %v: %s", err, stderr)
				}
				cli(t, m0, "service", "promote", "web")
				waitDeployment(t, m0, "web", 30*time.Second, stPromoting, stAwaitHlth, stMonitoring)
			}
			via := killLeader(t)
			svc := waitDeployment(t, via, "web", 3*time.Minute, stDone, stRolledBack, stFailed)
			if svc.Deployment.State != stDone {
				t.Fatalf("after the failover the deployment ended %s: %s", svc.Deployment.State, svc.Deployment.Message)
			}
			waitNodes(t, via, 3, 3)
			settled(t, via, c.image, 5)
			as := l.between(t0, time.Now())
			t.Logf("took %s; states %v; %d requests %v", time.Since(t0).Round(time.Second), w.states(t0), len(as), tally(as))
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
