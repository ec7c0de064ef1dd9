package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// TestHealthChecks: http, tcp and exec checks mark tasks healthy; a task
// switched unhealthy is seen so, stopped and restarted by its policy, and
// comes back healthy.
func TestHealthChecks(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 1, Bin: warrenBin})
	n := h.Hosts[0]
	must(t, n.StartAndWait(90*time.Second))
	cli(t, n, "image", "import", demoV1)
	cli(t, n, "service", "create", "web", "--image", "demo:v1", "--replicas", "2",
		"--health-cmd", "http GET /healthz", "--health-interval", "300ms", "--health-retries", "2", "--stop-grace-period", "2s")
	cli(t, n, "service", "create", "raw", "--image", "demo:v1", "--health-cmd", "tcp", "--health-interval", "300ms")
	cli(t, n, "service", "create", "inside", "--image", "demo:v1", "--health-cmd", "exec /app -probe http://127.0.0.1/healthz", "--health-interval", "300ms")

	healthy := func(svc string, want int) []*messages.Task {
		var got []*messages.Task
		eventually(t, 60*time.Second, fmt.Sprintf("%d healthy tasks of %s", want, svc), func() error {
			got = nil
			for _, tk := range running(tasks(t, n, svc, false)) {
				if tk.Status.Health == messages.HealthState_HEALTH_STATE_HEALTHY {
					got = append(got, tk)
				}
			}
			if len(got) != want {
				return fmt.Errorf("%d healthy", len(got))
			}
			return nil
		})
		return got
	}
	healthy("raw", 1)
	healthy("inside", 1)
	web := healthy("web", 2)
	if out := cli(t, n, "service", "ps", "web"); !strings.Contains(out, "running (healthy)") {
		t.Fatalf("ps does not show health:\n%s", out)
	}

	victim := web[0]
	must(t, n.HTTPPost("http://"+victim.Status.Ip+"/healthz/fail", 5*time.Second))
	eventually(t, 30*time.Second, "the unhealthy task restarted and healthy again", func() error {
		for _, tk := range running(tasks(t, n, "web", false)) {
			if tk.Id == victim.Id && tk.Status.RestartCount >= 1 && tk.Status.Health == messages.HealthState_HEALTH_STATE_HEALTHY {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	if ev := events(t, n, "task."); !strings.Contains(ev, "health=unhealthy") {
		t.Fatal("no event recorded the task as unhealthy")
	}
}
