package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func cli(t *testing.T, n *cluster.Host, args ...string) string {
	t.Helper()
	out, _, err := n.CLI(args...)
	must(t, err)
	return out
}

// tasks lists a service's tasks through the CLI's JSON output.
func tasks(t *testing.T, n *cluster.Host, svc string, all bool) []*messages.Task {
	t.Helper()
	args := []string{"service", "ps", svc, "-o", "json"}
	if all {
		args = append(args, "-a")
	}
	out, _, err := n.CLI(args...)
	must(t, err)
	r := &messages.ListTasksReply{}
	must(t, protojson.Unmarshal([]byte(out), r))
	return r.Tasks
}

func running(ts []*messages.Task) []*messages.Task {
	var out []*messages.Task
	for _, t := range ts {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING && t.GetStatus().GetState() == messages.TaskState_TASK_STATE_RUNNING {
			out = append(out, t)
		}
	}
	return out
}

// eventually retries check until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

// waitRunning waits until exactly n tasks of svc run and none is starting.
func waitRunning(t *testing.T, h *cluster.Host, svc string, n int) []*messages.Task {
	t.Helper()
	var got []*messages.Task
	eventually(t, 90*time.Second, fmt.Sprintf("%d tasks of %s running", n, svc), func() error {
		all := tasks(t, h, svc, false)
		got = running(all)
		if len(got) != n || len(all) != n {
			return fmt.Errorf("%d running of %d listed", len(got), len(all))
		}
		return nil
	})
	return got
}

// containers lists what containerd itself holds on the host, not Warren's view.
func containers(t *testing.T, n *cluster.Host) []runtime.Status {
	t.Helper()
	list, err := containersErr(n)
	must(t, err)
	return list
}

// containersErr is containers for polling loops, where a host that is still
// starting is not a failure.
func containersErr(n *cluster.Host) ([]runtime.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rt, err := runtime.NewContainerd(ctx, n.ContainerdSocket(), runtime.DefaultNamespace, zap.NewNop())
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	return rt.List(ctx)
}

func ids(ts []*messages.Task) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Id)
	}
	sort.Strings(out)
	return out
}

func runningContainerIDs(list []runtime.Status) []string {
	var out []string
	for _, s := range list {
		if s.Running {
			out = append(out, s.ID)
		}
	}
	sort.Strings(out)
	return out
}

// snapshots lists containerd's snapshots in warren's namespace with ctr.
func snapshots(t *testing.T, n *cluster.Host) []string {
	t.Helper()
	out, err := exec.Command("ctr", "-a", n.ContainerdSocket(), "-n", runtime.DefaultNamespace, "snapshots", "ls").CombinedOutput()
	must(t, err)
	var keys []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			keys = append(keys, f[0])
		}
	}
	return keys
}

// leftovers lists what a deleted task could leave behind on the host. Its
// log files are not among them: they are kept for `task logs` (keptLogs).
func leftovers(t *testing.T, n *cluster.Host, taskIDs []string) []string {
	t.Helper()
	var found []string
	links, err := n.Exec("ip", "-o", "link")
	must(t, err)
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", n.InitPid))
	must(t, err)
	for _, id := range taskIDs {
		if strings.Contains(string(mounts), id) {
			found = append(found, "mount of "+id)
		}
		if strings.Contains(links, "warren:"+id) {
			found = append(found, "veth of "+id)
		}
		if _, err := os.Stat(filepath.Join(n.DataDir, "netns", id)); err == nil {
			found = append(found, "netns file of "+id)
		}
		for _, h := range []string{"memory", "cpu", "pids"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, "warren-"+n.NodeID()[:12], id)); err == nil {
				found = append(found, h+" cgroup of "+id)
			}
		}
	}
	return found
}

// keptLogs counts the tasks among taskIDs whose log files the node keeps
// (<data-dir>/logs/<service id>/<task id>.log.N).
func keptLogs(t *testing.T, n *cluster.Host, taskIDs []string) int {
	t.Helper()
	kept := 0
	for _, id := range taskIDs {
		files, err := filepath.Glob(filepath.Join(n.DataDir, "logs", "*", id+".log.*"))
		must(t, err)
		if len(files) > 0 {
			kept++
		}
	}
	return kept
}

// leases counts IP leases in a stopped node's netmesh db.
func leases(t *testing.T, n *cluster.Host) int {
	t.Helper()
	db, err := bolt.Open(filepath.Join(n.DataDir, "net", "netmesh.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	must(t, err)
	defer db.Close()
	count := 0
	must(t, db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("leases")); b != nil {
			count = b.Stats().KeyN
		}
		return nil
	}))
	return count
}

// events returns the stored event history as lines.
func events(t *testing.T, n *cluster.Host, typ string) string {
	t.Helper()
	return cli(t, n, "events", "--type", typ)
}

// jsonOf decodes the CLI's protojson output.
func jsonOf(out string, m proto.Message) error { return protojson.Unmarshal([]byte(out), m) }
