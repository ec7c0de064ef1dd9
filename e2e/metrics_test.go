package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// scrape reads a host's /metrics from inside its network namespace and
// parses it with Prometheus's own text parser.
func scrape(t *testing.T, h *cluster.Host) map[string]*dto.MetricFamily {
	t.Helper()
	body, err := h.HTTPGet("http://127.0.0.1:9090/metrics", 10*time.Second)
	must(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s's /metrics does not parse as Prometheus text: %v", h.Name, err)
	}
	return fams
}

// series is the value of the first series of family name whose labels
// include want: a gauge's or counter's value, a histogram's sample count.
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// check is one expectation of a scrape: the series exists and its value
// is at least min (at most max when max > 0).
type check struct {
	name     string
	labels   map[string]string
	min, max float64
}

func checkScrape(fams map[string]*dto.MetricFamily, checks []check) error {
	var errs []string
	for _, c := range checks {
		v, ok := series(fams, c.name, c.labels)
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("no %s%v", c.name, c.labels))
		case v < c.min || (c.max > 0 && v > c.max):
			errs = append(errs, fmt.Sprintf("%s%v = %v, want in [%v, %v]", c.name, c.labels, v, c.min, c.max))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// TestMetrics: a manager and a worker on their own hosts, both started
// with --log-format json and metrics on. Each one's /metrics parses and
// carries its families with sane values: the cluster, raft, scheduler and
// api ones on the manager, the per-task ones on both, where a test app
// holding 50 MB shows at least 50 MB; a task killed with kill -9 counts a
// restart and an actor crashed on purpose counts under its kind. Every
// family the Grafana dashboard queries is exported. Then every line of
// both nodes' logs is JSON with component and node.
func TestMetrics(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 2, Bin: warrenBin})
	formCluster(t, h, 1, "--metrics-addr", "127.0.0.1:9090", "--log-format", "json")
	m0, w1 := h.Hosts[0], h.Hosts[1]
	mID, wID := m0.NodeID(), w1.NodeID()

	cli(t, m0, "image", "import", demoV1)
	// One task per node holding 50 MB; a replicated service placed by the
	// scheduler; one no node can take.
	cli(t, m0, "service", "create", "alloc", "--image", "demo:v1", "--mode", "global", "--env", "ALLOC_MB=50")
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "2")
	cli(t, m0, "service", "create", "stuck", "--image", "demo:v1", "--constraint", "node.labels.zone==nowhere")
	alloc := waitRunning(t, m0, "alloc", 2)
	waitRunning(t, m0, "web", 2)
	var onWorker *messages.Task
	for _, tk := range alloc {
		if tk.NodeId == wID {
			onWorker = tk
		}
	}
	if onWorker == nil {
		t.Fatalf("no alloc task on the worker %s: %v", wID, alloc)
	}

	// A restart on the worker (the restart policy, after kill -9) and an
	// actor failure on the manager.
	_, err := w1.Exec("kill", "-9", strconv.Itoa(int(onWorker.Status.Pid)))
	must(t, err)
	cli(t, m0, "debug", "crash", "manager/leader/scheduler")

	const fiftyMB = 50 << 20
	taskChecks := func(node string) []check {
		l := map[string]string{"service": "alloc", "node": node}
		return []check{
			{"warren_task_running", l, 1, 1},
			{"warren_task_memory_bytes", l, fiftyMB, 0},
			{"warren_task_cpu_seconds_total", l, 1e-6, 0},
			{"warren_task_network_receive_bytes_total", l, 0, 0},
			{"warren_task_network_transmit_bytes_total", l, 0, 0},
			{"warren_task_restarts_total", l, 0, 0},
		}
	}
	mgrChecks := append(taskChecks(mID),
		check{"warren_nodes", map[string]string{"state": "ready", "role": "manager"}, 1, 1},
		check{"warren_nodes", map[string]string{"state": "ready", "role": "worker"}, 1, 1},
		check{"warren_services", nil, 3, 3},
		check{"warren_service_tasks_desired", map[string]string{"service": "web", "mode": "replicated"}, 2, 2},
		check{"warren_service_tasks_desired", map[string]string{"service": "alloc", "mode": "global"}, 2, 2},
		check{"warren_service_tasks_running", map[string]string{"service": "web"}, 2, 2},
		check{"warren_tasks", map[string]string{"state": "running", "desired": "running"}, 4, 0},
		check{"warren_raft_leader", nil, 1, 1},
		check{"warren_raft", map[string]string{"stat": "term"}, 1, 0},
		check{"warren_raft", map[string]string{"stat": "commit_index"}, 5, 0},
		check{"warren_raft", map[string]string{"stat": "applied_index"}, 5, 0},
		check{"warren_state_index", nil, 5, 0},
		check{"warren_raft_apply_duration_seconds", nil, 5, 0},
		check{"warren_raft_snapshot_size_bytes", nil, 0, 0},
		check{"warren_scheduler_placement_duration_seconds", nil, 2, 0},
		check{"warren_scheduler_pending_tasks", map[string]string{"reason": "constraints"}, 1, 1},
		check{"warren_scheduler_pending_tasks", map[string]string{"reason": "insufficient_memory"}, 0, 0},
		check{"warren_api_request_duration_seconds", map[string]string{"method": "CreateServiceRequest"}, 3, 0},
		check{"warren_api_request_duration_seconds", map[string]string{"method": "ListTasksRequest"}, 1, 0},
		check{"warren_actor_restarts_total", map[string]string{"kind": "manager/leader/scheduler", "directive": "restart"}, 1, 0},
		check{"go_goroutines", nil, 10, 0},
		check{"process_resident_memory_bytes", nil, 1 << 20, 0},
	)
	workerChecks := append(taskChecks(wID),
		check{"warren_task_restarts_total", map[string]string{"service": "alloc", "node": wID}, 1, 0},
		check{"go_goroutines", nil, 10, 0},
	)

	var mf, wf map[string]*dto.MetricFamily
	t.Run("a manager's and a worker's metrics parse, with sane values", func(t *testing.T) {
		eventually(t, 60*time.Second, "the manager's metrics", func() error {
			mf = scrape(t, m0)
			return checkScrape(mf, mgrChecks)
		})
		eventually(t, 60*time.Second, "the worker's metrics", func() error {
			wf = scrape(t, w1)
			return checkScrape(wf, workerChecks)
		})
		for _, n := range []struct {
			name string
			fams map[string]*dto.MetricFamily
			node string
		}{{"manager", mf, mID}, {"worker", wf, wID}} {
			mem, _ := series(n.fams, "warren_task_memory_bytes", map[string]string{"service": "alloc", "node": n.node})
			cpu, _ := series(n.fams, "warren_task_cpu_seconds_total", map[string]string{"service": "alloc", "node": n.node})
			rs, _ := series(n.fams, "warren_task_restarts_total", map[string]string{"service": "alloc", "node": n.node})
			t.Logf("%s: the 50 MB task uses %.1f MB and %.3f s CPU, restarted %v times", n.name, mem/(1<<20), cpu, rs)
		}
		// A worker holds no replica: it exports no cluster figures.
		for _, name := range []string{"warren_raft_leader", "warren_services", "warren_scheduler_pending_tasks"} {
			if _, ok := wf[name]; ok {
				t.Errorf("the worker exports %s, a manager's family", name)
			}
		}
		// Each node exports its own tasks only.
		for name, fams := range map[string]map[string]*dto.MetricFamily{"manager": mf, "worker": wf} {
			for _, m := range fams["warren_task_running"].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "node" && l.GetValue() != map[string]string{"manager": mID, "worker": wID}[name] {
						t.Errorf("the %s exports a task of node %s", name, l.GetValue())
					}
				}
			}
		}
	})

	t.Run("every family the dashboard queries is exported", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(moduleRoot(), "docs", "grafana", "warren-dashboard.json"))
		must(t, err)
		names := regexp.MustCompile(`\b(?:warren|go|process)_[a-zA-Z0-9_:]*`).FindAllString(string(b), -1)
		if len(names) < 20 {
			t.Fatalf("%d metric names in the dashboard", len(names))
		}
		for _, n := range names {
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suf); ok && (mf[b] != nil || wf[b] != nil) {
					base = b
				}
			}
			// A family of labelled series has none while there is nothing
			// to count (no deployment in flight here); that it is exported
			// at all is TestDashboardNamesExportedMetrics's check.
			if mf[base] == nil && wf[base] == nil && base != "warren_deployments_in_flight" {
				t.Errorf("the dashboard queries %s, which neither the manager nor the worker exports", n)
			}
		}
	})

	t.Run("system df shows every node's disk use", func(t *testing.T) {
		r := &messages.SystemDfReply{}
		must(t, protojson.Unmarshal([]byte(cli(t, m0, "system", "df", "-o", "json")), r))
		if len(r.Nodes) != 2 {
			t.Fatalf("system df has %d nodes, want 2: %v", len(r.Nodes), r.Nodes)
		}
		for _, n := range r.Nodes {
			host, raft := w1, int64(0)
			if n.NodeId == mID {
				host, raft = m0, 1
			}
			switch {
			case n.Error != "" || n.DataDir != host.DataDir:
				t.Errorf("%s: error %q, data dir %q (want %s)", n.Hostname, n.Error, n.DataDir, host.DataDir)
			case n.Images < 1 || n.ImagesBytes < 1<<20:
				t.Errorf("%s: %d images in %d bytes, want the demo image (over 1 MB)", n.Hostname, n.Images, n.ImagesBytes)
			case n.Containers < 1:
				t.Errorf("%s: %d containers, want its tasks'", n.Hostname, n.Containers)
			case (raft == 0) != (n.RaftBytes == 0) || n.EventsBytes == 0:
				t.Errorf("%s: raft %d bytes, events %d bytes: want raft on the manager only, events on both", n.Hostname, n.RaftBytes, n.EventsBytes)
			case n.DataDirBytes < n.RaftBytes+n.EventsBytes+n.LogsBytes:
				t.Errorf("%s: data dir %d bytes is less than its parts", n.Hostname, n.DataDirBytes)
			}
		}
		out := cli(t, m0, "system", "df")
		for _, want := range []string{"DATA DIR", m0.Name, w1.Name} {
			if !strings.Contains(out, want) {
				t.Errorf("system df's table lacks %q:\n%s", want, out)
			}
		}
		t.Logf("system df:\n%s", out)
	})

	t.Run("every line of each node's log is JSON with component and node", func(t *testing.T) {
		for _, host := range []*cluster.Host{m0, w1} {
			checkJSONLog(t, host)
		}
	})
}

