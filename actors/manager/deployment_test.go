package manager

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// runTasks plays the workers' part for a deployment test: every task the
// state places on a fake worker is reported running, with the health
// health gives it, and every task told to stop is reported shut down.
// The reports go to whichever manager leads.
func runTasks(t *testing.T, c *testCluster, health func(*messages.Task) messages.HealthState) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { cancel(); wg.Wait() })
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			time.Sleep(30 * time.Millisecond)
			var m *testManager
			for _, x := range c.up() {
				if x.store().IsLeader() {
					m = x
				}
			}
			if m == nil {
				continue
			}
			for _, tk := range m.store().State.Tasks(store.TaskFilter{}) {
				w := c.workers[tk.NodeId]
				if w == nil {
					continue
				}
				st := tk.GetStatus().GetState()
				switch {
				case tk.DesiredState == messages.TaskState_TASK_STATE_RUNNING && (st == messages.TaskState_TASK_STATE_ASSIGNED || st == messages.TaskState_TASK_STATE_RUNNING):
					h := health(tk)
					if st == messages.TaskState_TASK_STATE_RUNNING && tk.Status.GetHealth() == h {
						continue
					}
					ip := ""
					if p, err := netip.ParsePrefix(m.store().State.Node(tk.NodeId).GetSubnet()); err == nil {
						ip = p.Addr().Next().Next().String()
					}
					w.report(m, tk, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Health: h, Ip: ip,
						TimestampUnixNano: time.Now().UnixNano()})
				case tk.DesiredState == messages.TaskState_TASK_STATE_SHUTDOWN && !terminal(st):
					w.report(m, tk, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_SHUTDOWN, TimestampUnixNano: time.Now().UnixNano()})
				}
			}
		}
	}()
}

// healthyUnless makes tasks of image bad unhealthy, the rest healthy.
func healthyUnless(bad string) func(*messages.Task) messages.HealthState {
	return func(tk *messages.Task) messages.HealthState {
		if tk.Spec.GetImage() == bad {
			return messages.HealthState_HEALTH_STATE_UNHEALTHY
		}
		return messages.HealthState_HEALTH_STATE_HEALTHY
	}
}

// watchDeployment records every committed deployment state of service
// name, in order, as m's replica applies them.
func watchDeployment(t *testing.T, m *testManager, name string) func() []string {
	var mu sync.Mutex
	var seen []string
	sub := m.system().EventStream.Subscribe(func(evt any) {
		sc, ok := evt.(*messages.StateChanged)
		if !ok {
			return
		}
		for _, ch := range sc.Changes {
			if v := ch.GetService(); v != nil && v.Spec.GetName() == name && v.Deployment != nil && v.Deployment.Index == sc.Index {
				mu.Lock()
				seen = append(seen, stateName(v.Deployment.State))
				mu.Unlock()
			}
		}
	})
	t.Cleanup(func() { m.system().EventStream.Unsubscribe(sub) })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Compact(slices.Clone(seen))
	}
}

func deploySpec(name string, replicas uint64, image string, uc *messages.UpdateConfig) *messages.ServiceSpec {
	s := workerSpec(name, replicas)
	s.Image = image
	s.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_TCP, Port: 80}
	s.UpdateConfig = uc
	return s
}

func (c *testCluster) must(t *testing.T, m *testManager, msg proto.Message) *messages.Service {
	t.Helper()
	var r *messages.ServiceReply
	within(t, 15*time.Second, fmt.Sprintf("%T answered", msg), func() bool {
		res, err := c.cli.ask(m, msg, 10*time.Second)
		r, _ = res.(*messages.ServiceReply)
		return err == nil && r != nil && (r.Error == nil || r.Error.Code != messages.ErrorCode_ERROR_CODE_UNAVAILABLE)
	})
	if r.Error != nil {
		t.Fatalf("%T: %v", msg, r.Error.Message)
	}
	return r.Service
}

