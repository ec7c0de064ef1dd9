package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// TestSingleNode is issue 4's acceptance run on one real host: init, real
// containers, the network, restarts, scaling, adoption after kill -9, actor
// crashes, deletion leaving nothing behind. The steps share one node because
// each builds on the state the previous one left.
func TestSingleNode(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 1, Bin: warrenBin})
	n := h.Hosts[0]
	// Metrics on, inside the host's own network namespace.
	must(t, n.StartAndWait(90*time.Second, "--metrics-addr", "127.0.0.1:9090"))

	out := cli(t, n, "image", "import", demoV1)
	if !strings.Contains(out, "docker.io/library/demo:v1") {
		t.Fatalf("import printed %q", out)
	}
	cli(t, n, "service", "create", "web", "--image", "demo:v1", "--replicas", "3", "--env", "GREETING=hi")
	web := waitRunning(t, n, "web", 3)

	t.Run("metrics parse and count the service", func(t *testing.T) {
		body, err := n.HTTPGet("http://127.0.0.1:9090/metrics", 5*time.Second)
		must(t, err)
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
		}
		// gauge is the value of the first series of name whose label
		// (if any) has value.
		gauge := func(name, label, value string) float64 {
			for _, m := range fams[name].GetMetric() {
				if label == "" || slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
					return m.GetGauge().GetValue()
				}
			}
			t.Fatalf("no %s{%s=%q} in /metrics", name, label, value)
			return 0
		}
		if got := gauge("warren_service_tasks_running", "service", "web"); got != 3 {
			t.Errorf("warren_service_tasks_running{service=web} = %v, want 3", got)
		}
		if got := gauge("warren_service_tasks_desired", "service", "web"); got != 3 {
			t.Errorf("warren_service_tasks_desired{service=web} = %v, want 3", got)
		}
		if got := gauge("warren_raft_leader", "", ""); got != 1 {
			t.Errorf("warren_raft_leader = %v on the only manager", got)
		}
		if got := gauge("warren_nodes", "state", "ready"); got != 1 {
			t.Errorf("warren_nodes{state=ready} = %v, want 1", got)
		}
		if _, ok := fams["go_goroutines"]; !ok {
			t.Error("the process metrics (go_goroutines) are missing")
		}
	})

	t.Run("node ps lists the node's tasks", func(t *testing.T) {
		for _, args := range [][]string{{"node", "ps"}, {"node", "ps", n.Name}} {
			out := cli(t, n, args...)
			for _, tk := range web {
				if !strings.Contains(out, tk.Id[:12]) {
					t.Fatalf("%v does not list task %s:\n%s", args, tk.Id, out)
				}
			}
		}
		if _, stderr, err := n.CLI("node", "ps", "nosuch"); err == nil || !strings.Contains(stderr, "nosuch") {
			t.Fatalf("node ps of an unknown node: err %v, stderr %q", err, stderr)
		}
	})

	t.Run("version names the client's and the node's", func(t *testing.T) {
		out := cli(t, n, "version")
		if !strings.Contains(out, "Client:") || !strings.Contains(out, n.Name) || strings.Contains(out, "differs") {
			t.Fatalf("version printed:\n%s", out)
		}
	})

	t.Run("containers run in containerd itself", func(t *testing.T) {
		if got, want := runningContainerIDs(containers(t, n)), ids(web); !reflect.DeepEqual(got, want) {
			t.Fatalf("containerd runs %v, warren says %v", got, want)
		}
	})

	t.Run("each task answers from the host's namespace", func(t *testing.T) {
		for _, tk := range web {
			body, err := n.HTTPGet("http://"+tk.Status.Ip+"/", 5*time.Second)
			must(t, err)
			if !strings.Contains(body, "task="+tk.Id) || !strings.Contains(body, "GREETING=hi") {
				t.Fatalf("task %s at %s answered %q", tk.Id, tk.Status.Ip, body)
			}
		}
	})

	t.Run("a killed container process is replaced", func(t *testing.T) {
		victim := web[0]
		_, err := n.Exec("kill", "-9", strconv.Itoa(int(victim.Status.Pid)))
		must(t, err)
		eventually(t, 30*time.Second, "restarted task", func() error {
			for _, tk := range running(tasks(t, n, "web", false)) {
				if tk.Id == victim.Id && tk.Status.RestartCount >= 1 && tk.Status.Pid != victim.Status.Pid {
					_, err := n.HTTPGet("http://"+tk.Status.Ip+"/", 2*time.Second)
					return err
				}
			}
			return fmt.Errorf("task %s not running again yet", victim.Id)
		})
		if !strings.Contains(events(t, n, "task."), "exited with code 137") {
			t.Fatal("no event recorded the crash")
		}
	})

	t.Run("scale 3 to 10 to 0", func(t *testing.T) {
		cli(t, n, "service", "scale", "web=10")
		ten := waitRunning(t, n, "web", 10)
		if got := runningContainerIDs(containers(t, n)); !reflect.DeepEqual(got, ids(ten)) {
			t.Fatalf("containerd runs %d containers, want the 10 tasks", len(got))
		}
		cli(t, n, "service", "scale", "web=0")
		waitRunning(t, n, "web", 0)
		eventually(t, 60*time.Second, "no containers left", func() error {
			if c := containers(t, n); len(c) != 0 {
				return fmt.Errorf("%d containers remain", len(c))
			}
			return nil
		})
		cli(t, n, "service", "scale", "web=3")
		web = waitRunning(t, n, "web", 3)
	})

	t.Run("kill -9 warren: containers adopted, not duplicated", func(t *testing.T) {
		before := map[string]uint32{}
		for _, s := range containers(t, n) {
			before[s.ID] = s.Pid
		}
		must(t, n.Kill(syscall.SIGKILL, 10*time.Second))
		// The same command line resumes the node.
		must(t, n.StartAndWait(90*time.Second))
		after := waitRunning(t, n, "web", 3)
		if !reflect.DeepEqual(ids(after), ids(web)) {
			t.Fatalf("tasks changed across restart: %v -> %v", ids(web), ids(after))
		}
		list := containers(t, n)
		if len(list) != 3 {
			t.Fatalf("containerd holds %d containers after restart, want 3", len(list))
		}
		for _, s := range list {
			if before[s.ID] != s.Pid || !s.Running {
				t.Fatalf("container %s: pid %d -> %d running=%v: restarted, not adopted", s.ID, before[s.ID], s.Pid, s.Running)
			}
		}
		if !strings.Contains(n.LogTail(400), "adopted running container") {
			t.Fatal("log does not show adoption")
		}
	})

	t.Run("crashed actors are restarted, the process lives on", func(t *testing.T) {
		pid := n.WarrenPid
		cli(t, n, "debug", "crash", "manager/leader/scheduler")
		victim := web[1]
		cli(t, n, "debug", "crash", "agent/tasks/"+victim.Id)
		eventually(t, 20*time.Second, "supervision events", func() error {
			ev := events(t, n, "actor.")
			for _, want := range []string{"actor.failed", "manager/leader/scheduler", "agent/tasks/" + victim.Id, "actor.restarting"} {
				if !strings.Contains(ev, want) {
					return fmt.Errorf("no %q in actor events", want)
				}
			}
			return nil
		})
		if !n.Running() || n.WarrenPid != pid {
			t.Fatal("warren process died")
		}
		// The restarted scheduler still places; the restarted task actor
		// re-adopted its container (same pid).
		cli(t, n, "service", "scale", "web=4")
		four := waitRunning(t, n, "web", 4)
		for _, tk := range four {
			if tk.Id == victim.Id && tk.Status.Pid != victim.Status.Pid {
				t.Fatalf("task actor restart restarted the container (pid %d -> %d)", victim.Status.Pid, tk.Status.Pid)
			}
		}
		web = four
	})

	t.Run("delete leaves nothing behind", func(t *testing.T) {
		snapsBefore := len(snapshots(t, n))
		cli(t, n, "service", "delete", "web")
		eventually(t, 60*time.Second, "service gone", func() error {
			if c := containers(t, n); len(c) != 0 {
				return fmt.Errorf("%d containers remain", len(c))
			}
			if _, _, err := n.CLI("service", "inspect", "web"); err == nil {
				return fmt.Errorf("service still inspectable")
			}
			if l := leftovers(t, n, ids(web)); len(l) > 0 {
				return fmt.Errorf("left behind: %v", l)
			}
			return nil
		})
		// Their output is kept, for `task logs` of a deleted task.
		if k := keptLogs(t, n, ids(web)); k != len(ids(web)) {
			t.Fatalf("logs of %d of %d deleted tasks kept, want all", k, len(ids(web)))
		}
		// Only the image's own layer snapshots remain.
		if s := snapshots(t, n); len(s) >= snapsBefore {
			t.Fatalf("snapshots %d -> %d: container snapshots left", snapsBefore, len(s))
		}
		for _, s := range snapshots(t, n) {
			for _, id := range ids(web) {
				if s == id {
					t.Fatalf("snapshot %s left", id)
				}
			}
		}
		must(t, n.Kill(syscall.SIGTERM, 20*time.Second))
		if l := leases(t, n); l != 0 {
			t.Fatalf("%d IP leases left", l)
		}
		must(t, n.StartAndWait(90*time.Second))
	})

	t.Run("bad input is refused and changes nothing", func(t *testing.T) {
		index := func() uint64 {
			r := &messages.ClusterInfoReply{}
			must(t, protojson.Unmarshal([]byte(cli(t, n, "cluster", "info", "-o", "json")), r))
			return r.Index
		}
		before := index()
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"service", "create", "bad", "--image", "Demo:V1"}, "invalid image reference"},
			{[]string{"service", "create", "bad", "--image", "nosuch:v9"}, "warren image import"},
			{[]string{"service", "create", "bad", "--image", "demo:v1", "--replicas", "-3"}, "cannot be negative"},
			{[]string{"service", "create", "bad", "--image", "demo:v1", "--replicas", "100000000"}, "more than the limit"},
			{[]string{"service", "create", "bad", "--image", "demo:v1", "--bogus"}, "unknown flag"},
			{[]string{"service", "create", "Bad_Name", "--image", "demo:v1"}, "invalid service name"},
			{[]string{"service", "scale", "nosuch=3"}, "not found"},
			{[]string{"service", "inspect", "nosuch"}, "not found"},
			{[]string{"node", "inspect", "nosuch"}, "not found"},
			{[]string{"service", "scale", "web"}, "expected NAME=REPLICAS"},
		}
		for _, c := range cases {
			_, stderr, err := n.CLI(c.args...)
			if err == nil || !strings.Contains(stderr, c.want) {
				t.Errorf("warren %v: err=%v stderr=%q, want an error containing %q", c.args, err, stderr, c.want)
			}
		}
		if after := index(); after != before {
			t.Fatalf("a refused command changed state: raft index %d -> %d", before, after)
		}
		// A second node on the same data dir while it runs.
		o, err := n.Exec(n.InitArgs()...)
		if err == nil || !strings.Contains(o, "in use by a running warren") {
			t.Fatalf("second init on a held data dir: %v %q", err, o)
		}
		// A foreign data dir is never overwritten.
		foreign := filepath.Join(h.Dir, "foreign")
		must(t, os.MkdirAll(foreign, 0o755))
		must(t, os.WriteFile(filepath.Join(foreign, "important.txt"), []byte("x"), 0o644))
		o, err = n.Exec(h.Bin, "cluster", "init", "--data-dir", foreign, "--port", "4290", "--raft-port", "4291", "--metrics-addr", "")
		if err == nil || !strings.Contains(o, "not Warren's") {
			t.Fatalf("init on a foreign dir: %v %q", err, o)
		}
		if b, _ := os.ReadFile(filepath.Join(foreign, "important.txt")); string(b) != "x" {
			t.Fatal("foreign data dir was touched")
		}
		// A damaged data dir is reported, not rebuilt.
		damaged := filepath.Join(h.Dir, "damaged")
		must(t, os.MkdirAll(damaged, 0o755))
		must(t, os.WriteFile(filepath.Join(damaged, "node.json"), []byte("{garbage"), 0o600))
		o, err = n.Exec(h.Bin, "cluster", "init", "--data-dir", damaged, "--port", "4290", "--raft-port", "4291", "--metrics-addr", "")
		if err == nil || !strings.Contains(o, "damaged") {
			t.Fatalf("init on a damaged dir: %v %q", err, o)
		}
		// containerd unreachable: a clear error, and no half-made cluster.
		fresh := filepath.Join(h.Dir, "fresh")
		o, err = n.Exec(h.Bin, "--config-dir", filepath.Join(h.Dir, "fresh-cli"), "cluster", "init", "--data-dir", fresh,
			"--containerd", "/run/nosuch/containerd.sock", "--port", "4290", "--raft-port", "4291", "--metrics-addr", "")
		if err == nil || !strings.Contains(o, "containerd is not reachable") {
			t.Fatalf("init without containerd: %v %q", err, o)
		}
		if entries, _ := os.ReadDir(fresh); len(entries) > 1 { // only the lock file may remain
			t.Fatalf("a failed init left %d entries in its data dir", len(entries))
		}
	})

	t.Run("connections without a cluster certificate are refused", func(t *testing.T) {
		addr := net.JoinHostPort(n.IP, "4280")
		// No client certificate.
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // testing refusal
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("a connection without a client certificate was accepted")
		}
		// A certificate from another CA, even with the admin role.
		ca, err := pki.NewCA("other")
		must(t, err)
		id, err := ca.Issue("admin", pki.RoleAdmin, nil, nil, time.Hour)
		must(t, err)
		cfg, err := pki.TLSConfig(ca.PEM, id)
		must(t, err)
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("a certificate from a foreign CA was accepted")
		}
		// The raft port too.
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(n.IP, "4281"), cfg)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("raft accepted a foreign certificate")
		}
	})
}
