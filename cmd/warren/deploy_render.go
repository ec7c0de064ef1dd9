package main

// Rendering of a deployment's progress. Everything here is a pure function
// of the service (with its committed deployment), its tasks and a clock,
// so the views are golden-tested without a cluster (deploy_render_test.go).

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/warrenorch/warren/messages"
)

// sideStatus counts the tasks of one version (and side) that are meant to
// run: how many, how many run, how many count (run and pass their health
// check, if any). Target is how many the deployment wants there in the end
// (0 for a version that is leaving).
type sideStatus struct {
	Version uint64 `json:"version"`
	Side    string `json:"side,omitempty"`
	Desired int    `json:"desired"`
	Running int    `json:"running"`
	Healthy int    `json:"healthy"`
	Pending int    `json:"pending,omitempty"` // not placed on a node yet
	Failed  int    `json:"failed,omitempty"`  // exited or refused, to be restarted or replaced
	Target  int    `json:"target,omitempty"`
	Weight  *int   `json:"weight,omitempty"` // percent of requests; nil: equal shares
}

func (s sideStatus) label() string {
	l := fmt.Sprintf("v%d", s.Version)
	if s.Side != "" {
		l += " " + s.Side
	}
	return l
}

// deployStatus is one observation of a deployment, what every view draws.
type deployStatus struct {
	svc   *messages.Service
	d     *messages.Deployment // nil: the service never had one
	sides []sideStatus
	now   time.Time
}

// healthyTask: the task runs and, if its spec has a health check, passes
// it (the same rule the deployment actor counts progress by).
func healthyTask(t *messages.Task) bool {
	st := t.GetStatus()
	if st.GetState() != messages.TaskState_TASK_STATE_RUNNING {
		return false
	}
	if t.GetSpec().GetHealthCheck().GetKind() != messages.HealthCheck_KIND_NONE {
		return st.GetHealth() == messages.HealthState_HEALTH_STATE_HEALTHY
	}
	return true
}

// newDeployStatus groups the tasks meant to run by (version, side) and
// sets each group's target: the deployed version's group wants the slots
// the deployment moves (blue/green's green every replica, a canary its
// canary replicas), older versions want none once it is done.
func newDeployStatus(svc *messages.Service, tasks []*messages.Task, now time.Time) deployStatus {
	st := deployStatus{svc: svc, d: svc.GetDeployment(), now: now}
	type key struct {
		v    uint64
		side string
	}
	idx := map[key]int{}
	get := func(k key) *sideStatus {
		i, ok := idx[k]
		if !ok {
			i = len(st.sides)
			idx[k] = i
			st.sides = append(st.sides, sideStatus{Version: k.v, Side: k.side})
		}
		return &st.sides[i]
	}
	for _, t := range tasks {
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			continue
		}
		s := get(key{t.SpecVersion, t.Side})
		s.Desired++
		if t.GetStatus().GetState() == messages.TaskState_TASK_STATE_RUNNING {
			s.Running++
		}
		if healthyTask(t) {
			s.Healthy++
		}
		switch t.GetStatus().GetState() {
		case messages.TaskState_TASK_STATE_NEW, messages.TaskState_TASK_STATE_PENDING:
			s.Pending++
		case messages.TaskState_TASK_STATE_FAILED, messages.TaskState_TASK_STATE_REJECTED, messages.TaskState_TASK_STATE_ORPHANED:
			s.Failed++
		}
	}
	if d := st.d; d != nil && !messages.DeploymentFinished(d.State) && d.State != messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK {
		k, target := key{d.ToVersion, ""}, int(d.Total)
		switch d.Strategy {
		case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
			k.side = "green"
			if target == 0 {
				target = int(svc.GetSpec().GetReplicas())
			}
		case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
			if canaryStep(d) {
				k.side, target = "canary", int(max(d.CanaryReplicas, 1))
			} else {
				target = int(svc.GetSpec().GetReplicas()) // promoted: rolling the stable replicas
			}
		}
		if target == 0 {
			target = int(svc.GetSpec().GetReplicas())
		}
		get(k).Target = target
	}
	for i := range st.sides {
		if w, ok := svc.GetTrafficWeights()[st.sides[i].Version]; ok && len(svc.GetTrafficWeights()) > 0 {
			n := int(w)
			st.sides[i].Weight = &n
		} else if len(svc.GetTrafficWeights()) > 0 {
			zero := 0
			st.sides[i].Weight = &zero
		}
	}
	// Newest version first, then by side name (stable before blue, canary,
	// green), so lines keep their place between redraws.
	sort.SliceStable(st.sides, func(i, j int) bool {
		a, b := st.sides[i], st.sides[j]
		if a.Version != b.Version {
			return a.Version > b.Version
		}
		return a.Side < b.Side
	})
	return st
}

