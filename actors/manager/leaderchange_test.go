package manager

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// TestLeaderChangeDuringWrite: a create-service write sent to a follower
// while the leader crashes either commits exactly once (one service, one
// task per slot, no second set) or fails with ERROR_CODE_UNAVAILABLE and
// changes nothing; either way an answer comes, and the next write through
// the same follower succeeds on the new leader. Each round crashes the
// current leader at another moment relative to the write, then brings it
// back as a follower for the next round.
func TestLeaderChangeDuringWrite(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 3, workers: []string{"wrk-1"}})
	cli := c.cli
	const replicas = 2

	rounds := []struct {
		name string
		// via sends the write to follower f and returns the error code
		// it was answered with (ERROR_CODE_NONE: applied), the
		// error's text, and the id of the service the reply names.
		via string
		// writeAt is when the write is sent relative to the crash:
		// negative is before it.
		writeAt time.Duration
	}{
		{"api, write just before the crash", "api", -5 * time.Millisecond},
		{"api, write with the crash", "api", 0},
		{"api, write before the followers notice", "api", 100 * time.Millisecond},
		{"api, write during the election", "api", 450 * time.Millisecond},
		{"store, write with the crash", "store", 0},
		{"store, write during the election", "store", 300 * time.Millisecond},
	}
	for i, r := range rounds {
		t.Run(r.name, func(t *testing.T) {
			old := c.leader(t)
			f := c.followers(old)[0]
			name := fmt.Sprintf("race%d", i)
			type answer struct {
				code messages.ErrorCode
				msg  string
				id   string
				err  error
			}
			done := make(chan answer, 1)
			write := func() {
				spec := workerSpec(name, replicas)
				switch r.via {
				case "api":
					res, err := cli.ask(f, &messages.CreateServiceRequest{Spec: spec}, 30*time.Second)
					rep, _ := res.(*messages.ServiceReply)
					if err == nil && rep == nil {
						err = fmt.Errorf("unexpected reply %T", res)
					}
					done <- answer{rep.GetError().GetCode(), rep.GetError().GetMessage(), rep.GetService().GetId(), err}
				case "store":
					id := messages.NewID()
					res, err := f.ask(NameStore, &messages.Propose{Command: &messages.Command{Op: &messages.Command_CreateService{
						CreateService: &messages.CreateService{Service: &messages.Service{Id: id, Spec: spec}}}}}, 30*time.Second)
					rep, _ := res.(*messages.CommandResult)
					if err == nil && rep == nil {
						err = fmt.Errorf("unexpected reply %T", res)
					}
					done <- answer{rep.GetError().GetCode(), rep.GetError().GetMessage(), id, err}
				}
			}
			start := time.Now()
			if r.writeAt < 0 {
				go write()
				time.Sleep(-r.writeAt)
				old.stop()
			} else {
				old.stop()
				time.Sleep(r.writeAt)
				go write()
			}
			var a answer
			select {
			case a = <-done:
			case <-time.After(40 * time.Second):
				t.Fatal("no answer to the write within 40 s")
			}
			t.Logf("answered after %s: code=%v %q err=%v", time.Since(start).Round(time.Millisecond), a.code, a.msg, a.err)
			nl := c.leader(t)
			if nl == old {
				t.Fatal("the stopped manager still leads")
			}
			c.settle(t)
			st := f.store().State
			v := st.ServiceByName(name)
			switch {
			case a.err != nil:
				t.Fatalf("the write got no answer: %v", a.err)
			case a.code == messages.ErrorCode_ERROR_CODE_NONE:
				if v == nil || v.Id != a.id {
					t.Fatalf("the write was acknowledged (service %s) but the state holds %v", a.id, v)
				}
			case a.code == messages.ErrorCode_ERROR_CODE_UNAVAILABLE:
				// A write whose leader died after taking it may still
				// commit; the answer must say so, then. Any other refusal
				// must have changed nothing.
				if v != nil && !strings.Contains(a.msg, "may or may not") {
					t.Fatalf("refused as %q, yet service %s was created", a.msg, v.Id)
				}
			default:
				t.Fatalf("the write failed with %v %q: a leader change must not surface as anything but UNAVAILABLE (an ALREADY_EXISTS means it was applied twice)", a.code, a.msg)
			}
			if v != nil {
				// One set of tasks: exactly one per slot, and none made and
				// thrown away by a second writer.
				within(t, 10*time.Second, "the service's tasks placed", func() bool { return converged(f, name, replicas) })
				c.settle(t)
				if all := st.Tasks(store.TaskFilter{ServiceID: v.Id}); len(all) != replicas {
					t.Fatalf("%d tasks for %d replicas: %s", len(all), replicas, taskSig(f, name))
				}
			}

			// The next write, through the same follower, succeeds.
			res, err := cli.ask(f, &messages.CreateServiceRequest{Spec: workerSpec(name+"-next", 1)}, 20*time.Second)
			if rep, _ := res.(*messages.ServiceReply); err != nil || rep == nil || rep.Error != nil {
				t.Fatalf("the write after the leader change: %v %v", err, rep.GetError())
			}
			within(t, 10*time.Second, "the next service's task placed", func() bool { return converged(f, name+"-next", 1) })

			// Back to three managers for the next round.
			old.restart(t)
			c.settle(t)
		})
	}
}