// checkJSONLog parses every line of a --log-format json node's log with
// encoding/json and, when installed, jq: each has a component and a node,
// and once the node's id is known, node is that id.
func checkJSONLog(t *testing.T, host *cluster.Host) {
	t.Helper()
	f, err := os.Open(host.LogPath)
	must(t, err)
	defer f.Close()
	id := host.NodeID()[:12]
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lines, known := 0, false
	for sc.Scan() {
		lines++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("%s's log line %d is not JSON (%v): %s", host.Name, lines, err, sc.Text())
		}
		comp, _ := rec["component"].(string)
		node, _ := rec["node"].(string)
		if comp == "" || node == "" {
			t.Fatalf("%s's log line %d lacks component or node: %s", host.Name, lines, sc.Text())
		}
		switch {
		case node == id:
			known = true
		case known || node != "unknown":
			t.Fatalf("%s's log line %d has node %q, want %q (or \"unknown\" before the id exists): %s", host.Name, lines, node, id, sc.Text())
		}
	}
	must(t, sc.Err())
	if lines < 10 || !known {
		t.Fatalf("%s's log has %d lines, node id seen: %v", host.Name, lines, known)
	}
	if jq, err := exec.LookPath("jq"); err == nil {
		out, err := exec.Command(jq, "-e", "-s", `all(.[]; (.component | type == "string") and (.node | type == "string"))`, host.LogPath).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "true" {
			t.Fatalf("jq on %s's log: %v: %s", host.Name, err, out)
		}
	} else {
		t.Logf("jq not installed: parsed with encoding/json only")
	}
	t.Logf("%s: %d log lines, all JSON with component and node", host.Name, lines)
}