// deploymentIn waits until service name's deployment is in state want.
func deploymentIn(t *testing.T, m *testManager, name string, want messages.DeploymentState, d time.Duration) *messages.Service {
	t.Helper()
	var v *messages.Service
	deadline := time.Now().Add(d)
	for {
		v = m.store().State.ServiceByName(name)
		if v.GetDeployment().GetState() == want {
			return v
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, tk := range m.store().State.Tasks(store.TaskFilter{ServiceID: v.GetId()}) {
				fmt.Fprintf(&b, "\n  slot %d %s %s v%d side %q desired %v status %v health %v created %d",
					tk.Slot, tk.Id[:8], tk.Spec.GetImage(), tk.SpecVersion, tk.Side, tk.DesiredState, tk.GetStatus().GetState(), tk.GetStatus().GetHealth(), tk.GetMeta().GetCreatedUnixNano())
			}
			t.Fatalf("%s's deployment is not %s after %v: %v%s", name, stateName(want), d, v.GetDeployment(), b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// images is the image of every live task of service name, by side.
func images(m *testManager, name string) map[string][]string {
	out := map[string][]string{}
	svc := m.store().State.ServiceByName(name)
	for _, ts := range liveTasks(m, name) {
		for _, tk := range ts {
			side := sideOf(svc, tk)
			if side == "" {
				side = "stable"
			}
			out[side] = append(out[side], tk.Spec.GetImage())
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

func TestDeploymentRolling(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	runTasks(t, c, healthyUnless("demo:bad"))
	uc := &messages.UpdateConfig{Parallelism: 2, MonitorMs: 100}
	c.must(t, m, &messages.CreateServiceRequest{Spec: deploySpec("web", 4, "demo:v1", uc)})
	within(t, 10*time.Second, "web at 4, ready", func() bool {
		return converged(m, "web", 4) && len(slices.DeleteFunc(slices.Concat(slices.Collect(maps.Values(liveTasks(m, "web")))...), ready)) == 0
	})

	t.Run("to v2, two slots at a time", func(t *testing.T) {
		seen := watchDeployment(t, m, "web")
		// At no time may more than the batch be out of service: watch the
		// slots without a ready task while it rolls.
		var worst int
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				down := 0
				for s := uint64(1); s <= 4; s++ {
					if !slices.ContainsFunc(liveTasks(m, "web")[s], ready) {
						down++
					}
				}
				worst = max(worst, down)
			}
		}()
		c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 4, "demo:v2", uc)})
		v := deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_DONE, 20*time.Second)
		close(stop)
		<-done
		within(t, 5*time.Second, "only v2 left", func() bool { return converged(m, "web", 4) })
		if got := images(m, "web"); !slices.Equal(got["stable"], []string{"demo:v2", "demo:v2", "demo:v2", "demo:v2"}) {
			t.Fatalf("tasks after the update: %v", got)
		}
		want := []string{"starting-batch", "awaiting-health", "starting-batch", "awaiting-health", "monitoring", "done"}
		if got := seen(); !slices.Equal(got, want) {
			t.Fatalf("states %v, want %v", got, want)
		}
		if worst > 2 {
			t.Fatalf("%d slots were out of service at once with parallelism 2", worst)
		}
		if d := v.Deployment; d.FromVersion != 1 || d.ToVersion != 2 || len(d.Updated) != 4 {
			t.Fatalf("deployment %v", d)
		}
	})

	t.Run("to a v2 that never becomes healthy rolls back", func(t *testing.T) {
		seen := watchDeployment(t, m, "web")
		c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 4, "demo:bad", uc)})
		v := deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK, 20*time.Second)
		if v.Spec.Image != "demo:v2" || !strings.Contains(v.Deployment.Message, "unhealthy") {
			t.Fatalf("after the rollback: image %s, message %q", v.Spec.Image, v.Deployment.Message)
		}
		within(t, 5*time.Second, "v2 everywhere again", func() bool {
			return converged(m, "web", 4) && slices.Equal(images(m, "web")["stable"], []string{"demo:v2", "demo:v2", "demo:v2", "demo:v2"})
		})
		got := seen()
		if !slices.Contains(got, "rolling-back") || got[len(got)-1] != "rolled-back" || slices.Contains(got, "monitoring") {
			t.Fatalf("states %v: want awaiting-health, rolling-back, rolled-back", got)
		}
	})

	t.Run("pause on failure holds, rollback goes back", func(t *testing.T) {
		pause := &messages.UpdateConfig{Parallelism: 1, MonitorMs: 100, FailureAction: messages.FailureAction_FAILURE_ACTION_PAUSE}
		c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 4, "demo:bad", pause)})
		v := deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_PAUSED, 20*time.Second)
		if !strings.Contains(v.Deployment.Message, "resume") || v.Deployment.PausedFrom != messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH {
			t.Fatalf("paused deployment %v", v.Deployment)
		}
		c.settle(t)
		if n := len(images(m, "web")["stable"]); n != 4 {
			t.Fatalf("paused with %d live tasks: %v", n, images(m, "web"))
		}
		c.must(t, m, &messages.RollbackServiceRequest{Name: "web"})
		deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK, 20*time.Second)
		within(t, 5*time.Second, "v2 everywhere again", func() bool {
			return slices.Equal(images(m, "web")["stable"], []string{"demo:v2", "demo:v2", "demo:v2", "demo:v2"})
		})
	})
}

