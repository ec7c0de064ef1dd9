package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/e2e/testimage"
	"github.com/warrenorch/warren/messages"
)

// The deployment tests' images, built once per run beside demo:v1: demo:v2
// answers version=v2, demo:v2bad is v2 whose health check never passes.
var (
	deployImagesOnce  sync.Once
	demoV2, demoV2Bad string
	deployImagesErr   error
)

func deployImages(t *testing.T) (v2, v2bad string) {
	t.Helper()
	deployImagesOnce.Do(func() {
		dir := filepath.Dir(demoV1)
		demoV2, demoV2Bad = filepath.Join(dir, "demo-v2.tar"), filepath.Join(dir, "demo-v2bad.tar")
		ctx := context.Background()
		if deployImagesErr = testimage.Build(ctx, demoV2, "demo", "v2", "v2"); deployImagesErr == nil {
			deployImagesErr = testimage.BuildEnv(ctx, demoV2Bad, "demo", "v2bad", "v2", "HEALTHZ=fail")
		}
	})
	must(t, deployImagesErr)
	return demoV2, demoV2Bad
}

// answer is one request of a load: when it started, where it went, which
// version and task answered, or why it failed.
type answer struct {
	at      time.Time
	took    time.Duration
	target  string // e.g. "vip@wrn..-0", "port@wrn..-1"
	node    int    // the node whose rules routed it
	version string
	task    string
	err     error
}

// loadTarget is one stream of requests: from a host's network namespace,
// or with task set from inside that task's container on host from, to a
// URL whose address translation happens on node.
type loadTarget struct {
	name string
	from *cluster.Host
	task string
	url  string
	node int
}

// inContainer runs the test app's -fetch -trace in tg's container for d
// and returns its records as answers.
func inContainer(tg loadTarget, d time.Duration) ([]answer, error) {
	return inContainerArgs(tg, d+30*time.Second, "-for", d.String())
}

func inContainerArgs(tg loadTarget, timeout time.Duration, args ...string) ([]answer, error) {
	out, err := execInTimeout(tg.from, tg.task, timeout, append([]string{"-fetch", tg.url, "-trace"}, args...)...)
	if err != nil {
		return nil, err
	}
	// Buckets of 100 ms: each answer is dated at its bucket's end, late
	// rather than early (checks of "none of the old version after X"
	// start 100 ms after X).
	var as []answer
	var firstErr error
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, line := range lines {
		if e, ok := strings.CutPrefix(line, "err "); ok {
			firstErr = fmt.Errorf("%s", e)
		}
	}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] == "err" {
			continue
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		at := time.UnixMilli(ms).Add(100 * time.Millisecond)
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.Atoi(v)
			for range n {
				a := answer{at: at, target: tg.name, node: tg.node, version: k}
				if k == "failed" {
					a.version, a.err = "", firstErr
					if a.err == nil {
						a.err = fmt.Errorf("failed")
					}
				}
				as = append(as, a)
			}
		}
	}
	return as, nil
}

// netnsClient is an HTTP client whose connections are opened in host's
// network namespace, a new one per request, closed by the client with a
// reset (no TIME_WAIT pile-up over minutes of load; see loadgen).
func netnsClient(host *cluster.Host, timeout time.Duration) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := host.InNetNS(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
			return err
		})
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return c, err
	}}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// ask sends one request of target and says who answered.
