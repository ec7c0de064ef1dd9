package host

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/store"
)

// exportedFamilies is every family a node can export: Warren's (from the
// collectors' descriptions, so a family with no sample yet counts) and the
// Go runtime and process ones of the default registry.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	reg := metricsRegistry(func() *store.Store { return nil }, actor.NewActorSystem(), nil, "n1", zap.NewNop())
	out := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range []prometheus.Collector{reg} {
			c.Describe(ch)
		}
		close(ch)
	}()
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = true
		}
	}
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		out[f.GetName()] = true
	}
	return out
}

// dashboardExprs is every PromQL expression of a Grafana dashboard (panel
// targets, nested rows, template variable queries).
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s is not JSON: %v", path, err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && (k == "expr" || k == "definition") {
					out = append(out, s)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// metricName matches the metric names of Warren's, Go's and the process's
// families in PromQL (labels and functions never start so).
var metricName = regexp.MustCompile(`\b(?:warren|go|process)_[a-zA-Z0-9_:]*`)

// familyOf is the family a sample name belongs to (a histogram's
// _bucket, _sum and _count series belong to the histogram).
func familyOf(name string, exported map[string]bool) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && exported[base] {
			return base
		}
	}
	return name
}

// TestDashboardNamesExportedMetrics fails when docs/grafana's dashboard
// queries a family no node exports (a renamed or removed metric leaves
// panels empty without any error in Grafana).
func TestDashboardNamesExportedMetrics(t *testing.T) {
	exported := exportedFamilies(t)
	exprs := dashboardExprs(t, "../../docs/grafana/warren-dashboard.json")
	if len(exprs) < 10 {
		t.Fatalf("found %d expressions in the dashboard: the walk is broken", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			f := familyOf(n, exported)
			used[f] = true
			if !exported[f] {
				t.Errorf("the dashboard queries %s (in %q), which no Warren node exports: fix the dashboard or docs/metrics.md's name", n, e)
			}
		}
	}
	// And the other way: each Warren family is on the dashboard and in
	// the reference, so a new metric is not left undocumented.
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for f := range exported {
		if strings.HasPrefix(f, "warren_") {
			names = append(names, f)
		}
	}
	sort.Strings(names)
	if len(names) < 20 {
		t.Errorf("only %d warren_ families described: %v", len(names), names)
	}
	for _, f := range names {
		if !used[f] {
			t.Errorf("%s is exported but on no dashboard panel: add one to docs/grafana/warren-dashboard.json", f)
		}
		if !strings.Contains(string(doc), "`"+f+"`") {
			t.Errorf("%s is exported but not in docs/metrics.md", f)
		}
	}
}
