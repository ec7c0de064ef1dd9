package manager

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// auditLine is what a test expects of one audit entry.
func auditLine(e *messages.AuditEntry) string {
	s := fmt.Sprintf("%s/%s@%s %s %s", e.Role, e.User, e.Manager, e.Request, e.Target)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Denied {
		s += " denied by " + e.RefusedBy
	}
	return s
}

// TestAuditLog is issue 14's audit acceptance on real managers (raft on
// disk, mutual TLS, the harness's three managers) with real certificates:
// every write of the test appears once in the log, on every manager, with
// the identity of the certificate that sent it and its result; a write
// sent to a follower is recorded once, where it arrived, and not again as
// the manager that forwarded it to the leader; a worker certificate's
// admin requests are refused, change nothing, and are recorded with the
// worker's identity; reads are not recorded.
func TestAuditLog(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 3, workers: []string{"wrk-1"}})
	leader := c.leader(t)
	follower := c.followers(leader)[0]
	worker := c.workers["wrk-1"]

	var want []string
	write := func(m *testManager, msg proto.Message, code messages.ErrorCode, line string) {
		t.Helper()
		res, err := c.cli.ask(m, msg, 15*time.Second)
		if err != nil {
			t.Fatalf("%T at %s: %v", msg, m.id, err)
		}
		if got := res.(interface{ GetError() *messages.Error }).GetError().GetCode(); got != code {
			t.Fatalf("%T at %s: got %v, want %v", msg, m.id, res, code)
		}
		want = append(want, line)
	}
	write(leader, &messages.CreateServiceRequest{Spec: workerSpec("web", 1)}, 0,
		"admin/admin@"+leader.id+" CreateServiceRequest web")
	write(follower, &messages.ScaleServiceRequest{Name: "web", Replicas: 2}, 0,
		"admin/admin@"+follower.id+" ScaleServiceRequest web=2")
	write(follower, &messages.CreateServiceRequest{Spec: workerSpec("web", 1)}, messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS,
		"admin/admin@"+follower.id+" CreateServiceRequest web ALREADY_EXISTS")
	write(leader, &messages.DeleteServiceRequest{Name: "nope"}, messages.ErrorCode_ERROR_CODE_NOT_FOUND,
		"admin/admin@"+leader.id+" DeleteServiceRequest nope NOT_FOUND")
	write(follower, &messages.UpdateNodeRequest{Node: "wrk-1", LabelAdd: map[string]string{"zone": "a"}}, 0,
		"admin/admin@"+follower.id+" UpdateNodeRequest wrk-1")
	// Reads are not recorded.
	if _, err := c.cli.ask(follower, &messages.ListServicesRequest{}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.ask(leader, &messages.InspectServiceRequest{Name: "web"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c.settle(t)

	// A worker's certificate asks a follower's api for admin requests: the
	// transport refuses them (and cuts the connection), nothing changes,
	// and each is recorded with the worker's identity.
	before := stateOf(follower)
	for _, msg := range []proto.Message{
		&messages.RemoveNodeRequest{Node: leader.id, Force: true},
		&messages.ScaleServiceRequest{Name: "web", Replicas: 0},
	} {
		if res, err := worker.ask(follower, msg, time.Second); err == nil {
			t.Fatalf("the worker's %T was answered: %v", msg, res)
		}
		want = append(want, fmt.Sprintf("worker/wrk-1@%s %s  PERMISSION_DENIED denied by transport", follower.id, typeName(msg)[len("warren.v1."):]))
	}
	// The api's own table refuses what the transport let through (a
	// worker's identity on a management request, as the transport would
	// stamp it): recorded too, as refused by the api.
	stamped := &actor.MessageEnvelope{Message: &messages.DeleteServiceRequest{Name: "web"}}
	stamped.SetHeader(remoting.HeaderRole, pki.RoleWorker)
	stamped.SetHeader(remoting.HeaderName, "wrk-1")
	f := actor.NewFuture(leader.sys, 5*time.Second)
	stamped.Sender = f.PID()
	leader.sys.Root.Send(pidOf(leader, NameAPI), stamped)
	if res, err := f.Result(); err != nil || res.(*messages.ServiceReply).GetError().GetCode() != messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("a worker's delete reached the api's table: %v %v", res, err)
	}
	want = append(want, "worker/wrk-1@"+leader.id+" DeleteServiceRequest web PERMISSION_DENIED denied by api")
	worker.heartbeat(t, follower) // the worker reconnects; what it sent before was handled
	time.Sleep(300 * time.Millisecond)
	if after := stateOf(follower); after != before {
		t.Fatalf("the worker's refused requests changed the state:\nbefore %s\nafter  %s", before, after)
	}

	// Every manager holds each write once, in its replica and through its
	// api (ListAuditRequest, as `warren audit ls` asks it).
	slices.Sort(want)
	for _, m := range c.mgrs {
		var got []string
		within(t, 10*time.Second, "the audit log on "+m.id, func() bool {
			es, _ := m.store().State.Audit(store.AuditFilter{})
			got = got[:0]
			for _, e := range es {
				got = append(got, auditLine(e))
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		})
		res, err := c.cli.ask(m, &messages.ListAuditRequest{}, 5*time.Second)
		r, _ := res.(*messages.ListAuditReply)
		if err != nil || r == nil || len(r.Entries) != len(want) || r.Manager != m.id {
			t.Fatalf("audit ls at %s: %v %v", m.id, res, err)
		}
		for i, e := range r.Entries {
			if e.Seq != uint64(i+1) || e.UnixNano == 0 || e.Id == "" {
				t.Fatalf("audit ls at %s: entry %d has seq %d, time %d, id %q", m.id, i, e.Seq, e.UnixNano, e.Id)
			}
		}
		res, err = c.cli.ask(m, &messages.ListAuditRequest{User: "wrk-1", Denied: true}, 5*time.Second)
		if r, _ := res.(*messages.ListAuditReply); err != nil || r == nil || len(r.Entries) != 3 {
			t.Fatalf("audit ls --user wrk-1 --denied at %s: %v %v", m.id, res, err)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("audit log on every manager:\n%s", strings.Join(want, "\n"))
}

// stateOf is what a refused request must not change: the services with
// their specs' versions, and the nodes with their roles (a node's own
// version moves with its heartbeats).
func stateOf(m *testManager) string {
	st := m.store().State
	var s []string
	for _, v := range st.Services() {
		s = append(s, fmt.Sprintf("%s:%d/v%d", v.Spec.Name, v.Spec.Replicas, v.Meta.GetVersion()))
	}
	for _, n := range st.Nodes() {
		s = append(s, fmt.Sprintf("%s:%v", n.Id, n.Spec.GetRole()))
	}
	return strings.Join(s, " ")
}
