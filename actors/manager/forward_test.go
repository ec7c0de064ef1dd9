package manager

import (
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// TestForwardResendRules: a write sent to a follower goes to the leader's
// api through the follower's store actor, and when the leader takes it and
// never answers (here a stand-in api that swallows it, as a leader that
// died holding it would), only a write that is harmless to apply twice is
// sent again. A delete, a node removal or a token rotation reaches the
// leader once and is answered UNAVAILABLE, "may or may not have been
// applied", in the reply type its caller expects; a scale or a node update
// goes to the next leader once the silent one crashes, and succeeds.
func TestForwardResendRules(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 3, workers: []string{"wrk-1"}})
	cli := c.cli
	if res, err := cli.ask(c.leader(t), &messages.CreateServiceRequest{Spec: workerSpec("web", 1)}, 10*time.Second); err != nil || res.(*messages.ServiceReply).Error != nil {
		t.Fatalf("create: %v %v", err, res)
	}
	c.settle(t)
	token := c.leader(t).store().State.Cluster().WorkerToken

	rows := []struct {
		name string
		req  proto.Message
		// crash: the silent leader crashes once it holds the request.
		crash     bool
		wantCode  messages.ErrorCode
		wantReply any
		// applied reports, on a follower's replica, whether the request
		// took effect.
		applied func(m *testManager) bool
	}{
		{"delete is not resent", &messages.DeleteServiceRequest{Name: "web"}, false,
			messages.ErrorCode_ERROR_CODE_UNAVAILABLE, &messages.ServiceReply{},
			func(m *testManager) bool { return m.store().State.ServiceByName("web") == nil }},
		{"node removal is not resent", &messages.RemoveNodeRequest{Node: "wrk-1", Force: true}, false,
			messages.ErrorCode_ERROR_CODE_UNAVAILABLE, &messages.NodeReply{},
			func(m *testManager) bool { return m.store().State.Node("wrk-1") == nil }},
		{"token rotation is not resent", &messages.JoinTokenRequest{Role: messages.NodeRole_NODE_ROLE_WORKER, Rotate: true}, false,
			messages.ErrorCode_ERROR_CODE_UNAVAILABLE, &messages.JoinTokenReply{},
			func(m *testManager) bool { return m.store().State.Cluster().WorkerToken != token }},
		{"scale is resent to the next leader", &messages.ScaleServiceRequest{Name: "web", Replicas: 3}, true,
			messages.ErrorCode_ERROR_CODE_NONE, &messages.ServiceReply{},
			func(m *testManager) bool { return m.store().State.ServiceByName("web").GetSpec().GetReplicas() == 3 }},
		{"node update is resent to the next leader", &messages.UpdateNodeRequest{Node: "wrk-1", LabelAdd: map[string]string{"zone": "a"}}, true,
			messages.ErrorCode_ERROR_CODE_NONE, &messages.NodeReply{},
			func(m *testManager) bool { return m.store().State.Node("wrk-1").GetSpec().GetLabels()["zone"] == "a" }},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			l := c.leader(t)
			f := c.followers(l)[0]
			silent := silenceAPI(t, l)
			defer func() {
				// The old leader comes back with its real api, as a
				// follower, for the next row.
				l.stop()
				silent.stop()
				l.restart(t)
				c.settle(t)
			}()
			kind := typeName(r.req)
			type answer struct {
				res any
				err error
			}
			done := make(chan answer, 1)
			go func() {
				res, err := cli.ask(f, r.req, 20*time.Second)
				done <- answer{res, err}
			}()
			within(t, 5*time.Second, "the request at the leader's api", func() bool { return silent.count(kind) > 0 })
			if r.crash {
				l.stop()
			}
			var a answer
			select {
			case a = <-done:
			case <-time.After(25 * time.Second):
				t.Fatal("no answer within 25 s")
			}
			if a.err != nil {
				t.Fatalf("no answer: %v", a.err)
			}
			if reflect.TypeOf(a.res) != reflect.TypeOf(r.wantReply) {
				t.Fatalf("answered with a %T, want a %T", a.res, r.wantReply)
			}
			e := a.res.(interface{ GetError() *messages.Error }).GetError()
			t.Logf("answer: %v %q", e.GetCode(), e.GetMessage())
			if e.GetCode() != r.wantCode {
				t.Fatalf("answered %v %q, want %v", e.GetCode(), e.GetMessage(), r.wantCode)
			}
			if e != nil && !strings.Contains(e.GetMessage(), "may or may not have been applied") {
				t.Fatalf("the answer %q does not say the write may have been applied", e.GetMessage())
			}
			// Sent once: a resend of a request that may have been
			// applied would reach the same, still leading, manager.
			if n := silent.count(kind); n != 1 {
				t.Fatalf("the leader's api got the %s %d times, want once", kind, n)
			}
			if r.wantCode == messages.ErrorCode_ERROR_CODE_NONE {
				within(t, 10*time.Second, "the write applied", func() bool { return r.applied(f) })
			} else if r.applied(f) {
				t.Fatal("the swallowed write took effect")
			}
		})
	}
}

