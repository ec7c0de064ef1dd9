package store

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warrenorch/warren/messages"
)

// TestMetrics scrapes a real store (raft on disk) over HTTP, as Prometheus
// would, parses the text with Prometheus's own parser and checks each
// family and its values against the state written.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, freePort(t))
	defer s.Close()
	apply := func(cmd *messages.Command) {
		t.Helper()
		res, err := s.Apply(cmd, 5*time.Second)
		if err != nil || res.Error != nil {
			t.Fatalf("apply: %v %v", err, res.GetError())
		}
	}
	apply(createSvc("s1", "web"))
	apply(&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "s1",
		Spec:       &messages.ServiceSpec{Name: "web", Image: "demo:v2", Replicas: 3, UpdateConfig: &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY}},
		Deployment: &messages.Deployment{Id: "d1", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, State: messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED}}}})
	apply(&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{Id: "n1",
		Spec: &messages.NodeSpec{Role: messages.NodeRole_NODE_ROLE_MANAGER}, Status: &messages.NodeStatus{State: messages.NodeState_NODE_STATE_READY}}}}})
	apply(&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{Id: "n2",
		Spec: &messages.NodeSpec{Role: messages.NodeRole_NODE_ROLE_WORKER}, Status: &messages.NodeStatus{State: messages.NodeState_NODE_STATE_DOWN}}}}})
	running := &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING}
	apply(&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{
		{Id: "t1", ServiceId: "s1", NodeId: "n1", DesiredState: messages.TaskState_TASK_STATE_RUNNING, Status: running},
		{Id: "t2", ServiceId: "s1", NodeId: "n1", DesiredState: messages.TaskState_TASK_STATE_RUNNING, Status: running},
		{Id: "t3", ServiceId: "s1", NodeId: "n2", DesiredState: messages.TaskState_TASK_STATE_RUNNING, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING}},
		{Id: "t4", ServiceId: "s1", NodeId: "n1", DesiredState: messages.TaskState_TASK_STATE_SHUTDOWN, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_SHUTDOWN}},
	}}}})

	var current *Store
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() *Store { return current }))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("the scrape does not parse as Prometheus text: %v", err)
		}
		return fams
	}
	if fams := scrape(); len(fams) != 0 {
		t.Fatalf("with no store (a worker) the collector must export nothing, got %d families", len(fams))
	}
	current = s
	fams := scrape()
	value := func(name string, labels map[string]string) (float64, bool) {
		for _, m := range fams[name].GetMetric() {
			match := true
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				match = match && found
			}
			if match {
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"warren_services", nil, 1},
		{"warren_nodes", map[string]string{"state": "ready", "role": "manager", "availability": "active"}, 1},
		{"warren_nodes", map[string]string{"state": "down", "role": "worker"}, 1},
		{"warren_tasks", map[string]string{"state": "running", "desired": "running"}, 2},
		{"warren_tasks", map[string]string{"state": "pending", "desired": "running"}, 1},
		{"warren_tasks", map[string]string{"state": "shutdown", "desired": "shutdown"}, 1},
		{"warren_service_tasks_desired", map[string]string{"service": "web", "mode": "replicated"}, 3},
		{"warren_service_tasks_running", map[string]string{"service": "web"}, 2},
		{"warren_deployments_in_flight", map[string]string{"strategy": "canary", "state": "weighted"}, 1},
		{"warren_raft_leader", nil, 1},
		{"warren_raft", map[string]string{"stat": "num_peers"}, 0},
		{"warren_state_index", nil, float64(s.State.Index())},
	}
	for _, tt := range tests {
		if got, ok := value(tt.name, tt.labels); !ok || got != tt.want {
			t.Errorf("%s%v = %v (found %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	for _, stat := range []string{"term", "commit_index", "applied_index", "last_log_index"} {
		if v, ok := value("warren_raft", map[string]string{"stat": stat}); !ok || v < 1 {
			t.Errorf("warren_raft{stat=%q} = %v (found %v), want >= 1", stat, v, ok)
		}
	}
	// Five applies above, each observed once, none slower than its timeout.
	if h := fams["warren_raft_apply_duration_seconds"].GetMetric(); len(h) != 1 || h[0].GetHistogram().GetSampleCount() != 5 ||
		h[0].GetHistogram().GetSampleSum() <= 0 || h[0].GetHistogram().GetSampleSum() > 25 {
		t.Errorf("warren_raft_apply_duration_seconds = %v, want 5 samples summing to (0, 25] s", h)
	}
	if v, ok := value("warren_raft_snapshot_size_bytes", nil); !ok || v != 0 {
		t.Errorf("warren_raft_snapshot_size_bytes before any snapshot = %v (found %v), want 0", v, ok)
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	fams = scrape()
	if v, ok := value("warren_raft_snapshot_size_bytes", nil); !ok || v < 100 {
		t.Errorf("warren_raft_snapshot_size_bytes after a snapshot of a service, 2 nodes and 4 tasks = %v (found %v), want >= 100", v, ok)
	}
}
