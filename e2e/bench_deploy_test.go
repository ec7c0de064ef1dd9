package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// TestBenchDeploy measures issue 12's figures on 3 managers (`go tool task
// bench`): a blue/green switch and a rollback in its grace period, each
// until every node answers the new (or old) version only, over 20 trials;
// and a rolling update of 30 replicas against Docker Swarm's on the same
// image pair, started in the same run on the same hosts.
func TestBenchDeploy(t *testing.T) {
	if os.Getenv("WARREN_BENCH") == "" {
		t.Skip("benchmarks run with WARREN_BENCH=1 (go tool task bench)")
	}
	h, targets := deployCluster(t, 3, "--log-level", "info")
	m0 := h.Hosts[0]
	var ports []loadTarget // per-request timing: each node's published port
	for _, tg := range targets {
		if tg.task == "" {
			ports = append(ports, tg)
		}
	}
	type row struct{ name, warren, base, ratio, target string }
	var rows []row

	// 1, 2: switch and rollback, one of each per trial: a manual
	// blue/green to the other version, promote (the switch), then
	// rollback inside the grace period.
	const trials = 20
	var switches, rollbacks, rollbackCommits []time.Duration
	cur, next := "v1", "v2"
	for i := 0; i < trials; i++ {
		if _, stderr, err := m0.CLI("service", "update", "web", "--image", "demo:"+next, "--strategy", "blue-green",
			"--switch-after", "manual", "--grace", "60s", "--detach"); err != nil {
			t.Fatalf("trial %d: update: %v: %s", i, err, stderr)
		}
		waitDeployment(t, m0, "web", 2*time.Minute, stAwaitProm)
		l := startLoad(ports, 0)
		time.Sleep(300 * time.Millisecond)
		svc := &messages.Service{}
		must(t, jsonOf(cli(t, m0, "service", "promote", "web", "-o", "json"), svc))
		switched := time.Unix(0, svc.GetDeployment().GetStateSinceUnixNano())
		waitDeployment(t, m0, "web", 30*time.Second, stGrace)
		time.Sleep(500 * time.Millisecond)
		cmd := time.Now()
		svc = &messages.Service{}
		must(t, jsonOf(cli(t, m0, "service", "rollback", "web", "-o", "json"), svc))
		rolledCommit := time.Unix(0, svc.GetDeployment().GetStateSinceUnixNano())
		waitDeployment(t, m0, "web", 30*time.Second, stRolledBack)
		time.Sleep(500 * time.Millisecond)
		l.Stop()
		sw, err := allSwitched(l.between(switched.Add(-time.Second), cmd), cur, next, switched)
		if err != nil {
			t.Fatalf("trial %d: switch: %v", i, err)
		}
		rb, err := allSwitched(l.between(cmd.Add(-time.Second), time.Now()), next, cur, cmd)
		if err != nil {
			t.Fatalf("trial %d: rollback: %v", i, err)
		}
		switches, rollbacks, rollbackCommits = append(switches, sw), append(rollbacks, rb), append(rollbackCommits, rb-rolledCommit.Sub(cmd))
		eventually(t, time.Minute, "green removed", func() error { return onVersion(t, m0, "web", "demo:"+cur, 3) })
	}
	ms := func(ds []time.Duration, p float64) string { return percentile(ds, p).Round(time.Millisecond).String() }
	rows = append(rows,
		row{fmt.Sprintf("blue->green switch: commit to every node answering green only, p50 (%d trials)", trials), ms(switches, 0.5), "-", "-", "-"},
		row{"  same, p99", ms(switches, 0.99), "-", "-", "< 1s"},
		row{fmt.Sprintf("rollback in grace: command to every node answering blue only, p50 (%d trials)", trials), ms(rollbacks, 0.5), ms(rollbackCommits, 0.5) + " (from its commit)", "-", "-"},
		row{"  same, p99", ms(rollbacks, 0.99), ms(rollbackCommits, 0.99) + " (from its commit)", "-", "< 1s"})

	// 3: a rolling update of 30 replicas, parallelism 5, health checked
	// every second, monitor 5 s (Swarm's default) on both.
	cli(t, m0, "service", "rm", "client")
	cli(t, m0, "service", "scale", "web=30", "--wait", "--wait-timeout", "3m")
	t0 := time.Now()
	if _, stderr, err := m0.CLI("service", "update", "web", "--image", "demo:v2", "--strategy", "rolling",
		"--update-parallelism", "5", "--update-monitor", "5s", "--detach"); err != nil {
		t.Fatalf("rolling 30: %v: %s", err, stderr)
	}
	var done time.Time
	eventually(t, 10*time.Minute, "rolling update of 30 done", func() error {
		s := inspect(t, m0, "web")
		switch s.GetDeployment().GetState() {
		case stDone:
			done = time.Unix(0, s.GetDeployment().GetFinishedUnixNano())
			return nil
		case stRolledBack, stFailed:
			t.Fatalf("rolling 30 ended %s: %s", s.GetDeployment().GetState(), s.GetDeployment().GetMessage())
		}
		return fmt.Errorf("%s", s.GetDeployment().GetState())
	})
	wr := done.Sub(t0)
	cli(t, m0, "service", "rm", "web")
	eventually(t, 2*time.Minute, "warren's tasks gone", func() error {
		for _, n := range h.Hosts[:3] {
			if c, err := containersErr(n); err != nil || len(c) > 0 {
				return fmt.Errorf("%s: %d containers (%v)", n.Name, len(c), err)
			}
		}
		return nil
	})
	// Warren stops too: Swarm gets the hosts to itself.
	for _, n := range h.Hosts[:3] {
		must(t, n.Kill(syscall.SIGTERM, 30*time.Second))
	}
	sr, note := swarmRolling(t, h)
	base, ratio := "skipped: "+note, "-"
	if sr > 0 {
		base, ratio = sr.Round(time.Millisecond).String()+" (Docker Swarm)", fmt.Sprintf("%.2f", float64(wr)/float64(sr))
	}
	rows = append(rows, row{"rolling update of 30 replicas, parallelism 5, health every 1s, monitor 5s: to done", wr.Round(time.Millisecond).String(), base, ratio, "<= 0.5"})

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nDEPLOYMENT BENCHMARK\tWARREN\tBASELINE (same run)\tRATIO\tTARGET")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.name, r.warren, r.base, r.ratio, r.target)
	}
	tw.Flush()
}