// silentAPI stands in for a manager's api (manager/api): it takes every
// message and answers none, as a leader that died holding a request would,
// and counts what it took by type.
type silentAPI struct {
	sys *actor.ActorSystem
	pid *actor.PID

	mu   sync.Mutex
	took map[string]int
}

// silenceAPI replaces m's api with a silentAPI until stop.
func silenceAPI(t *testing.T, m *testManager) *silentAPI {
	t.Helper()
	s := &silentAPI{sys: m.system(), took: map[string]int{}}
	if err := s.sys.Root.StopFuture(pidOf(m, NameAPI)).Wait(); err != nil {
		t.Fatalf("stop %s's api: %v", m.id, err)
	}
	within(t, 5*time.Second, "the stand-in api", func() bool {
		var err error
		s.pid, err = s.sys.Root.SpawnNamed(actor.PropsFromFunc(s.receive), NameAPI)
		return err == nil
	})
	return s
}

func (s *silentAPI) receive(ctx actor.Context) {
	if m, ok := ctx.Message().(proto.Message); ok {
		s.mu.Lock()
		s.took[typeName(m)]++
		s.mu.Unlock()
	}
}

func (s *silentAPI) count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.took[kind]
}

func (s *silentAPI) stop() { _ = s.sys.Root.StopFuture(s.pid).Wait() }

// TestForwardHandsBackOnLeader: a request the api handed to the store
// actor while this manager followed, and that the store actor takes once
// this manager leads, is decided here by the api, which answers the
// original caller in its request's reply type.
func TestForwardHandsBackOnLeader(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1})
	l := c.leader(t)
	if res, err := c.cli.ask(l, &messages.CreateServiceRequest{Spec: workerSpec("web", 1)}, 10*time.Second); err != nil || res.(*messages.ServiceReply).Error != nil {
		t.Fatalf("create: %v %v", err, res)
	}
	rows := []struct {
		name    string
		req     proto.Message
		applied func() bool
	}{
		{"scale", &messages.ScaleServiceRequest{Name: "web", Replicas: 2},
			func() bool { return l.store().State.ServiceByName("web").GetSpec().GetReplicas() == 2 }},
		{"join token", &messages.JoinTokenRequest{Role: messages.NodeRole_NODE_ROLE_MANAGER},
			func() bool { return l.store().State.Cluster().ManagerToken != "" }},
		{"delete", &messages.DeleteServiceRequest{Name: "web"},
			func() bool { return l.store().State.ServiceByName("web") == nil }},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			sys := l.system()
			f := actor.NewFuture(sys, 10*time.Second)
			sys.Root.Send(pidOf(l, NameStore), &leaderRequest{msg: r.req, sender: f.PID(), deadline: time.Now().Add(holdWrites),
				target: NameAPI, timeout: time.Second, resendable: resendable(r.req)})
			res, err := f.Result()
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if e := res.(interface{ GetError() *messages.Error }).GetError(); e != nil {
				t.Fatalf("answered %T %v %q", res, e.GetCode(), e.GetMessage())
			}
			if !r.applied() {
				t.Fatalf("answered %T without error, but not applied", res)
			}
		})
	}
}