func TestDeploymentBlueGreen(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	runTasks(t, c, healthyUnless("demo:bad"))
	bg := func(manual bool) *messages.UpdateConfig {
		return &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, GraceMs: 300, SwitchManual: manual}
	}
	c.must(t, m, &messages.CreateServiceRequest{Spec: deploySpec("web", 3, "demo:v1", bg(false))})
	within(t, 10*time.Second, "web at 3", func() bool { return converged(m, "web", 3) })

	t.Run("switch when green is healthy, then clean blue", func(t *testing.T) {
		seen := watchDeployment(t, m, "web")
		v := c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 3, "demo:v2", bg(false))})
		if w := v.TrafficWeights; len(w) != 1 || w[1] != 100 {
			t.Fatalf("while green deploys, weights %v: want all to blue (v1)", w)
		}
		v = deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_GRACE, 20*time.Second)
		if w := v.TrafficWeights; len(w) != 1 || w[2] != 100 {
			t.Fatalf("after the switch, weights %v: want all to green (v2)", w)
		}
		if got := images(m, "web"); len(got["blue"]) != 3 || len(got["green"]) != 3 {
			t.Fatalf("in the grace period: %v, want 3 blue and 3 green", got)
		}
		deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_DONE, 20*time.Second)
		within(t, 5*time.Second, "only green, now stable", func() bool {
			return slices.Equal(images(m, "web")["stable"], []string{"demo:v2", "demo:v2", "demo:v2"}) && len(images(m, "web")) == 1
		})
		want := []string{"deploying-green", "switched", "grace", "cleaning-blue", "done"}
		if got := seen(); !slices.Equal(got, want) {
			t.Fatalf("states %v, want %v", got, want)
		}
	})

	t.Run("manual switch, rollback in the grace period", func(t *testing.T) {
		c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 3, "demo:v3", bg(true))})
		deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION, 20*time.Second)
		c.must(t, m, &messages.PromoteServiceRequest{Name: "web", Full: true})
		deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED, 5*time.Second)
		v := c.must(t, m, &messages.RollbackServiceRequest{Name: "web"})
		if d := v.Deployment; d.State != messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK || v.TrafficWeights[d.FromVersion] != 100 || len(v.TrafficWeights) != 1 {
			t.Fatalf("the rollback's own commit must switch back: %v, weights %v", d, v.TrafficWeights)
		}
		v = deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK, 20*time.Second)
		if v.Spec.Image != "demo:v2" || len(v.TrafficWeights) != 0 {
			t.Fatalf("after the rollback: %s, weights %v", v.Spec.Image, v.TrafficWeights)
		}
		within(t, 5*time.Second, "only blue, now stable", func() bool {
			return slices.Equal(images(m, "web")["stable"], []string{"demo:v2", "demo:v2", "demo:v2"}) && len(images(m, "web")) == 1
		})
	})

	t.Run("green never healthy: blue keeps the traffic", func(t *testing.T) {
		v := c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 3, "demo:bad", bg(false))})
		blue := v.SpecVersion
		v = deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK, 20*time.Second)
		if v.Spec.Image != "demo:v2" {
			t.Fatalf("after the failed green: %s", v.Spec.Image)
		}
		_ = blue
	})
}

