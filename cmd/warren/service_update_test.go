package main

import (
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// runUpdateFlags runs `warren service update ARGS...` through the real app
// and argument handling, with the action replaced by one that parses the
// flags and applies them to cur, so no cluster is needed. parseErr is an
// error found before anything would be sent (no connection either).
func runUpdateFlags(t *testing.T, cur *messages.ServiceSpec, args []string) (*messages.ServiceSpec, error) {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	upd := find(find(app.Commands, "service").Subcommands, "update")
	if upd == nil {
		t.Fatal("no `service update` command")
	}
	var spec *messages.ServiceSpec
	upd.Action = func(c *cli.Context) error {
		if err := exactArgs(c, 1, "one service name"); err != nil {
			return err
		}
		edits, err := parseUpdateFlags(c)
		if err != nil {
			return err
		}
		s := proto.Clone(cur).(*messages.ServiceSpec)
		for _, e := range edits {
			if err := e(s); err != nil {
				return err
			}
		}
		spec = s
		return nil
	}
	err := app.Run(interspersed(app, append([]string{"warren", "service", "update"}, args...)))
	return spec, err
}

func TestUpdateFlags(t *testing.T) {
	cur := &messages.ServiceSpec{
		Name: "web", Image: "demo:v1", Replicas: 3,
		Env:         map[string]string{"A": "1", "B": "2"},
		Ports:       []*messages.PortConfig{{Protocol: "tcp", PublishedPort: 8080, TargetPort: 80}, {Protocol: "udp", TargetPort: 53}},
		Constraints: []string{"node.labels.zone==a"},
		HealthCheck: &messages.HealthCheck{Kind: messages.HealthCheck_KIND_HTTP, HttpPath: "/healthz", Port: 80, IntervalMs: 5000},
		UpdateConfig: &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, Parallelism: 2,
			FailureAction: messages.FailureAction_FAILURE_ACTION_ROLLBACK},
	}
	bare := &messages.ServiceSpec{Name: "api", Image: "api:1", Replicas: 2}
	global := &messages.ServiceSpec{Name: "agent", Image: "agent:1", Mode: messages.ServiceMode_SERVICE_MODE_GLOBAL}
	with := func(base *messages.ServiceSpec, f func(s *messages.ServiceSpec)) *messages.ServiceSpec {
		s := proto.Clone(base).(*messages.ServiceSpec)
		f(s)
		return s
	}
	cases := []struct {
		name    string
		cur     *messages.ServiceSpec
		args    []string
		want    *messages.ServiceSpec
		wantErr string
	}{
		{name: "image", cur: cur, args: []string{"web", "--image", "demo:v2"},
			want: with(cur, func(s *messages.ServiceSpec) { s.Image = "demo:v2" })},
		{name: "env: remove first, then add (flags after the name)", cur: cur, args: []string{"web", "--env-rm", "A", "--env-add", "A=3", "--env-add", "C=x,y"},
			want: with(cur, func(s *messages.ServiceSpec) { s.Env = map[string]string{"A": "3", "B": "2", "C": "x,y"} })},
		{name: "env added to a spec without any", cur: bare, args: []string{"api", "--env-add", "K=v"},
			want: with(bare, func(s *messages.ServiceSpec) { s.Env = map[string]string{"K": "v"} })},
		{name: "publish: remove by published port, a declared one by target, add one", cur: cur,
			args: []string{"web", "--publish-rm", "8080", "--publish-rm", "53/udp", "--publish-add", "9090:90"},
			want: with(cur, func(s *messages.ServiceSpec) {
				s.Ports = []*messages.PortConfig{{Protocol: "tcp", PublishedPort: 9090, TargetPort: 90}}
			})},
		{name: "publish-add on a published port replaces it", cur: cur, args: []string{"web", "--publish-add", "8080:81"},
			want: with(cur, func(s *messages.ServiceSpec) {
				s.Ports = []*messages.PortConfig{{Protocol: "udp", TargetPort: 53}, {Protocol: "tcp", PublishedPort: 8080, TargetPort: 81}}
			})},
		{name: "constraints", cur: cur, args: []string{"web", "--constraint-rm", "node.labels.zone==a", "--constraint-add", "node.role!=manager"},
			want: with(cur, func(s *messages.ServiceSpec) { s.Constraints = []string{"node.role!=manager"} })},
		{name: "replicas", cur: cur, args: []string{"web", "--replicas", "6"},
			want: with(cur, func(s *messages.ServiceSpec) { s.Replicas = 6 })},
		{name: "limits set", cur: bare, args: []string{"api", "--limit-memory", "64M", "--limit-cpu", "0.5"},
			want: with(bare, func(s *messages.ServiceSpec) {
				s.Resources = &messages.ResourceRequirements{Limits: &messages.Resources{MemoryBytes: 64 << 20, NanoCpus: 5e8}}
			})},
		{name: "limits removed give back the spec without resources",
			cur: with(bare, func(s *messages.ServiceSpec) {
				s.Resources = &messages.ResourceRequirements{Limits: &messages.Resources{MemoryBytes: 64 << 20}}
			}),
			args: []string{"api", "--limit-memory", "0"}, want: bare},
		{name: "health: one setting of the existing check", cur: cur, args: []string{"web", "--health-retries", "5"},
			want: with(cur, func(s *messages.ServiceSpec) { s.HealthCheck.Retries = 5 })},
		{name: "health: a new check replaces the old, its port from the first port", cur: cur, args: []string{"web", "--health-cmd", "tcp"},
			want: with(cur, func(s *messages.ServiceSpec) {
				s.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_TCP, Port: 80}
			})},
		{name: "health: none removes the check", cur: cur, args: []string{"web", "--health-cmd", "none"},
			want: with(cur, func(s *messages.ServiceSpec) { s.HealthCheck = nil })},
		{name: "rolling settings are kept in update_config", cur: bare,
			args: []string{"api", "--update-parallelism", "2", "--update-delay", "5s", "--update-order", "start-first",
				"--update-failure-action", "pause", "--update-monitor", "10s", "--update-max-failure-ratio", "0.2"},
			want: with(bare, func(s *messages.ServiceSpec) {
				s.UpdateConfig = &messages.UpdateConfig{Parallelism: 2, DelayMs: 5000, Order: messages.UpdateOrder_UPDATE_ORDER_START_FIRST,
					FailureAction: messages.FailureAction_FAILURE_ACTION_PAUSE, MonitorMs: 10000, MaxFailureRatio: 0.2}
			})},
		{name: "a new update_config keeps the other settings at their defaults", cur: bare, args: []string{"api", "--update-parallelism", "3"},
			want: with(bare, func(s *messages.ServiceSpec) { s.UpdateConfig = &messages.UpdateConfig{Parallelism: 3} })},
		{name: "blue-green", cur: bare, args: []string{"api", "--image", "api:2", "--strategy", "blue-green", "--switch-after", "manual", "--grace", "1m"},
			want: with(bare, func(s *messages.ServiceSpec) {
				s.Image = "api:2"
				s.UpdateConfig = &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, SwitchManual: true, GraceMs: 60000,
					FailureAction: messages.FailureAction_FAILURE_ACTION_ROLLBACK}
			})},
		{name: "canary", cur: bare, args: []string{"api", "--image", "api:2", "--strategy", "canary", "--canary-replicas", "2", "--weight", "25"},
			want: with(bare, func(s *messages.ServiceSpec) {
				s.Image = "api:2"
				s.UpdateConfig = &messages.UpdateConfig{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, CanaryReplicas: 2, CanaryWeight: 25,
					FailureAction: messages.FailureAction_FAILURE_ACTION_ROLLBACK}
			})},
		{name: "the strategy is sticky: --weight on a canary service needs no --strategy", cur: cur, args: []string{"web", "--image", "demo:v2", "--weight", "5"},
			want: with(cur, func(s *messages.ServiceSpec) { s.Image = "demo:v2"; s.UpdateConfig.CanaryWeight = 5 })},

		// Refusals, each naming the flag and the fix.
		{name: "no flag", cur: cur, args: []string{"web"}, wantErr: "nothing to update: give what changes, e.g. `warren service update web --image demo:v2`"},
		{name: "no name", cur: cur, args: []string{"--image", "demo:v2"}, wantErr: "expected one service name"},
		{name: "bad image", cur: cur, args: []string{"web", "--image", "Demo:V2"}, wantErr: "invalid --image"},
		{name: "env-add without =", cur: cur, args: []string{"web", "--env-add", "A"}, wantErr: `invalid --env-add "A": expected KEY=VALUE`},
		{name: "env-rm with a value", cur: cur, args: []string{"web", "--env-rm", "A=1"}, wantErr: "give the variable's name only"},
		{name: "env-rm of a missing variable", cur: cur, args: []string{"web", "--env-rm", "NOPE"}, wantErr: "--env-rm NOPE: web has no such variable"},
		{name: "publish-rm not a port", cur: cur, args: []string{"web", "--publish-rm", "http"}, wantErr: `invalid --publish-rm "http": give the published port`},
		{name: "publish-rm of a missing port", cur: cur, args: []string{"web", "--publish-rm", "9999"}, wantErr: "web has no such port (it has 8080:80/tcp, 53/udp)"},
		{name: "publish-add malformed", cur: cur, args: []string{"web", "--publish-add", "8080:http"}, wantErr: `invalid --publish-add "8080:http"`},
		{name: "constraint-add malformed", cur: cur, args: []string{"web", "--constraint-add", "zone=a"}, wantErr: "invalid --constraint-add"},
		{name: "constraint-rm of a missing one", cur: cur, args: []string{"web", "--constraint-rm", "node.role==worker"}, wantErr: "it has node.labels.zone==a"},
		{name: "replicas on a global service", cur: global, args: []string{"agent", "--replicas", "3"}, wantErr: "agent is a global service"},
		{name: "negative replicas", cur: cur, args: []string{"web", "--replicas", "-1"}, wantErr: "cannot be negative"},
		{name: "bad memory", cur: cur, args: []string{"web", "--limit-memory", "lots"}, wantErr: "invalid --limit-memory"},
		{name: "negative cpu", cur: cur, args: []string{"web", "--limit-cpu", "-1"}, wantErr: "invalid --limit-cpu -1"},
		{name: "health setting without a check", cur: bare, args: []string{"api", "--health-interval", "5s"}, wantErr: "api has no health check to change: give --health-cmd too"},
		{name: "health none with settings", cur: cur, args: []string{"web", "--health-cmd", "none", "--health-retries", "2"}, wantErr: "drop the other --health-* flags"},
		{name: "bad health cmd", cur: cur, args: []string{"web", "--health-cmd", "http example.com"}, wantErr: "invalid --health-cmd"},
		{name: "shell health cmd", cur: cur, args: []string{"web", "--health-cmd", "curl -f http://localhost/ || exit 1"}, want: with(cur, func(s *messages.ServiceSpec) {
			s.HealthCheck = &messages.HealthCheck{Kind: messages.HealthCheck_KIND_EXEC, ExecCommand: []string{"/bin/sh", "-c", "curl -f http://localhost/ || exit 1"}, Port: 80}
		})},
		{name: "unknown strategy", cur: cur, args: []string{"web", "--strategy", "big-bang"}, wantErr: `invalid --strategy "big-bang": use rolling, blue-green or canary`},
		{name: "negative parallelism", cur: cur, args: []string{"web", "--update-parallelism", "-1"}, wantErr: "invalid --update-parallelism -1"},
		{name: "negative delay", cur: cur, args: []string{"web", "--update-delay", "-5s"}, wantErr: "invalid --update-delay -5s: it cannot be negative"},
		{name: "bad order", cur: cur, args: []string{"web", "--update-order", "random"}, wantErr: `invalid --update-order "random": use stop-first or start-first`},
		{name: "bad failure action", cur: cur, args: []string{"web", "--update-failure-action", "panic"}, wantErr: "use rollback, pause or continue"},
		{name: "failure ratio above 1", cur: cur, args: []string{"web", "--update-max-failure-ratio", "1.5"}, wantErr: "give a share from 0 to 1"},
		{name: "bad switch-after", cur: bare, args: []string{"api", "--strategy", "blue-green", "--switch-after", "later"}, wantErr: "use healthy"},
		{name: "weight 0", cur: cur, args: []string{"web", "--weight", "0"}, wantErr: "invalid --weight 0: give a percentage of requests from 1 to 100"},
		{name: "weight over 100", cur: cur, args: []string{"web", "--weight", "101"}, wantErr: "invalid --weight 101"},
		{name: "canary replicas 0", cur: cur, args: []string{"web", "--canary-replicas", "0"}, wantErr: "invalid --canary-replicas 0"},
		{name: "weight on a rolling service", cur: bare, args: []string{"api", "--image", "api:2", "--weight", "10"}, wantErr: "--weight applies to canary deployments and api deploys rolling: add --strategy canary"},
		{name: "grace on a canary service", cur: cur, args: []string{"web", "--grace", "1m"}, wantErr: "--grace applies to blue-green deployments and web deploys canary: add --strategy blue-green"},
		{name: "bad duration", cur: cur, args: []string{"web", "--update-delay", "5"}, wantErr: "update-delay"},
		{name: "unknown flag", cur: cur, args: []string{"web", "--env", "A=1"}, wantErr: "unknown flag -env: see `warren service update --help`"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runUpdateFlags(t, tc.cur, tc.args)
			checkSpec(t, got, err, tc.want, tc.wantErr)
		})
	}
}