func ask(c *http.Client, tg loadTarget) answer {
	a := answer{at: time.Now(), target: tg.name, node: tg.node}
	defer func() { a.took = time.Since(a.at) }()
	resp, err := c.Get(tg.url + "?format=json")
	if err != nil {
		a.err = err
		a.took = time.Since(a.at)
		return a
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a.took = time.Since(a.at)
	if err != nil {
		a.err = err
		return a
	}
	if resp.StatusCode != http.StatusOK {
		a.err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		return a
	}
	var r struct{ Version, Task string }
	if err := json.Unmarshal(body, &r); err != nil || r.Version == "" {
		a.err = fmt.Errorf("bad answer %q: %v", body, err)
		return a
	}
	a.version, a.task = r.Version, r.Task
	return a
}

// load sends requests to every target without pause between them (a
// few ms each), each target on its own goroutine, and keeps every answer.
type load struct {
	mu   sync.Mutex
	recs []answer
	stop chan struct{}
	wg   sync.WaitGroup
}

func startLoad(targets []loadTarget, gap time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	for _, tg := range targets {
		l.wg.Add(1)
		if tg.task != "" {
			go func() {
				defer l.wg.Done()
				// Segments of a few seconds: an exec's output comes back
				// only when it ends. The gap between two is an exec's start.
				for {
					select {
					case <-l.stop:
						return
					default:
					}
					as, err := inContainer(tg, 3*time.Second)
					if err != nil {
						as = append(as, answer{at: time.Now(), target: tg.name, node: tg.node, err: fmt.Errorf("exec in %s: %w", tg.task, err)})
					}
					l.mu.Lock()
					l.recs = append(l.recs, as...)
					l.mu.Unlock()
				}
			}()
			continue
		}
		go func() {
			defer l.wg.Done()
			c := netnsClient(tg.from, 2*time.Second)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				a := ask(c, tg)
				l.mu.Lock()
				l.recs = append(l.recs, a)
				l.mu.Unlock()
				time.Sleep(gap)
			}
		}()
	}
	return l
}

func (l *load) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// between returns the answers to requests started in [from, to).
func (l *load) between(from, to time.Time) []answer {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []answer
	for _, a := range l.recs {
		if !a.at.Before(from) && a.at.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// tally counts answers by version ("failed" for errors).
func tally(as []answer) map[string]int {
	m := map[string]int{}
	for _, a := range as {
		if a.err != nil {
			m["failed"]++
			continue
		}
		m[a.version]++
	}
	return m
}

func failures(as []answer) []answer {
	var out []answer
	for _, a := range as {
		if a.err != nil {
			out = append(out, a)
		}
	}
	return out
}

func describeFailures(as []answer, t0 time.Time) string {
	var b strings.Builder
	for i, a := range as {
		if i == 10 {
			fmt.Fprintf(&b, "  ... %d more\n", len(as)-10)
			break
		}
		fmt.Fprintf(&b, "  +%s %s: %v\n", a.at.Sub(t0).Round(time.Millisecond), a.target, a.err)
	}
	return b.String()
}

// lastOf returns, per node, the start time of the last answer of version
// in as (zero when none).
func lastOf(as []answer, version string, nodes int) []time.Time {
	last := make([]time.Time, nodes)
	for _, a := range as {
		if a.err == nil && a.version == version && a.at.After(last[a.node]) {
			last[a.node] = a.at
		}
	}
	return last
}

// burst sends about n requests spread evenly over the targets, all at
// once (two streams per host target, one per container target), and
// returns the answers: a sample for a traffic share.
func burst(targets []loadTarget, n int) []answer {
	per := max(n/len(targets), 2)
	var mu sync.Mutex
	var out []answer
	add := func(as ...answer) {
		mu.Lock()
		out = append(out, as...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, tg := range targets {
		if tg.task != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				as, err := inContainerArgs(tg, 3*time.Minute, "-n", fmt.Sprint(per))
				if err != nil {
					as = append(as, answer{at: time.Now(), target: tg.name, node: tg.node, err: err})
				}
				add(as...)
			}()
			continue
		}
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := netnsClient(tg.from, 2*time.Second)
				for range per / 2 {
					add(ask(c, tg))
				}
			}()
		}
	}
	wg.Wait()
	return out
}

// transition is one committed state of a deployment, as a watcher saw it.
type transition struct {
	id    string
	state messages.DeploymentState
	since time.Time // when the leader committed it
	seen  time.Time
	batch int // slots in the batch (rolling)
}

// watcher polls a service every 100 ms through an in-process client and
// records each deployment state it sees, with its commit time: the
// times the tests measure from.
type watcher struct {
	mu    sync.Mutex
	trans []transition
	stop  chan struct{}
	done  chan struct{}
}