// allSwitched returns how long after t0 every node answered only version
// to: the latest, over nodes, of the first answer after that node's last
// answer of from.
func allSwitched(as []answer, from, to string, t0 time.Time) (time.Duration, error) {
	nodes := 3
	last := lastOf(as, from, nodes)
	var worst time.Duration
	for n := 0; n < nodes; n++ {
		var first time.Time
		for _, a := range as {
			if a.node == n && a.err == nil && a.version == to && a.at.After(last[n]) && (first.IsZero() || a.at.Before(first)) {
				first = a.at
			}
		}
		if first.IsZero() {
			return 0, fmt.Errorf("node %d never answered %s only (%v)", n, to, tally(as))
		}
		worst = max(worst, first.Sub(t0))
	}
	return worst, nil
}

// swarmRolling runs the same rolling update with Docker Swarm on the
// harness's first 3 hosts: one dockerd per host, each with the containerd
// it starts itself under the host's own directories, 3 managers, images
// from a registry on the switch, --endpoint-mode dnsrr (no IPVS here). It
// returns the time from `docker service update` to Swarm's update state
// "completed", or 0 and why it could not run.
func swarmRolling(t *testing.T, h *cluster.Harness) (time.Duration, string) {
	t.Helper()
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		return 0, "no dockerd (Debian's docker.io; `go tool task setup:docker` installs it)"
	}
	docker := "/usr/bin/docker" // the CLI of the same package
	if _, err := os.Stat(docker); err != nil {
		if docker, err = exec.LookPath("docker"); err != nil {
			return 0, "no docker CLI"
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(h.Gateway(), "0"))
	if err != nil {
		return 0, "registry: " + err.Error()
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // closed below
	defer srv.Close()
	reg := ln.Addr().String()
	pushOCITar(t, demoV1, reg+"/demo:v1", filepath.Join(h.Dir, "layout-v1"))
	pushOCITar(t, demoV2, reg+"/demo:v2", filepath.Join(h.Dir, "layout-v2"))

	var socks []string
	for i, n := range h.Hosts[:3] {
		dir := filepath.Join(h.Dir, fmt.Sprintf("d%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err.Error()
		}
		sock := filepath.Join(dir, "docker.sock")
		logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
		if err != nil {
			return 0, err.Error()
		}
		defer logf.Close()
		cmd := exec.Command("nsenter", "-t", strconv.Itoa(n.InitPid), "--net", "--mount", "--pid", "--uts", "--",
			dockerd, "--data-root", filepath.Join(dir, "root"), "--exec-root", filepath.Join(dir, "exec"),
			"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://"+sock, "--insecure-registry", reg,
			"--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", fmt.Sprintf("/wrn-swarm-%s-%d", h.ID, i))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return 0, "dockerd: " + err.Error()
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = waitTimeout(cmd, 30*time.Second)
			// dockerd leaves its --cgroup-parent behind, with a container's
			// (empty) cgroup under it if one outlived its service.
			parent := fmt.Sprintf("/sys/fs/cgroup/*/wrn-swarm-%s-%d", h.ID, i)
			for _, pat := range []string{parent + "/*", parent} {
				dirs, _ := filepath.Glob(pat)
				for _, dir := range dirs {
					_ = os.Remove(dir) // only a directory: cgroup files cannot be removed
				}
			}
		}()
		socks = append(socks, sock)
		ok := false
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if exec.Command(docker, "-H", "unix://"+sock, "info").Run() == nil {
				ok = true
				break
			}
		}
		if !ok {
			b, _ := os.ReadFile(logf.Name())
			return 0, fmt.Sprintf("dockerd on %s did not start: %s", n.Name, lastLine(string(b)))
		}
	}
	d := func(i int, args ...string) (string, error) {
		out, err := exec.Command(docker, append([]string{"-H", "unix://" + socks[i]}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := d(0, "swarm", "init", "--advertise-addr", h.Hosts[0].IP); err != nil {
		return 0, "swarm init: " + out
	}
	tok, err := d(0, "swarm", "join-token", "-q", "manager")
	if err != nil {
		return 0, "join-token: " + tok
	}
	for i := 1; i < 3; i++ {
		if out, err := d(i, "swarm", "join", "--token", tok, "--advertise-addr", h.Hosts[i].IP, h.Hosts[0].IP+":2377"); err != nil {
			return 0, "swarm join: " + out
		}
	}
	defer func() {
		_, _ = d(0, "service", "rm", "web")
		time.Sleep(5 * time.Second)
		for i := range socks {
			_, _ = d(i, "swarm", "leave", "--force")
		}
	}()
	// The service is created through the Engine API, not `docker service
	// create`: the CLI's --health-cmd is always CMD-SHELL, which runs
	// /bin/sh in the container, and the test image has only /app. Every
	// check would fail, Swarm would replace every task and 30 replicas
	// would never all run. The exec form is the check warren's tasks get.
	spec := map[string]any{
		"Name": "web",
		"TaskTemplate": map[string]any{"ContainerSpec": map[string]any{
			"Image":           reg + "/demo:v1",
			"StopGracePeriod": (2 * time.Second).Nanoseconds(),
			"Healthcheck": map[string]any{"Test": []string{"CMD", "/app", "-probe", "http://127.0.0.1/healthz"},
				"Interval": time.Second.Nanoseconds(), "Retries": 1},
		}},
		"Mode":         map[string]any{"Replicated": map[string]any{"Replicas": 30}},
		"UpdateConfig": map[string]any{"Parallelism": 5, "Monitor": (5 * time.Second).Nanoseconds(), "FailureAction": "pause", "Order": "stop-first"},
		"EndpointSpec": map[string]any{"Mode": "dnsrr"},
	}
	if err := dockerAPI(socks[0], "/services/create", spec); err != nil {
		return 0, "service create: " + err.Error()
	}
	created, converged := time.Now(), false
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, _ := d(0, "service", "ls", "--filter", "name=web", "--format", "{{.Replicas}}"); out == "30/30" {
			converged = true
			break
		}
	}
	if !converged {
		out, _ := d(0, "service", "ps", "web", "--no-trunc")
		t.Logf("Swarm's tasks of web:\n%s", out)
		return 0, "30 replicas of v1 did not run under Swarm in 5 minutes: " + swarmWhy(d, len(socks))
	}
	t.Logf("Swarm ran 30 replicas of v1 in %s", time.Since(created).Round(time.Second))
	t0 := time.Now()
	if out, err := d(0, "service", "update", "--detach", "--image", reg+"/demo:v2", "web"); err != nil {
		return 0, "service update: " + out
	}
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, _ := d(0, "service", "inspect", "web", "--format", "{{json .UpdateStatus}}")
		var st struct {
			State       string
			CompletedAt time.Time
			Message     string
		}
		_ = json.Unmarshal([]byte(out), &st) // "null" until Swarm starts the update
		switch st.State {
		case "completed":
			// Swarm's own time of completion, as warren's row takes its
			// deployment's: not when this poll noticed.
			if st.CompletedAt.After(t0) {
				return st.CompletedAt.Sub(t0), ""
			}
			return time.Since(t0), ""
		case "paused", "rollback_started", "rollback_completed", "rollback_paused":
			return 0, "Swarm's update ended " + st.State + ": " + st.Message
		}
	}
	return 0, "Swarm's update did not complete in 10 minutes: " + swarmWhy(d, len(socks))
}

// dockerAPI posts body as JSON to a dockerd's Engine API on its socket.
func dockerAPI(sock, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Post("http://docker"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// swarmWhy says in a line why web's tasks do not run: the task errors
// Swarm recorded, else the last health check output of a container of
// web on any host, else the tasks' states.
func swarmWhy(d func(int, ...string) (string, error), hosts int) string {
	seen := map[string]bool{}
	var why []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" && !seen[s] {
			seen[s] = true
			why = append(why, s)
		}
	}
	out, _ := d(0, "service", "ps", "web", "--no-trunc", "--format", "{{.Error}}")
	for _, l := range strings.Split(out, "\n") {
		add(l)
	}
	for i := 0; i < hosts && len(why) == 0; i++ {
		ids, _ := d(i, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name=web")
		for _, id := range strings.Fields(ids) {
			js, _ := d(i, "inspect", id, "--format", "{{json .State.Health}}")
			var health struct {
				Log []struct {
					ExitCode int
					Output   string
				}
			}
			if json.Unmarshal([]byte(js), &health) == nil {
				if n := len(health.Log); n > 0 && health.Log[n-1].ExitCode != 0 {
					add("health check: " + lastLine(health.Log[n-1].Output))
					break
				}
			}
		}
	}
	if len(why) == 0 {
		states, _ := d(0, "service", "ps", "web", "--format", "{{.CurrentState}}")
		counts := map[string]int{}
		for _, l := range strings.Split(states, "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				counts[f[0]]++
			}
		}
		return fmt.Sprintf("no task error or failed health check; task states %v", counts)
	}
	if len(why) > 3 {
		why = append(why[:3], fmt.Sprintf("and %d more", len(why)-3))
	}
	return strings.Join(why, "; ")
}

func waitTimeout(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		return <-done
	}
}