func TestDeploymentCanary(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	runTasks(t, c, healthyUnless("demo:bad"))
	canary := &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, CanaryReplicas: 1, CanaryWeight: 10, Parallelism: 2, MonitorMs: 50}
	c.must(t, m, &messages.CreateServiceRequest{Spec: deploySpec("web", 5, "demo:v1", canary)})
	within(t, 10*time.Second, "web at 5", func() bool { return converged(m, "web", 5) })

	seen := watchDeployment(t, m, "web")
	c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 5, "demo:v2", canary)})
	v := deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED, 20*time.Second)
	if w := v.TrafficWeights; w[1] != 90 || w[2] != 10 {
		t.Fatalf("weights %v: want v1 90, v2 10", w)
	}
	if got := images(m, "web"); len(got["stable"]) != 5 || !slices.Equal(got["canary"], []string{"demo:v2"}) {
		t.Fatalf("with the canary: %v", got)
	}
	v = c.must(t, m, &messages.PromoteServiceRequest{Name: "web", Weight: 50})
	if w := v.TrafficWeights; w[1] != 50 || w[2] != 50 || v.Deployment.State != messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED {
		t.Fatalf("after promote --weight 50: %v, weights %v", v.Deployment.State, w)
	}
	c.must(t, m, &messages.PromoteServiceRequest{Name: "web", Full: true})
	deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_DONE, 20*time.Second)
	within(t, 5*time.Second, "v2 only, no canary", func() bool {
		got := images(m, "web")
		return len(got) == 1 && slices.Equal(got["stable"], []string{"demo:v2", "demo:v2", "demo:v2", "demo:v2", "demo:v2"})
	})
	got := seen()
	if got[0] != "deploying-canary" || got[1] != "weighted" || !slices.Contains(got, "promoting") || got[len(got)-1] != "done" {
		t.Fatalf("states %v", got)
	}
	if w := m.store().State.ServiceByName("web").TrafficWeights; len(w) != 0 {
		t.Fatalf("weights after done: %v", w)
	}

	t.Run("failing canary aborts and rolls back", func(t *testing.T) {
		c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 5, "demo:bad", canary)})
		v := deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK, 20*time.Second)
		within(t, 5*time.Second, "no canary left", func() bool { return len(images(m, "web")["canary"]) == 0 })
		if v.Spec.Image != "demo:v2" {
			t.Fatalf("after the failed canary: %s", v.Spec.Image)
		}
	})
}

