package main

// The views of a deployment drawn from a deployStatus: the live bars, the
// `service deployment` page and the -o json record.

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/messages"
)

// bar draws n of total as width cells.
func bar(n, total, width int) string {
	if total <= 0 {
		total = 1
	}
	f := min(max(n*width/total, 0), width)
	return "[" + strings.Repeat("#", f) + strings.Repeat("-", width-f) + "]"
}

// progressLines is the live view: the headline with elapsed time and ETA,
// then one bar per version and side.
func (st deployStatus) progressLines() []string {
	head := st.headline()
	if e := st.elapsed(); e > 0 {
		head += "  (" + dur(e)
		if eta := st.eta(); eta != "" {
			head += ", ETA " + eta
		}
		head += ")"
	}
	lines := []string{head}
	width := 0
	for _, s := range st.sides {
		width = max(width, len(s.label()))
	}
	for _, s := range st.sides {
		want := s.Desired
		if s.Target > 0 {
			want = s.Target
		}
		l := fmt.Sprintf("  %-*s  %s %s", width, s.label(), bar(s.Healthy, want, 20), s.counts())
		if s.Weight != nil {
			l += fmt.Sprintf(", %d%% of requests", *s.Weight)
		}
		lines = append(lines, l)
	}
	if m := st.d.GetMessage(); m != "" {
		lines = append(lines, "  "+m)
	}
	return lines
}

// strategyText details the rollout settings of the service's spec.
func strategyText(d *messages.Deployment, u *messages.UpdateConfig) string {
	var p []string
	switch d.Strategy {
	case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
		sw := "switch when green is healthy"
		if u.GetSwitchManual() {
			sw = "switch on promote"
		}
		p = append(p, sw, "grace "+dur(graceOf(u)))
	case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
		p = append(p, fmt.Sprintf("canary replicas %d", max(d.CanaryReplicas, 1)))
		fallthrough
	default:
		par := "parallelism 1" // the default
		switch n := u.GetParallelism(); {
		case n >= messages.MaxReplicas:
			par = "all at once"
		case n > 0:
			par = fmt.Sprintf("parallelism %d", n)
		}
		p = append(p, par, "order "+orderName(u.GetOrder()))
		if ms := u.GetDelayMs(); ms > 0 {
			p = append(p, "delay "+dur(time.Duration(ms)*time.Millisecond))
		}
	}
	p = append(p, "on failure "+failureActionName(u.GetFailureAction())) // unset: rollback
	if ms := u.GetMonitorMs(); ms > 0 {
		p = append(p, "monitor "+dur(time.Duration(ms)*time.Millisecond))
	}
	if r := u.GetMaxFailureRatio(); r > 0 {
		p = append(p, fmt.Sprintf("max failure ratio %g", r))
	}
	return strategyName(d.Strategy) + " (" + strings.Join(p, ", ") + ")"
}

// renderDeployment is `warren service deployment NAME`: the deployment's
// settings, state and step, then one row per version and side.
func renderDeployment(w io.Writer, st deployStatus) error {
	tw := table(w)
	svc, d := st.svc, st.d
	fmt.Fprintf(tw, "Service:\t%s (spec v%d)\n", svc.GetSpec().GetName(), svc.GetSpecVersion())
	if d == nil {
		fmt.Fprintf(tw, "Deployment:\tnone yet (`"+prog()+" service update %s --image ...` starts one)\n", svc.GetSpec().GetName())
	} else {
		kind := strategyText(d, svc.GetSpec().GetUpdateConfig())
		if d.Rollback {
			kind += ", a rollback"
		}
		fmt.Fprintf(tw, "Strategy:\t%s\n", kind)
		fmt.Fprintf(tw, "Versions:\tv%d → v%d\n", d.FromVersion, d.ToVersion)
		state := deploymentStateName(d.State)
		if d.StateSinceUnixNano != 0 && !messages.DeploymentFinished(d.State) {
			state += " for " + dur(st.now.Sub(time.Unix(0, d.StateSinceUnixNano)))
		}
		fmt.Fprintf(tw, "State:\t%s\n", state)
		if s := st.step(); s != "" {
			fmt.Fprintf(tw, "Step:\t%s\n", s)
		}
		if d.StartedUnixNano != 0 {
			took := "running for"
			if d.FinishedUnixNano != 0 {
				took = "took"
			}
			fmt.Fprintf(tw, "Started:\t%s, %s %s\n", ago(st.now, d.StartedUnixNano), took, dur(st.elapsed()))
		}
		if eta := st.eta(); eta != "" {
			fmt.Fprintf(tw, "ETA:\t%s\n", eta)
		}
		if wt := weightsText(svc); wt != "" {
			fmt.Fprintf(tw, "Traffic:\t%s\n", wt)
		}
		if d.Message != "" {
			fmt.Fprintf(tw, "Message:\t%s\n", d.Message)
		}
		if len(d.FailedTasks) > 0 {
			ids := make([]string, len(d.FailedTasks))
			for i, id := range d.FailedTasks {
				ids[i] = short(id)
			}
			fmt.Fprintf(tw, "Failed tasks:\t%s\n", strings.Join(ids, ", "))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.sides) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = table(w)
	fmt.Fprintln(tw, "VERSION\tSIDE\tTASKS\tRUNNING\tHEALTHY\tTARGET\tTRAFFIC\tPROGRESS")
	for _, s := range st.sides {
		side, target, traffic := s.Side, "-", "-"
		if side == "" {
			side = "stable"
		}
		want := s.Desired
		if s.Target > 0 {
			target, want = fmt.Sprint(s.Target), s.Target
		}
		if s.Weight != nil {
			traffic = fmt.Sprintf("%d%%", *s.Weight)
		}
		fmt.Fprintf(tw, "v%d\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Version, side, s.Desired, s.Running, s.Healthy, target, traffic, bar(s.Healthy, want, 10))
	}
	return tw.Flush()
}

// statusRecord is the `-o json` record of one observation (one compact
// object per line): the service's name and spec version, the deployment
// as protojson, the counts per version and side, and the plain line.
type statusRecord struct {
	Service     string          `json:"service"`
	SpecVersion uint64          `json:"specVersion"`
	Deployment  json.RawMessage `json:"deployment,omitempty"`
	Sides       []sideStatus    `json:"sides"`
	Step        string          `json:"step,omitempty"`
	ElapsedMs   int64           `json:"elapsedMs,omitempty"`
	Summary     string          `json:"summary"`
}

func (st deployStatus) record() (statusRecord, error) {
	r := statusRecord{Service: st.svc.GetSpec().GetName(), SpecVersion: st.svc.GetSpecVersion(), Sides: st.sides,
		Step: st.step(), ElapsedMs: st.elapsed().Milliseconds(), Summary: st.line()}
	if r.Sides == nil {
		r.Sides = []sideStatus{}
	}
	if st.d != nil {
		b, err := protojson.Marshal(st.d)
		if err != nil {
			return r, err
		}
		r.Deployment = b
	}
	return r, nil
}
