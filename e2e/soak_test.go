package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
)

// TestSoakIdleVIP holds a keep-alive connection from a container through a
// service VIP to a task on another node idle for 20 minutes (IPVS dropped
// such flows after 900 s: moby/moby#31208), while the service's VIP rules
// are rewritten every two minutes by a scale up and down, then sends a
// second request on the same connection. Runs with `go tool task soak`;
// WARREN_SOAK_IDLE shortens the idle time for a quick check.
func TestSoakIdleVIP(t *testing.T) {
	if os.Getenv("WARREN_SOAK") == "" {
		t.Skip("soak runs with WARREN_SOAK=1 (go tool task soak)")
	}
	idle := 20 * time.Minute
	if v := os.Getenv("WARREN_SOAK_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		must(t, err)
		idle = d
	}
	h := cluster.New(t, cluster.Options{Hosts: 2, Bin: warrenBin})
	formCluster(t, h, 1)
	m0, h1 := h.Hosts[0], h.Hosts[1]
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "backend", "--image", "demo:v1", "--publish", "80", "--wait", "--constraint", "node.hostname=="+h1.Name)
	cli(t, m0, "service", "create", "client", "--image", "demo:v1", "--wait", "--constraint", "node.hostname=="+m0.Name)
	client := waitRunning(t, m0, "client", 1)[0]
	eventually(t, 30*time.Second, "backend resolves in the client", func() error {
		_, err := execInErr(m0, client.Id, "-resolve", "backend")
		return err
	})

	done := make(chan struct{})
	churned := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(2 * time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-done:
				churned <- n
				return
			case <-tick.C:
				for _, r := range []int{2, 1} {
					if _, _, err := m0.CLI("service", "scale", "backend="+strconv.Itoa(r), "--wait"); err == nil {
						n++
					}
				}
			}
		}
	}()
	start := time.Now()
	out, err := execInTimeout(m0, client.Id, idle+3*time.Minute, "-idle", "http://backend/", "-for", idle.String())
	close(done)
	t.Logf("after %s idle (%d scale rewrites of the VIP rules meanwhile): %s", time.Since(start).Round(time.Second), <-churned, out)
	must(t, err)
}
