package manager

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// scrapeText gathers reg and parses it back with Prometheus's own text
// parser, as a scrape would.
func scrapeText(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var buf bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	out, err := p.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("the metrics do not parse as Prometheus text: %v", err)
	}
	return out
}

func histCount(fams map[string]*dto.MetricFamily, name, method string) uint64 {
	for _, m := range fams[name].GetMetric() {
		if method == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == method) {
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// TestManagerMetrics: an admin's requests over mutual TLS are timed by
// type, tasks placed are timed, and a task no node takes is counted under
// the reason the scheduler gave, on a real manager (raft on disk, remoting).
func TestManagerMetrics(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1"}})
	m := c.mgrs[0]
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() *store.Store { return m.store() }))
	before := scrapeText(t, reg)

	c.must(t, m, &messages.CreateServiceRequest{Spec: workerSpec("web", 2)})
	stuck := workerSpec("stuck", 1)
	stuck.Constraints = []string{"node.labels.zone==nowhere"}
	c.must(t, m, &messages.CreateServiceRequest{Spec: stuck})
	within(t, 10*time.Second, "web placed", func() bool { return converged(m, "web", 2) })

	var fams map[string]*dto.MetricFamily
	within(t, 10*time.Second, "the stuck task counted as pending for its constraint", func() bool {
		fams = scrapeText(t, reg)
		for _, mm := range fams["warren_scheduler_pending_tasks"].GetMetric() {
			if mm.GetLabel()[0].GetValue() == "constraints" {
				return mm.GetGauge().GetValue() == 1
			}
		}
		return false
	})
	for _, tt := range []struct{ name, method string }{
		{"warren_api_request_duration_seconds", "CreateServiceRequest"},
		{"warren_scheduler_placement_duration_seconds", ""},
	} {
		if got, was := histCount(fams, tt.name, tt.method), histCount(before, tt.name, tt.method); got < was+2 {
			t.Errorf("%s{%s}: %d samples, want at least 2 more than the %d before", tt.name, tt.method, got, was)
		}
	}
	for _, mm := range fams["warren_scheduler_pending_tasks"].GetMetric() {
		if r := mm.GetLabel()[0].GetValue(); r != "constraints" && mm.GetGauge().GetValue() != 0 {
			t.Errorf("warren_scheduler_pending_tasks{reason=%q} = %v, want 0", r, mm.GetGauge().GetValue())
		}
	}
}

func TestPendingReasons(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want []string
	}{
		{"", []string{"unplaced"}},
		{explain(0, nil), []string{"no_nodes"}},
		{explain(3, map[string]int{"node not ready": 1, "insufficient memory": 2}), []string{"node_not_ready", "insufficient_memory"}},
		{explain(1, map[string]int{"node not active (paused or drained)": 1}), []string{"node_not_active"}},
		{explain(2, map[string]int{"constraints not met": 1, "insufficient cpu": 1}), []string{"constraints", "insufficient_cpu"}},
	} {
		got := PendingReasons(tt.msg)
		if len(got) != len(tt.want) {
			t.Errorf("PendingReasons(%q) = %v, want %v", tt.msg, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("PendingReasons(%q) = %v, want %v", tt.msg, got, tt.want)
			}
		}
	}
	// Every filter of the scheduler has a reason label.
	for _, f := range filters {
		if r := PendingReasons(explain(1, map[string]int{f.name: 1})); r[0] == "unplaced" {
			t.Errorf("the scheduler's filter %q has no pending reason label: add it to pendingReasons", f.name)
		}
	}
}