// editSpec refuses an update that changes nothing before it is sent, and
// checks the result as the server does.
func TestEditSpec(t *testing.T) {
	cur := &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 3, Env: map[string]string{"A": "1"}}
	set := func(f func(s *messages.ServiceSpec)) specEdit {
		return func(s *messages.ServiceSpec) error { f(s); return nil }
	}
	if _, err := editSpec(cur, []specEdit{set(func(s *messages.ServiceSpec) { s.Env["A"] = "1" })}); err == nil || !strings.Contains(err.Error(), "nothing to update: web already runs with these settings") {
		t.Errorf("same spec: error %v, want nothing to update", err)
	}
	if _, err := editSpec(cur, []specEdit{set(func(s *messages.ServiceSpec) { s.Env["1X"] = "y" })}); err == nil || !strings.Contains(err.Error(), `invalid environment variable name "1X"`) {
		t.Errorf("invalid spec: error %v, want the validation error", err)
	}
	got, err := editSpec(cur, []specEdit{set(func(s *messages.ServiceSpec) { s.Image = "demo:v2" })})
	if err != nil || got.Image != "demo:v2" || cur.Image != "demo:v1" {
		t.Errorf("editSpec = %v, %v; want demo:v2 on a copy (cur untouched: %s)", got, err, cur.Image)
	}
}
