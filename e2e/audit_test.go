package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// auditEntries reads `audit ls -o json` (JSON lines) from one manager.
func auditEntries(t *testing.T, via *cluster.Host, args ...string) ([]*messages.AuditEntry, error) {
	t.Helper()
	out, _, err := via.CLI(append([]string{"--manager", via.IP + ":4280", "audit", "ls", "-o", "json"}, args...)...)
	if err != nil {
		return nil, err
	}
	var es []*messages.AuditEntry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		e := &messages.AuditEntry{}
		if err := protojson.Unmarshal([]byte(line), e); err != nil {
			return nil, fmt.Errorf("audit ls line %q: %w", line, err)
		}
		es = append(es, e)
	}
	return es, nil
}

// workerCLIConfig writes a CLI config dir whose "admin" credentials are
// host's own node certificate and key: the CLI then speaks with that
// node's (worker) identity, as a stolen worker certificate would.
func workerCLIConfig(t *testing.T, host *cluster.Host, managers ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "worker-cli")
	cdir := filepath.Join(dir, "clusters", "stolen")
	must(t, os.MkdirAll(cdir, 0o700))
	certs := filepath.Join(host.DataDir, "certs")
	for from, to := range map[string]string{"ca.pem": "ca.pem", "node.pem": "admin.pem", "node-key.pem": "admin-key.pem"} {
		b, err := os.ReadFile(filepath.Join(certs, from))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(cdir, to), b, 0o600))
	}
	cfg, err := json.Marshal(map[string]any{"current": "stolen", "clusters": map[string]any{"stolen": map[string]any{"managers": managers, "dir": cdir}}})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600))
	return dir
}

// TestAudit is issue 14's audit acceptance on real hosts: every write of
// the run (including the join tokens the cluster was formed with, an
// image import of many chunks, a write through a follower and writes that
// failed) appears exactly once, with the identity of the certificate that
// sent it, readable from every manager; a worker's certificate presented
// to the management API is refused, changes nothing, and is recorded with
// the worker's identity.
func TestAudit(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 4, Bin: warrenBin})
	m0, m1, m2, w := h.Hosts[0], h.Hosts[1], h.Hosts[2], h.Hosts[3]
	formCluster(t, h, 3) // two join tokens: recorded
	want := []string{
		"admin/admin@" + m0.NodeID() + " JoinTokenRequest manager token ok",
		"admin/admin@" + m0.NodeID() + " JoinTokenRequest worker token ok",
	}
	cli(t, m0, "--manager", m0.IP+":4280", "image", "import", demoV1)
	want = append(want, "admin/admin@"+m0.NodeID()+" ImportImageChunk docker.io/library/demo:v1 ok")
	cli(t, m0, "--manager", m0.IP+":4280", "service", "create", "web", "--image", "demo:v1", "--replicas", "1", "--constraint", "node.role==worker")
	want = append(want, "admin/admin@"+m0.NodeID()+" CreateServiceRequest web ok")
	// Through a follower: recorded once, where it arrived.
	follower := m1
	if l := leaderOf(t, m0); l == m1.NodeID() {
		follower = m2
	}
	cli(t, follower, "--manager", follower.IP+":4280", "service", "scale", "web=2")
	want = append(want, "admin/admin@"+follower.NodeID()+" ScaleServiceRequest web=2 ok")
	// A write that fails is recorded with its error.
	if _, stderr, err := m2.CLI("--manager", m2.IP+":4280", "service", "rm", "nope"); err == nil || !strings.Contains(stderr, "not found") {
		t.Fatalf("service rm nope: %v %q", err, stderr)
	}
	want = append(want, "admin/admin@"+m2.NodeID()+" DeleteServiceRequest nope NOT_FOUND")
	// Reads are not recorded.
	cli(t, m1, "--manager", m1.IP+":4280", "service", "ls")
	waitRunning(t, m0, "web", 2)

	// The worker's own certificate on the management API: refused by the
	// transport, the service untouched, the refusal recorded with the
	// worker's identity.
	wcfg := workerCLIConfig(t, w, m0.IP+":4280")
	_, stderr, err := m0.CLI("--config-dir", wcfg, "--timeout", "5s", "service", "rm", "web")
	if err == nil {
		t.Fatalf("a worker's certificate deleted a service: %q", stderr)
	}
	t.Logf("the worker's `service rm web` was refused: %s", strings.TrimSpace(stderr))
	want = append(want, "worker/"+w.NodeID()+"@"+m0.NodeID()+" DeleteServiceRequest - PERMISSION_DENIED denied")
	if n := len(running(tasks(t, m0, "web", false))); n != 2 {
		t.Fatalf("after the worker's refused delete web runs %d tasks, want 2", n)
	}

	slices.Sort(want)
	for _, m := range []*cluster.Host{m0, m1, m2} {
		var got []string
		eventually(t, 30*time.Second, "every write once in the audit log of "+m.Name, func() error {
			es, err := auditEntries(t, m)
			if err != nil {
				return err
			}
			got = got[:0]
			for _, e := range es {
				got = append(got, auditSummary(e))
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			return nil
		})
		es, err := auditEntries(t, m, "--denied", "--user", w.NodeID())
		must(t, err)
		if len(es) != 1 || es[0].RefusedBy == "" {
			t.Fatalf("audit ls --denied --user %s on %s: %v", w.NodeID(), m.Name, es)
		}
	}
	t.Logf("audit log (the same on every manager):\n%s", cli(t, m0, "--manager", m0.IP+":4280", "audit", "ls"))
}

// auditSummary is what the test compares: who, where, what, and how it
// ended. A refused request's target is not known (the transport does not
// decode it): "-".
func auditSummary(e *messages.AuditEntry) string {
	target, result := e.Target, "ok"
	if target == "" {
		target = "-"
	}
	if e.Code != "" {
		result = e.Code
	}
	if e.Denied {
		result += " denied"
	}
	return fmt.Sprintf("%s/%s@%s %s %s %s", e.Role, e.User, e.Manager, e.Request, target, result)
}

// leaderOf is the leader's node id, as via sees it.
func leaderOf(t *testing.T, via *cluster.Host) string {
	t.Helper()
	r := &messages.ClusterInfoReply{}
	out := cli(t, via, "--manager", via.IP+":4280", "cluster", "info", "-o", "json")
	must(t, protojson.Unmarshal([]byte(out), r))
	return r.LeaderId
}
