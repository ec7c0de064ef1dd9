package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
)

// task builds a task meant to run: slot, spec version, side, state and
// health (health only matters when withCheck).
func deployTask(slot, version uint64, side string, state messages.TaskState, health messages.HealthState, withCheck bool) *messages.Task {
	spec := &messages.ServiceSpec{Name: "web", Image: fmt.Sprintf("demo:v%d", version)}
	if withCheck {
		spec.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_HTTP, HttpPath: "/healthz"}
	}
	return &messages.Task{
		Id: fmt.Sprintf("t%02d%s%016d", slot, strings.Repeat("0", 5), version), ServiceName: "web", Slot: slot,
		SpecVersion: version, Side: side, Spec: spec, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
		Status: &messages.TaskStatus{State: state, Health: health},
	}
}

const (
	running  = messages.TaskState_TASK_STATE_RUNNING
	pending  = messages.TaskState_TASK_STATE_PENDING
	starting = messages.TaskState_TASK_STATE_STARTING
	healthy  = messages.HealthState_HEALTH_STATE_HEALTHY
	hstart   = messages.HealthState_HEALTH_STATE_STARTING
	noHealth = messages.HealthState_HEALTH_STATE_NONE
)

func deploySvc(replicas uint64, u *messages.UpdateConfig, d *messages.Deployment, weights map[uint64]uint32) *messages.Service {
	return &messages.Service{
		Id: "3f2a9c1d8e7b6a5f4c3d2e1f", Meta: &messages.Meta{Version: 80},
		Spec:         &messages.ServiceSpec{Name: "web", Image: fmt.Sprintf("demo:v%d", d.GetToVersion()), Replicas: replicas, UpdateConfig: u},
		PreviousSpec: &messages.ServiceSpec{Name: "web", Image: fmt.Sprintf("demo:v%d", d.GetFromVersion()), Replicas: replicas},
		SpecVersion:  max(d.GetToVersion(), 1), Deployment: d, TrafficWeights: weights,
	}
}