// canaryStep: the canaries run beside the stable replicas (before a full
// promotion rolls the stable replicas in batches).
func canaryStep(d *messages.Deployment) bool {
	switch effective(d) {
	case messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_CANARY, messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED:
		return true
	}
	return false
}

// effective is the state whose step a paused deployment holds.
func effective(d *messages.Deployment) messages.DeploymentState {
	if d.State == messages.DeploymentState_DEPLOYMENT_STATE_PAUSED && d.PausedFrom != messages.DeploymentState_DEPLOYMENT_STATE_NONE {
		return d.PausedFrom
	}
	return d.State
}

// deploymentStateName is the lower-case, dashed name users see
// (awaiting-health), as in `warren events`.
func deploymentStateName(s messages.DeploymentState) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "DEPLOYMENT_STATE_")), "_", "-")
}

func strategyName(s messages.DeployStrategy) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "DEPLOY_STRATEGY_")), "_", "-")
}

func failureActionName(a messages.FailureAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "FAILURE_ACTION_"))
}

func orderName(o messages.UpdateOrder) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(o.String(), "UPDATE_ORDER_")), "_", "-")
}

// graceOf is blue/green's grace period, 30 s when unset.
func graceOf(u *messages.UpdateConfig) time.Duration {
	if ms := u.GetGraceMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return 30 * time.Second
}

// short durations for people: 1m05s, 40s, 2h03m.
func dur(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func (st deployStatus) target() *sideStatus {
	for i := range st.sides {
		if st.sides[i].Target > 0 {
			return &st.sides[i]
		}
	}
	return nil
}

// step says where in its strategy the deployment is: "batch 2/3", "weight
// 10%", "green 4/6 healthy". With clock, it may count down (the grace
// period); without, it holds nothing that changes by itself, for lines
// printed only on change.
func (st deployStatus) step() string { return st.stepAt(true) }

func (st deployStatus) stepAt(clock bool) string {
	d := st.d
	if d == nil {
		return ""
	}
	healthy, target := 0, 0
	if t := st.target(); t != nil {
		healthy, target = t.Healthy, t.Target
	}
	name := st.svc.GetSpec().GetName()
	s := effective(d)
	var out string
	switch s {
	case messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH, messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH,
		messages.DeploymentState_DEPLOYMENT_STATE_MONITORING, messages.DeploymentState_DEPLOYMENT_STATE_PROMOTING:
		total, done := int(d.Total), len(d.Updated)
		if d.Strategy == messages.DeployStrategy_DEPLOY_STRATEGY_CANARY {
			total = int(st.svc.GetSpec().GetReplicas()) // its Total counts the canaries
		}
		p := int(st.svc.GetSpec().GetUpdateConfig().GetParallelism())
		if p <= 0 || p > total {
			p = max(total, 1) // 0: every slot in one batch
		}
		batches := (total + p - 1) / p
		batch := min(max((done+p-1)/p, 1), max(batches, 1))
		out = fmt.Sprintf("batch %d/%d, %d/%d updated", batch, max(batches, 1), done, total)
	case messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_GREEN:
		out = fmt.Sprintf("green %d/%d healthy, blue serves", healthy, target)
	case messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION:
		out = fmt.Sprintf("green ready, blue serves: `"+prog()+" service promote %s` switches", name)
	case messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED:
		out = "traffic on green"
	case messages.DeploymentState_DEPLOYMENT_STATE_GRACE:
		grace := graceOf(st.svc.GetSpec().GetUpdateConfig())
		out = fmt.Sprintf("traffic on green, blue kept for the %s grace (rollback is instant)", dur(grace))
		if clock {
			left := time.Unix(0, d.StateSinceUnixNano).Add(grace).Sub(st.now)
			out = fmt.Sprintf("traffic on green, blue kept %s more (rollback is instant)", dur(left))
		}
	case messages.DeploymentState_DEPLOYMENT_STATE_CLEANING_BLUE:
		out = "traffic on green, removing blue"
	case messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_CANARY:
		out = fmt.Sprintf("canary %d/%d healthy", healthy, target)
	case messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED:
		out = fmt.Sprintf("weight %d%%", d.Weight)
	case messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK:
		out = fmt.Sprintf("returning to v%d", d.FromVersion)
	case messages.DeploymentState_DEPLOYMENT_STATE_DONE:
		out = fmt.Sprintf("v%d everywhere", d.ToVersion)
	case messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK:
		out = fmt.Sprintf("back on v%d", d.FromVersion)
	}
	if d.State == messages.DeploymentState_DEPLOYMENT_STATE_PAUSED && out != "" {
		out = "held at " + out
	}
	return out
}

// elapsed is how long the deployment has run (or ran, once finished).
func (st deployStatus) elapsed() time.Duration {
	d := st.d
	if d == nil || d.StartedUnixNano == 0 {
		return 0
	}
	end := st.now
	if d.FinishedUnixNano != 0 {
		end = time.Unix(0, d.FinishedUnixNano)
	}
	return end.Sub(time.Unix(0, d.StartedUnixNano))
}

// eta extrapolates the rate of healthy target tasks so far; "" when there
// is nothing to extrapolate from, or the deployment waits for a person.
func (st deployStatus) eta() string {
	d := st.d
	if d == nil || messages.DeploymentFinished(d.State) {
		return ""
	}
	switch d.State {
	case messages.DeploymentState_DEPLOYMENT_STATE_PAUSED, messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED,
		messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION, messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK:
		return ""
	}
	t := st.target()
	if t == nil || t.Healthy == 0 || t.Healthy >= t.Target {
		return ""
	}
	e := st.elapsed()
	return dur(e / time.Duration(t.Healthy) * time.Duration(t.Target-t.Healthy))
}

// weights is "v1 90%, v2 10%", or "" when every healthy task shares equally.
func weightsText(svc *messages.Service) string {
	w := svc.GetTrafficWeights()
	if len(w) == 0 {
		return ""
	}
	vs := make([]uint64, 0, len(w))
	for v := range w {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("v%d %d%%", v, w[v]))
	}
	return strings.Join(parts, ", ")
}