// TestLeaderChangeResumesActors: the leader-only actors move with
// leadership. On the new leader the scheduler, a node actor per node and a
// service actor per service run (the manager/leader/... ids); on the old
// one, when it is still up, none do; no task is started twice (the task
// ids, slots, nodes and epochs stay as they were, and the fake agents are
// never told to run a new task id); and the new service actors act (a scale
// after the change converges, keeping the tasks that ran).
func TestLeaderChangeResumesActors(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 3, workers: []string{"wrk-1", "wrk-2"}})
	l := c.leader(t)
	workers := []*fakeWorker{c.workers["wrk-1"], c.workers["wrk-2"]}
	cli := c.cli
	replicas := 4
	if res, err := cli.ask(l, &messages.CreateServiceRequest{Spec: workerSpec("web", uint64(replicas))}, 10*time.Second); err != nil || res.(*messages.ServiceReply).Error != nil {
		t.Fatalf("create: %v %v", err, res)
	}
	within(t, 10*time.Second, "web placed", func() bool { return converged(l, "web", replicas) })
	c.settle(t)
	want := []string{NameLeader, NameLeader + "/nodes/mgr-1", NameLeader + "/nodes/mgr-2", NameLeader + "/nodes/mgr-3",
		NameLeader + "/nodes/wrk-1", NameLeader + "/nodes/wrk-2", NameLeader + "/scheduler", NameLeader + "/services/web"}
	hasAll := func(m *testManager) error {
		ids := m.leaderIDs()
		for _, w := range want {
			if !slices.Contains(ids, w) {
				return fmt.Errorf("%s runs %v, not %s", m.id, ids, w)
			}
		}
		return nil
	}
	if err := hasAll(l); err != nil {
		t.Fatal(err)
	}

	changes := []struct {
		name   string
		change func(t *testing.T, old *testManager)
	}{
		{"leadership handed over", func(t *testing.T, old *testManager) {
			if err := old.store().TransferLeadership(); err != nil {
				t.Fatalf("transfer leadership: %v", err)
			}
		}},
		{"leader crashes", func(t *testing.T, old *testManager) { old.stop() }},
	}
	for _, ch := range changes {
		t.Run(ch.name, func(t *testing.T) {
			old := c.leader(t)
			before := taskSig(old, "web")
			// Every running task has reached its fake agent before the
			// change, so any id it is told to run after it is new.
			for _, ts := range liveTasks(old, "web") {
				for _, tk := range ts {
					w := c.workers[tk.NodeId]
					within(t, 10*time.Second, "the push of "+tk.Id+" to "+tk.NodeId, func() bool { return slices.Contains(w.startedIDs(), tk.Id) })
				}
			}
			var started [][]string
			var pushes []int
			for _, w := range workers {
				started = append(started, w.startedIDs())
				w.mu.Lock()
				pushes = append(pushes, w.pushes)
				w.mu.Unlock()
			}
			ch.change(t, old)
			nl := c.leader(t)
			if nl == old {
				t.Fatal("leadership did not move")
			}
			within(t, 10*time.Second, "the new leader's actors", func() bool { return hasAll(nl) == nil })
			if old.isUp() {
				within(t, 10*time.Second, "the old leader's actors to stop", func() bool { return len(old.leaderIDs()) == 0 })
			}
			// The new node actors push to their nodes when they start.
			for i, w := range workers {
				within(t, 10*time.Second, "a push from the new leader to "+w.name, func() bool {
					w.mu.Lock()
					defer w.mu.Unlock()
					return w.pushes > pushes[i] && w.last.GetIndex() > 0
				})
			}
			c.settle(t)
			if after := taskSig(nl, "web"); after != before {
				t.Fatalf("tasks changed across the leader change:\nbefore %s\nafter  %s", before, after)
			}
			for i, w := range workers {
				if got := w.startedIDs(); !slices.Equal(got, started[i]) {
					t.Fatalf("%s was told to run %v, before the change %v", w.name, got, started[i])
				}
			}
			// The new service actor acts: scale up keeps the running tasks.
			replicas++
			if res, err := cli.ask(nl, &messages.ScaleServiceRequest{Name: "web", Replicas: uint64(replicas)}, 10*time.Second); err != nil || res.(*messages.ServiceReply).Error != nil {
				t.Fatalf("scale: %v %v", err, res)
			}
			within(t, 10*time.Second, "web scaled on the new leader", func() bool { return converged(nl, "web", replicas) })
			for _, part := range strings.Fields(before) {
				if !strings.Contains(taskSig(nl, "web"), part) {
					t.Fatalf("task %s was replaced by the scale: %s", part, taskSig(nl, "web"))
				}
			}
		})
	}
}