// The deployment views, each a pure function of a service, its tasks and
// a clock: the table of `service deployment`, the live view of a
// terminal, the plain line of a pipe and the JSON record, in one golden
// file per situation.
func TestDeploymentGolden(t *testing.T) {
	rollbackCfg := &messages.UpdateConfig{Parallelism: 2, Order: messages.UpdateOrder_UPDATE_ORDER_START_FIRST,
		FailureAction: messages.FailureAction_FAILURE_ACTION_ROLLBACK, MonitorMs: 10000, MaxFailureRatio: 0.2, DelayMs: 5000}
	rollingD := func(state messages.DeploymentState) *messages.Deployment {
		return &messages.Deployment{Id: "d1", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_ROLLING, State: state,
			FromVersion: 2, ToVersion: 3, Updated: []string{"1", "2", "3", "4"}, Batch: []string{"3", "4"}, Total: 6,
			StartedUnixNano: ns(65 * time.Second), StateSinceUnixNano: ns(12 * time.Second)}
	}
	rollingTasks := []*messages.Task{
		deployTask(1, 3, "", running, healthy, true), deployTask(2, 3, "", running, healthy, true),
		deployTask(3, 3, "", running, hstart, true), deployTask(4, 3, "", pending, noHealth, true),
		deployTask(5, 2, "", running, healthy, true), deployTask(6, 2, "", running, healthy, true),
	}
	paused := rollingD(messages.DeploymentState_DEPLOYMENT_STATE_PAUSED)
	paused.PausedFrom = messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH
	paused.Message = "task t03 on slot 3 unhealthy (failure action pause)"
	paused.FailedTasks = []string{"t0300000000000000000000003"}
	pauseCfg := &messages.UpdateConfig{Parallelism: 2, FailureAction: messages.FailureAction_FAILURE_ACTION_PAUSE}

	rolledBack := rollingD(messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK)
	rolledBack.FinishedUnixNano = ns(5 * time.Second)
	rolledBack.Message = "2 of 6 new tasks failed (ratio 0.33 > 0.2): task t04 on slot 4 exited (code 1)"
	rolledBack.FailedTasks = []string{"t0300000000000000000000003", "t0400000000000000000000003"}
	rolledBackTasks := []*messages.Task{
		deployTask(1, 2, "", running, healthy, true), deployTask(2, 2, "", running, healthy, true),
		deployTask(3, 2, "", running, healthy, true), deployTask(4, 2, "", running, healthy, true),
		deployTask(5, 2, "", running, healthy, true), deployTask(6, 2, "", running, healthy, true),
	}

	bg := func(state messages.DeploymentState, since time.Duration) *messages.Deployment {
		return &messages.Deployment{Id: "d2", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, State: state,
			FromVersion: 4, ToVersion: 5, Total: 3, StartedUnixNano: ns(40 * time.Second), StateSinceUnixNano: ns(since)}
	}
	bgCfg := &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, FailureAction: messages.FailureAction_FAILURE_ACTION_ROLLBACK}
	bgTasks := func(greenHealthy int) []*messages.Task {
		ts := []*messages.Task{deployTask(1, 4, "blue", running, noHealth, false), deployTask(2, 4, "blue", running, noHealth, false), deployTask(3, 4, "blue", running, noHealth, false)}
		for i := 1; i <= 3; i++ {
			h, st := healthy, running
			if i > greenHealthy {
				h, st = noHealth, starting
			}
			ts = append(ts, deployTask(uint64(i), 5, "green", st, h, true))
		}
		return ts
	}

	canary := func(state messages.DeploymentState) *messages.Deployment {
		return &messages.Deployment{Id: "d3", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, State: state,
			FromVersion: 1, ToVersion: 2, Weight: 10, CanaryReplicas: 1, Total: 5,
			StartedUnixNano: ns(3 * time.Minute), StateSinceUnixNano: ns(2 * time.Minute)}
	}
	canaryCfg := &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, CanaryReplicas: 1, CanaryWeight: 10,
		Parallelism: 1, FailureAction: messages.FailureAction_FAILURE_ACTION_ROLLBACK}
	canaryTasks := []*messages.Task{deployTask(6, 2, "canary", running, noHealth, false)}
	for i := uint64(1); i <= 5; i++ {
		canaryTasks = append(canaryTasks, deployTask(i, 1, "", running, noHealth, false))
	}
	promoting := canary(messages.DeploymentState_DEPLOYMENT_STATE_PROMOTING)
	promoting.Updated = []string{"1", "2"}
	promotingTasks := []*messages.Task{
		deployTask(1, 2, "", running, noHealth, false), deployTask(2, 2, "", running, noHealth, false),
		deployTask(3, 1, "", running, noHealth, false), deployTask(4, 1, "", running, noHealth, false), deployTask(5, 1, "", running, noHealth, false),
	}

	never := &messages.Service{Id: "aa11", Spec: &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 2}, SpecVersion: 1}

	cases := []struct {
		name  string
		svc   *messages.Service
		tasks []*messages.Task
	}{
		{"deploy_rolling", deploySvc(6, rollbackCfg, rollingD(messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH), nil), rollingTasks},
		{"deploy_rolling_paused", deploySvc(6, pauseCfg, paused, nil), rollingTasks},
		{"deploy_rolled_back", deploySvc(6, rollbackCfg, rolledBack, nil), rolledBackTasks},
		{"deploy_bluegreen_deploying", deploySvc(3, bgCfg, bg(messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_GREEN, 40*time.Second), map[uint64]uint32{4: 100}), bgTasks(2)},
		{"deploy_bluegreen_grace", deploySvc(3, bgCfg, bg(messages.DeploymentState_DEPLOYMENT_STATE_GRACE, 10*time.Second), map[uint64]uint32{5: 100}), bgTasks(3)},
		{"deploy_canary_weighted", deploySvc(5, canaryCfg, canary(messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED), map[uint64]uint32{1: 90, 2: 10}), canaryTasks},
		{"deploy_canary_promoting", deploySvc(5, canaryCfg, promoting, nil), promotingTasks},
		{"deploy_none", never, []*messages.Task{deployTask(1, 1, "", running, noHealth, false), deployTask(2, 1, "", pending, noHealth, false)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := newDeployStatus(tc.svc, tc.tasks, renderNow)
			var buf bytes.Buffer
			if err := renderDeployment(&buf, st); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("--- live view\n")
			for _, l := range st.progressLines() {
				buf.WriteString(l + "\n")
			}
			buf.WriteString("--- plain line\n" + st.line() + "\n--- json\n")
			if err := writeRecord(&buf, st); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, buf.Bytes())
		})
	}
}