// TestDeploymentBadInput: every refused request answers with an error that
// names the fix and commits nothing.
func TestDeploymentBadInput(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1"}})
	m := c.mgrs[0]
	runTasks(t, c, healthyUnless("demo:bad"))
	slow := &messages.UpdateConfig{MonitorMs: 60000}
	c.must(t, m, &messages.CreateServiceRequest{Spec: deploySpec("web", 2, "demo:v1", slow)})
	glob := deploySpec("agent", 0, "demo:v1", nil)
	glob.Mode = messages.ServiceMode_SERVICE_MODE_GLOBAL
	c.must(t, m, &messages.CreateServiceRequest{Spec: glob})
	within(t, 10*time.Second, "web at 2", func() bool { return converged(m, "web", 2) })
	ready4 := func() bool {
		return len(slices.DeleteFunc(slices.Concat(slices.Collect(maps.Values(liveTasks(m, "web")))...), ready)) == 0
	}
	within(t, 10*time.Second, "web ready", ready4)

	refused := func(t *testing.T, msg proto.Message, want string) {
		t.Helper()
		c.settle(t)
		before := m.store().State.Index()
		res, err := c.cli.ask(m, msg, 10*time.Second)
		r, _ := res.(*messages.ServiceReply)
		if err != nil || r == nil || r.Error == nil || !strings.Contains(r.Error.Message, want) {
			t.Fatalf("%T: %v %v; want an error containing %q", msg, err, r, want)
		}
		if after := m.store().State.Index(); after != before {
			t.Fatalf("%T was refused but the raft index moved from %d to %d", msg, before, after)
		}
	}
	v1 := deploySpec("web", 2, "demo:v1", slow)
	v2 := deploySpec("web", 2, "demo:v2", slow)
	bg := deploySpec("agent", 0, "demo:v2", &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN})
	bg.Mode = messages.ServiceMode_SERVICE_MODE_GLOBAL
	invalid := deploySpec("web", 2, "demo:v2", &messages.UpdateConfig{MaxFailureRatio: 2})
	for _, tt := range []struct {
		name string
		msg  proto.Message
		want string
	}{
		{"an update that changes nothing", &messages.UpdateServiceRequest{Name: "web", Spec: v1}, "nothing to update"},
		{"an invalid spec", &messages.UpdateServiceRequest{Name: "web", Spec: invalid}, "max failure ratio 2 is outside 0-1"},
		{"promote with no deployment", &messages.PromoteServiceRequest{Name: "web", Full: true}, "no deployment in flight"},
		{"pause with no deployment", &messages.PauseServiceRequest{Name: "web"}, "start one with `warren service update web`"},
		{"rollback of a service never updated", &messages.RollbackServiceRequest{Name: "web"}, "no previous spec"},
		{"blue/green on a global service", &messages.UpdateServiceRequest{Name: "agent", Spec: bg}, "use --strategy rolling"},
	} {
		t.Run(tt.name, func(t *testing.T) { refused(t, tt.msg, tt.want) })
	}

	c.must(t, m, &messages.UpdateServiceRequest{Name: "web", Spec: v2})
	deploymentIn(t, m, "web", messages.DeploymentState_DEPLOYMENT_STATE_MONITORING, 10*time.Second)
	for _, tt := range []struct {
		name string
		msg  proto.Message
		want string
	}{
		{"a second update in flight", &messages.UpdateServiceRequest{Name: "web", Spec: deploySpec("web", 2, "demo:v3", slow)}, "deployment in flight (monitoring, version 1 to 2)"},
		{"promote a rolling deployment", &messages.PromoteServiceRequest{Name: "web", Full: true}, "promote applies to a canary"},
		{"a weight above 100", &messages.PromoteServiceRequest{Name: "web", Weight: 150}, "weight 150 is outside 1-100"},
		{"resume what is not paused", &messages.ResumeServiceRequest{Name: "web"}, "is not paused (it is monitoring)"},
	} {
		t.Run(tt.name, func(t *testing.T) { refused(t, tt.msg, tt.want) })
	}
	c.must(t, m, &messages.PauseServiceRequest{Name: "web"})
	refused(t, &messages.PauseServiceRequest{Name: "web"}, "already paused")
	v := c.must(t, m, &messages.ResumeServiceRequest{Name: "web"})
	if v.Deployment.State != messages.DeploymentState_DEPLOYMENT_STATE_MONITORING {
		t.Fatalf("resumed into %v, want monitoring", v.Deployment.State)
	}
}

