package worker

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/runtime"
)

// listed is a runtime whose containers are given (the list only; the
// counters are read from the real kernel for a real pid).
type listed []runtime.Status

func (l listed) List(context.Context) ([]runtime.Status, error) { return l, nil }

// TestTaskCollector: a running task of this node is exported with its
// labels and the counters of its (here: this test process's) cgroup and
// netns; a stopped one only as not running, with its restarts; another
// node's and foreign containers not at all. The output parses with
// Prometheus's text parser.
func TestTaskCollector(t *testing.T) {
	if _, err := runtime.StatsOf(uint32(os.Getpid())); err != nil {
		t.Skipf("no readable cgroup accounting on this host: %v", err)
	}
	lbl := func(task, svc, node string) map[string]string {
		return map[string]string{"warren.task": task, "warren.service": svc, "warren.node": node}
	}
	rt := listed{
		{ID: "t1", Running: true, Pid: uint32(os.Getpid()), Labels: lbl("t1", "web", "n1")},
		{ID: "t2", Running: false, Labels: lbl("t2", "web", "n1")},
		{ID: "t3", Running: true, Pid: uint32(os.Getpid()), Labels: lbl("t3", "db", "n2")},
		{ID: "other", Running: true, Pid: 1},
	}
	noteRestarts("t2", 3)
	noteRestarts("gone", 1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewTaskCollector(rt, "n1", zap.NewNop()))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := p.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("does not parse: %v", err)
	}
	value := func(name, task string) (float64, bool) {
		for _, m := range parsed[name].GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["task"] == task {
				if l["node"] != "n1" || l["service"] != "web" {
					t.Errorf("%s{task=%s} labels %v, want service web, node n1", name, task, l)
				}
				return metricValue(m), true
			}
		}
		return 0, false
	}
	for _, tt := range []struct {
		name, task string
		min        float64 // the value must be at least this (> 0 where a real counter)
		present    bool
	}{
		{"warren_task_running", "t1", 1, true},
		{"warren_task_cpu_seconds_total", "t1", 1e-9, true},
		{"warren_task_memory_bytes", "t1", 1 << 20, true},
		{"warren_task_network_receive_bytes_total", "t1", 0, true},
		{"warren_task_network_transmit_bytes_total", "t1", 0, true},
		{"warren_task_restarts_total", "t1", 0, true},
		{"warren_task_running", "t2", 0, true},
		{"warren_task_restarts_total", "t2", 3, true},
		{"warren_task_memory_bytes", "t2", 0, false},
		{"warren_task_running", "t3", 0, false},
	} {
		v, ok := value(tt.name, tt.task)
		if ok != tt.present || (ok && v < tt.min) {
			t.Errorf("%s{task=%s} = %v (present %v), want present %v and >= %v", tt.name, tt.task, v, ok, tt.present, tt.min)
		}
	}
	if v, ok := value("warren_task_running", "t2"); ok && v != 0 {
		t.Errorf("a stopped task shows running = %v", v)
	}
	if _, ok := taskRestarts.Load("gone"); ok {
		t.Error("the restart count of a task whose container is gone is kept: it would grow without bound")
	}
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}