func watchDeployment(t *testing.T, via *cluster.Host, svc string) *watcher {
	t.Helper()
	cl, err := client.Dial(client.Options{ConfigDir: via.ConfigDir, Managers: []string{via.IP + ":4280"}, Timeout: 5 * time.Second})
	must(t, err)
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer cl.Close()
		for {
			if s, err := cl.InspectService(svc); err == nil && s.Deployment != nil {
				d := s.Deployment
				w.mu.Lock()
				if n := len(w.trans); n == 0 || w.trans[n-1].id != d.Id || w.trans[n-1].state != d.State || w.trans[n-1].batch != len(d.Batch) {
					w.trans = append(w.trans, transition{d.Id, d.State, time.Unix(0, d.StateSinceUnixNano), time.Now(), len(d.Batch)})
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

func (w *watcher) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// first returns when the state was first committed after from (zero if
// never seen).
func (w *watcher) first(state messages.DeploymentState, from time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, tr := range w.trans {
		if tr.state == state && !tr.since.Before(from.Add(-time.Second)) && !tr.seen.Before(from) {
			return tr.since
		}
	}
	return time.Time{}
}

// maxBatch is the largest batch seen since from.
func (w *watcher) maxBatch(from time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := 0
	for _, tr := range w.trans {
		if !tr.seen.Before(from) {
			m = max(m, tr.batch)
		}
	}
	return m
}

func (w *watcher) states(from time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, tr := range w.trans {
		if !tr.seen.Before(from) && (len(out) == 0 || out[len(out)-1] != strings.TrimPrefix(tr.state.String(), "DEPLOYMENT_STATE_")) {
			out = append(out, strings.TrimPrefix(tr.state.String(), "DEPLOYMENT_STATE_"))
		}
	}
	return out
}

// inspect reads a service through the CLI.
func inspect(t *testing.T, via *cluster.Host, svc string) *messages.Service {
	t.Helper()
	s := &messages.Service{}
	must(t, jsonOf(cli(t, via, "service", "inspect", svc, "-o", "json"), s))
	return s
}

// waitDeployment waits until svc's deployment reaches one of states and
// returns the service.
func waitDeployment(t *testing.T, via *cluster.Host, svc string, timeout time.Duration, states ...messages.DeploymentState) *messages.Service {
	t.Helper()
	var s *messages.Service
	eventually(t, timeout, fmt.Sprintf("deployment of %s in %v", svc, states), func() error {
		s = &messages.Service{}
		out, _, err := via.CLI("service", "inspect", svc, "-o", "json")
		if err != nil {
			return err
		}
		if err := jsonOf(out, s); err != nil {
			return err
		}
		for _, st := range states {
			if s.GetDeployment().GetState() == st {
				return nil
			}
		}
		d := s.GetDeployment()
		return fmt.Errorf("%s (%s)", d.GetState(), d.GetMessage())
	})
	return s
}

// clusterIndex is the raft index a manager reports.
func clusterIndex(t *testing.T, via *cluster.Host) uint64 {
	t.Helper()
	r := &messages.ClusterInfoReply{}
	must(t, jsonOf(cli(t, via, "cluster", "info", "-o", "json"), r))
	return r.Index
}

// onVersion checks that svc's running tasks all run image and, asked
// through every node, only version answers.
func onVersion(t *testing.T, via *cluster.Host, svc, image string, want int) error {
	ts := running(tasks(t, via, svc, false))
	if len(ts) != want {
		return fmt.Errorf("%d tasks running, want %d", len(ts), want)
	}
	for _, tk := range ts {
		if tk.Spec.GetImage() != image {
			return fmt.Errorf("task %s (slot %d, side %q) runs %s, want %s", tk.Id, tk.Slot, tk.Side, tk.Spec.GetImage(), image)
		}
	}
	return nil
}

func percentShare(m map[string]int, version string) float64 {
	total := 0
	for k, v := range m {
		if k != "failed" {
			total += v
		}
	}
	if total == 0 {
		return 0
	}
	return 100 * float64(m[version]) / float64(total)
}