// TestDeploymentResumesOnNewLeader: the leader crashes in the middle of a
// deployment; the new leader's deployment actor resumes at the committed
// step and finishes, and no slot ever got a second task of the new spec.
func TestDeploymentResumesOnNewLeader(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 3, workers: []string{"wrk-1", "wrk-2"}})
	runTasks(t, c, healthyUnless("demo:bad"))
	tests := []struct {
		name  string
		uc    *messages.UpdateConfig
		crash func(*messages.Deployment) bool // crash the leader once this holds
		side  string                          // live tasks at the end
	}{
		{"rolling, second batch", &messages.UpdateConfig{Parallelism: 1, MonitorMs: 300},
			func(d *messages.Deployment) bool { return len(d.Updated) >= 2 }, "stable"},
		{"blue/green, green deploying", &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, GraceMs: 200},
			func(d *messages.Deployment) bool {
				return d.State == messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_GREEN
			}, "stable"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("svc%d", i)
			l := c.leader(t)
			c.must(t, l, &messages.CreateServiceRequest{Spec: deploySpec(name, 4, "demo:v1", tt.uc)})
			within(t, 10*time.Second, name+" at 4", func() bool { return converged(l, name, 4) })
			c.must(t, l, &messages.UpdateServiceRequest{Name: name, Spec: deploySpec(name, 4, "demo:v2", tt.uc)})
			within(t, 20*time.Second, "the crash point", func() bool { return tt.crash(l.store().State.ServiceByName(name).GetDeployment()) })
			l.stop()
			t.Cleanup(func() { l.restart(t) })
			nl := c.leader(t)
			deploymentIn(t, nl, name, messages.DeploymentState_DEPLOYMENT_STATE_DONE, 30*time.Second)
			within(t, 10*time.Second, name+" converged on v2", func() bool {
				got := images(nl, name)
				return converged(nl, name, 4) && slices.Equal(got[tt.side], []string{"demo:v2", "demo:v2", "demo:v2", "demo:v2"}) && len(got) == 1
			})
			st := nl.store().State
			perSlot := map[uint64]int{}
			for _, tk := range st.Tasks(store.TaskFilter{ServiceID: st.ServiceByName(name).Id}) {
				if tk.Spec.GetImage() == "demo:v2" {
					perSlot[tk.Slot]++
				}
			}
			for slot, n := range perSlot {
				if n != 1 {
					t.Fatalf("slot %d got %d tasks of the new spec (started twice): %s", slot, n, taskSig(nl, name))
				}
			}
		})
	}
}

// TestCanaryWeightsFollowTemplates: a scale bumps the spec version without
// replacing tasks, so a canary's stable tasks may carry an older version
// number than the deployment's from_version; they must still get the
// stable share (they once got none, and the canary all the traffic).
func TestCanaryWeightsFollowTemplates(t *testing.T) {
	v1 := &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 4}
	v2 := &messages.ServiceSpec{Name: "web", Image: "demo:v2", Replicas: 4}
	svc := &messages.Service{Spec: v2, PreviousSpec: v1, SpecVersion: 4, TrafficWeights: map[uint64]uint32{3: 90, 4: 10},
		Deployment: &messages.Deployment{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, State: messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED, FromVersion: 3, ToVersion: 4, Weight: 10}}
	var eps []*messages.Task
	for i := range 9 {
		eps = append(eps, &messages.Task{Spec: v1, SpecVersion: 1, Slot: uint64(i + 1)}) // created before two scales
	}
	eps = append(eps, &messages.Task{Spec: v2, SpecVersion: 4, Slot: 10, Side: sideCanary})
	w := endpointWeightsBy(svc.TrafficWeights, eps, weightVersion(svc))
	var stable, canary uint32
	for i, x := range w {
		if i < 9 {
			stable += x
		} else {
			canary += x
		}
	}
	if share := float64(canary) / float64(stable+canary); share < 0.09 || share > 0.11 {
		t.Fatalf("weights %v: the canary gets %.0f%% of the traffic, want 10%%", w, share*100)
	}
}