// headline: "web: rolling v1 → v2, awaiting-health, batch 2/3, 2/6 updated".
func (st deployStatus) headline() string { return st.headlineAt(true) }

func (st deployStatus) headlineAt(clock bool) string {
	name := st.svc.GetSpec().GetName()
	d := st.d
	if d == nil {
		return fmt.Sprintf("%s: no deployment, spec v%d", name, st.svc.GetSpecVersion())
	}
	kind := strategyName(d.Strategy)
	if d.Rollback {
		kind += " rollback"
	}
	line := fmt.Sprintf("%s: %s v%d → v%d, %s", name, kind, d.FromVersion, d.ToVersion, deploymentStateName(d.State))
	if s := st.stepAt(clock); s != "" {
		line += ", " + s
	}
	return line
}

// line is one plain line for a pipe: the headline, the counts per side,
// the reason if any. It holds no clock, so equal lines mean nothing
// changed.
func (st deployStatus) line() string {
	l := st.headlineAt(false)
	var parts []string
	for _, s := range st.sides {
		parts = append(parts, s.label()+" "+s.counts())
	}
	if len(parts) > 0 {
		l += "; " + strings.Join(parts, ", ")
	}
	if w := weightsText(st.svc); w != "" && st.d != nil && !messages.DeploymentFinished(st.d.State) {
		l += "; traffic " + w
	}
	if m := st.d.GetMessage(); m != "" {
		l += ": " + m
	}
	return l
}

// counts: "4/6 healthy" against the target, else of the tasks there.
func (s sideStatus) counts() string {
	want := s.Desired
	if s.Target > 0 {
		want = s.Target
	}
	out := fmt.Sprintf("%d/%d healthy", s.Healthy, want)
	if n := s.Desired - s.Healthy - s.Pending - s.Failed; n > 0 {
		out += fmt.Sprintf(", %d starting", n)
	}
	if s.Pending > 0 {
		out += fmt.Sprintf(", %d pending", s.Pending)
	}
	if s.Failed > 0 {
		out += fmt.Sprintf(", %d failed", s.Failed)
	}
	return out
}