// A JSON record is one valid object per line, with the deployment as
// protojson.
func TestDeploymentRecord(t *testing.T) {
	d := &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED, Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, FromVersion: 1, ToVersion: 2, Weight: 10}
	st := newDeployStatus(deploySvc(2, nil, d, map[uint64]uint32{1: 90, 2: 10}), []*messages.Task{deployTask(3, 2, "canary", running, noHealth, false)}, renderNow)
	var buf bytes.Buffer
	if err := writeRecord(&buf, st); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("record spans %d lines, want 1:\n%s", n, buf.String())
	}
	var got struct {
		Deployment struct {
			State  string `json:"state"`
			Weight int    `json:"weight"`
		} `json:"deployment"`
		Sides []sideStatus `json:"sides"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Deployment.State != "DEPLOYMENT_STATE_WEIGHTED" || got.Deployment.Weight != 10 {
		t.Errorf("deployment = %+v, want weighted at 10", got.Deployment)
	}
	if len(got.Sides) != 1 || got.Sides[0].Side != "canary" || got.Sides[0].Weight == nil || *got.Sides[0].Weight != 10 {
		t.Errorf("sides = %+v, want one canary side with 10%%", got.Sides)
	}
}

// When a follower stops, and whether the command then fails.
func TestFollowerVerdict(t *testing.T) {
	state := func(s messages.DeploymentState) deployStatus {
		d := &messages.Deployment{Id: "d1", State: s, FromVersion: 1, ToVersion: 2, Message: "why", PausedFrom: messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH}
		return newDeployStatus(deploySvc(1, nil, d, nil), nil, renderNow)
	}
	type want struct {
		stop bool
		err  string // "" = success
	}
	cases := []struct {
		name  string
		f     follower
		st    deployStatus
		want  want
		other bool // the deployment was replaced by another
	}{
		{"update: in flight goes on", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH), want{false, ""}, false},
		{"update: done succeeds", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_DONE), want{true, ""}, false},
		{"update: rolled back fails with the reason", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK), want{true, "rolled back to v1: why"}, false},
		{"update: failed fails", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_FAILED), want{true, "failed: why"}, false},
		{"update: paused fails, naming resume and rollback", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_PAUSED), want{true, "paused at awaiting-health: why: `warren service resume"}, false},
		{"update: a canary's weighted step waits for a person", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED), want{true, ""}, false},
		{"update: manual blue/green waits for promote", follower{id: "d1"}, state(messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION), want{true, ""}, false},
		{"update: replaced by another deployment fails", follower{id: "d0"}, state(messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH), want{true, "was replaced by another"}, true},
		{"rollback: rolled back succeeds", follower{id: "d1", rollback: true}, state(messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK), want{true, ""}, false},
		{"rollback: rolling back goes on", follower{id: "d1", rollback: true}, state(messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK), want{false, ""}, false},
		{"rollback: a rollback deployed as a canary stops at its weighted step", follower{id: "d1", rollback: true}, state(messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED), want{true, ""}, false},
		{"watch: goes on through a weighted step", follower{watchOnly: true}, state(messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED), want{false, ""}, false},
		{"watch: stops without error on paused", follower{watchOnly: true}, state(messages.DeploymentState_DEPLOYMENT_STATE_PAUSED), want{true, ""}, false},
		{"watch: stops without error on rolled back", follower{watchOnly: true}, state(messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK), want{true, ""}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.name = "web"
			stop, err := tc.f.verdict(tc.st)
			if stop != tc.want.stop {
				t.Errorf("stop = %v, want %v", stop, tc.want.stop)
			}
			switch {
			case tc.want.err == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.want.err != "" && (err == nil || !strings.Contains(err.Error(), tc.want.err)):
				t.Errorf("error %v, want one containing %q", err, tc.want.err)
			}
		})
	}
}

