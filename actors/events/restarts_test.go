package events

import (
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
)

func TestActorKind(t *testing.T) {
	for _, tt := range []struct{ id, want string }{
		{"agent/tasks/3f9a0c1d2e3f4a5b6c7d", "agent/tasks/*"},
		{"manager/leader/services/web/deployment", "manager/leader/services/*/deployment"},
		{"manager/leader/nodes/0123456789abcdef", "manager/leader/nodes/*"},
		{"manager/api/services", "manager/api/services"},
		{"manager/api/services/$12", "manager/api/services/$*"},
		{"manager/leader/scheduler", "manager/leader/scheduler"},
		{"$7", "$*"},
		{"netmesh", "netmesh"},
	} {
		if got := ActorKind(tt.id); got != tt.want {
			t.Errorf("ActorKind(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

// crasher panics on a string message: a failure for its supervisor.
type crasher struct{}

func (crasher) Receive(ctx actor.Context) {
	if s, ok := ctx.Message().(string); ok {
		panic(s)
	}
}

// TestRestartCounter: a child that fails twice is counted twice under its
// kind, with the default supervisor's directive (restart), on a real actor
// system.
func TestRestartCounter(t *testing.T) {
	sys := actor.NewActorSystem()
	c := WatchRestarts(sys)
	defer c.Stop()
	parent := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			for _, name := range []string{"tasks/0123456789abcdef01", "tasks/fedcba98765432100f"} {
				pid, _ := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return crasher{} }), name)
				ctx.Send(pid, "boom")
			}
		}
	})
	if _, err := sys.Root.SpawnNamed(parent, "agent"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var series []string
		var got float64
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				series = append(series, m.String())
				got = m.GetCounter().GetValue()
			}
		}
		if len(series) == 1 && got == 2 && strings.Contains(series[0], `value:"agent/tasks/*"`) && strings.Contains(series[0], `value:"restart"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("warren_actor_restarts_total = %v, want one series agent/tasks/* restart = 2 (task ids must not be labels)", series)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
