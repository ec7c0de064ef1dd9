package manager

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/actors/worker"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// logNode is a node process holding a worker certificate of the cluster,
// serving its task logs from dir through the real worker/logs actor.
type logNode struct {
	sys  *actor.ActorSystem
	addr string
	dir  string
}

func startLogNode(t *testing.T, c *cluster, name string) *logNode {
	t.Helper()
	id, err := c.ca.Issue(name, pki.RoleWorker, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.TLSConfig(c.ca.PEM, id)
	if err != nil {
		t.Fatal(err)
	}
	sys := quietSystem()
	r, addr, err := remoting.Start(sys, remoting.Config{Host: "127.0.0.1", Port: 0, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(false); sys.Shutdown() })
	n := &logNode{sys: sys, addr: addr, dir: t.TempDir()}
	if _, err := sys.Root.SpawnNamed(worker.NewLogs(worker.LogsConfig{NodeID: name, Dir: n.dir, Log: zap.NewNop()}), worker.NameLogs); err != nil {
		t.Fatal(err)
	}
	return n
}

// registerAt registers a worker node whose remoting address is addr.
func (c *cluster) registerAt(t *testing.T, node, addr string) {
	t.Helper()
	desc := &messages.NodeDescription{Hostname: node, Addr: addr, Os: "linux", Arch: "amd64", WgPublicKey: "wg-key-of-" + node,
		Resources: &messages.Resources{NanoCpus: 2e9, MemoryBytes: 1 << 30}}
	waitFor(t, "registered "+node, func() bool {
		res, err := c.sys.Root.RequestFuture(actor.NewPID(c.sys.Address(), NameAPI),
			&messages.RegisterNode{NodeId: node, Role: messages.NodeRole_NODE_ROLE_WORKER, Description: desc}, 5*time.Second).Result()
		r, _ := res.(*messages.RegisterNodeReply)
		return err == nil && r != nil && r.Error == nil
	})
}

func writeLines(t *testing.T, dir, svc, task string, n int) {
	t.Helper()
	base := worker.TaskLogPath(dir, svc, task)
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	t0 := time.Now().Add(-time.Hour)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `{"log":"line %d of %s\n","stream":"stdout","time":"%s"}`+"\n", i, task, t0.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano))
	}
	if err := os.WriteFile(runtime.LogFileName(base, 1), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLogsOverTLS: the admin api fans a logs request out to the nodes over
// real mutual TLS, gets the lines of the node that answers and names the
// one that does not; only the roles the rules name may ask either side.
func TestLogsOverTLS(t *testing.T) {
	c := startManager(t)
	a := startLogNode(t, c, "node-a")
	c.registerAt(t, "node-a", a.addr)
	c.registerAt(t, "node-b", freeAddr(t)) // nothing listens there
	svc := c.local(t, NameAPI, &messages.CreateServiceRequest{Spec: &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 2}}).(*messages.ServiceReply)
	if svc.Error != nil {
		t.Fatal(svc.Error)
	}
	var onA, onB *messages.Task
	waitFor(t, "a task on each node", func() bool {
		for _, tk := range c.st.State.Tasks(store.TaskFilter{ServiceID: svc.Service.Id}) {
			switch tk.NodeId {
			case "node-a":
				onA = tk
			case "node-b":
				onB = tk
			}
		}
		return onA != nil && onB != nil
	})
	writeLines(t, a.dir, svc.Service.Id, onA.Id, 3000)
	admin := c.peer(t, "admin", pki.RoleAdmin)

	t.Run("an admin reads every line of the node that answers, the other is named", func(t *testing.T) {
		req := &messages.ReadLogsRequest{Service: "web", MaxBytes: 64 << 10}
		got := 0
		var unreachable []string
		for round := 0; ; round++ {
			res, err := admin.ask(NameAPI, req, 10*time.Second)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			r := res.(*messages.ReadLogsReply)
			if r.Error != nil {
				t.Fatal(r.Error)
			}
			for _, l := range r.Lines {
				got++
				if want := fmt.Sprintf("line %d of %s", got, onA.Id); l.Text != want || l.NodeId != "node-a" {
					t.Fatalf("line %d is %q from %s, want %q from node-a", got, l.Text, l.NodeId, want)
				}
			}
			unreachable = append(unreachable, r.Unreachable...)
			if r.Names[onA.Id] != "web."+fmt.Sprint(onA.Slot) {
				t.Fatalf("names %v: want the task's service.slot", r.Names)
			}
			if !r.More {
				break
			}
			req.Cursors = r.Cursors
			if round > 100 {
				t.Fatalf("still more after %d rounds", round)
			}
		}
		if got != 3000 {
			t.Fatalf("%d lines, want 3000 in several chunks", got)
		}
		if len(unreachable) == 0 || !strings.Contains(unreachable[0], "node-b") {
			t.Fatalf("unreachable %q: want node-b named", unreachable)
		}
	})

	t.Run("a task by id prefix", func(t *testing.T) {
		res, err := admin.ask(NameAPI, &messages.ReadLogsRequest{TaskId: onA.Id[:8], Tail: 2}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r := res.(*messages.ReadLogsReply)
		if len(r.Lines) != 2 || r.Lines[1].Text != "line 3000 of "+onA.Id {
			t.Fatalf("tail 2 of the task: %v", r.Lines)
		}
	})

	t.Run("wrong roles are refused", func(t *testing.T) {
		// An admin may not ask a node's log reader itself: managers only.
		if _, err := admin.sys.Root.RequestFuture(actor.NewPID(a.addr, worker.NameLogs), &messages.ReadNodeLogs{TaskIds: []string{onA.Id}}, 2*time.Second).Result(); err == nil {
			t.Fatal("an admin read a node's logs directly")
		}
		// Nor may another worker node.
		wrk := c.peer(t, "node-c", pki.RoleWorker)
		if _, err := wrk.sys.Root.RequestFuture(actor.NewPID(a.addr, worker.NameLogs), &messages.ReadNodeLogs{TaskIds: []string{onA.Id}}, 2*time.Second).Result(); err == nil {
			t.Fatal("a worker read another node's logs")
		}
		// A worker may not use the admin api's logs.
		if _, err := wrk.ask(NameAPI, &messages.ReadLogsRequest{Service: "web"}, 2*time.Second); err == nil {
			t.Fatal("a worker read a service's logs through the api")
		}
	})
}