// In a pipe a follower prints a line only when something changed.
func TestFollowerPlainLinesOnChange(t *testing.T) {
	var buf bytes.Buffer
	f := &follower{name: "web", out: &buf}
	d := &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH, FromVersion: 1, ToVersion: 2, Total: 2, Updated: []string{"1"}}
	svc := deploySvc(2, nil, d, nil)
	one := []*messages.Task{deployTask(1, 2, "", starting, noHealth, false), deployTask(2, 1, "", running, noHealth, false)}
	two := []*messages.Task{deployTask(1, 2, "", running, noHealth, false), deployTask(2, 1, "", running, noHealth, false)}
	for i, tasks := range [][]*messages.Task{one, one, two, two, two} {
		// The clock moves between polls; the lines must not.
		if err := f.show(newDeployStatus(svc, tasks, renderNow.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines for 2 distinct states, want 2:\n%s", len(lines), buf.String())
	}
}

// The live view redraws in place: from the second drawing on it moves the
// cursor up over the lines it drew.
func TestFollowerLiveRedraw(t *testing.T) {
	var buf bytes.Buffer
	f := &follower{name: "web", out: &buf, live: true}
	d := &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH, FromVersion: 1, ToVersion: 2, Total: 1}
	st := newDeployStatus(deploySvc(1, nil, d, nil), []*messages.Task{deployTask(1, 1, "", running, noHealth, false)}, renderNow)
	for range 2 {
		if err := f.show(st); err != nil {
			t.Fatal(err)
		}
	}
	n := len(st.progressLines())
	if want := fmt.Sprintf("\x1b[%dA", n); strings.Count(buf.String(), want) != 1 {
		t.Errorf("want one cursor-up by %d lines, got %q", n, buf.String())
	}
}

func TestBar(t *testing.T) {
	cases := []struct {
		n, total int
		want     string
	}{
		{0, 6, "[----------]"}, {3, 6, "[#####-----]"}, {6, 6, "[##########]"}, {7, 6, "[##########]"}, {1, 0, "[##########]"}, {0, 0, "[----------]"},
	}
	for _, tc := range cases {
		if got := bar(tc.n, tc.total, 10); got != tc.want {
			t.Errorf("bar(%d, %d) = %s, want %s", tc.n, tc.total, got, tc.want)
		}
	}
}

// The plain line holds no clock, even where the views count down (a
// blue/green grace period): otherwise a pipe would get a line per poll.
func TestPlainLineHasNoClock(t *testing.T) {
	d := &messages.Deployment{Id: "d2", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, State: messages.DeploymentState_DEPLOYMENT_STATE_GRACE,
		FromVersion: 1, ToVersion: 2, Total: 1, StartedUnixNano: ns(time.Minute), StateSinceUnixNano: ns(10 * time.Second)}
	svc := deploySvc(1, nil, d, map[uint64]uint32{2: 100})
	tasks := []*messages.Task{deployTask(1, 2, "green", running, noHealth, false), deployTask(1, 1, "blue", running, noHealth, false)}
	a, b := newDeployStatus(svc, tasks, renderNow), newDeployStatus(svc, tasks, renderNow.Add(3*time.Second))
	if a.line() != b.line() {
		t.Errorf("plain line changed with the clock:\n%s\n%s", a.line(), b.line())
	}
	if a.progressLines()[0] == b.progressLines()[0] {
		t.Errorf("live view did not count the grace down: %s", a.progressLines()[0])
	}
}
