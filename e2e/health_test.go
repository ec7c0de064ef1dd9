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
	// --wait returns only once both replicas pass their check: no polling
	// needed right after it.
	_, stderr, err := n.CLI("service", "create", "web", "--image", "demo:v1", "--replicas", "2", "--wait", "--wait-timeout", "60s",
		"--health-cmd", "http GET /healthz", "--health-interval", "300ms", "--health-retries", "2", "--stop-grace-period", "2s")
	must(t, err)
	if !strings.Contains(stderr, "web: 2/2 tasks running") {
		t.Fatalf("create --wait said %q", stderr)
	}
	var healthyNow int
	for _, tk := range running(tasks(t, n, "web", false)) {
		if tk.Status.Health == messages.HealthState_HEALTH_STATE_HEALTHY {
			healthyNow++
		}
	}
	if healthyNow != 2 {
		t.Fatalf("create --wait returned with %d of 2 tasks healthy", healthyNow)
	}
	// A wait that cannot be met says how far it got.
	_, stderr, err = n.CLI("service", "create", "never", "--image", "demo:v1", "--wait", "--wait-timeout", "3s",
		"--health-cmd", "http GET /no-such-path", "--health-interval", "300ms", "--health-retries", "1")
	if err == nil || !strings.Contains(stderr, "0 of 1 tasks ready") {
		t.Fatalf("create --wait of a service that never gets healthy: err %v, stderr %q", err, stderr)
	}
	cli(t, n, "service", "rm", "never")
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
