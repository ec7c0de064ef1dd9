package manager

import (
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// TestNodeActorHeartbeats: the leader's node actor keeps a node that
// heartbeats ready, marks it down once it has been silent longer than
// NodeDownAfter, and ready again at its next heartbeat.
func TestNodeActorHeartbeats(t *testing.T) {
	const downAfter = time.Second
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1"}, nodeDownAfter: downAfter})
	m, w := c.mgrs[0], c.workers["wrk-1"]
	state := func() messages.NodeState { return m.store().State.Node("wrk-1").GetStatus().GetState() }
	const ready, down = messages.NodeState_NODE_STATE_READY, messages.NodeState_NODE_STATE_DOWN

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"heartbeats keep it ready", func(t *testing.T) {
			// Three times the down timeout, a heartbeat every third of it:
			// it must never be seen down.
			for end := time.Now().Add(3 * downAfter); time.Now().Before(end); {
				w.heartbeat(t, m)
				for next := time.Now().Add(downAfter / 3); time.Now().Before(next); time.Sleep(20 * time.Millisecond) {
					if s := state(); s != ready {
						t.Fatalf("node is %v while it heartbeats", s)
					}
				}
			}
		}},
		{"silence marks it down", func(t *testing.T) {
			silent := time.Now()
			within(t, downAfter+5*time.Second, "wrk-1 down", func() bool { return state() == down })
			if d := time.Since(silent); d < downAfter {
				t.Fatalf("marked down after %s of silence, before NodeDownAfter (%s)", d, downAfter)
			}
		}},
		{"a heartbeat brings it back", func(t *testing.T) {
			w.heartbeat(t, m)
			within(t, 5*time.Second, "wrk-1 ready", func() bool { return state() == ready })
		}},
	}
	for _, s := range steps {
		t.Run(s.name, s.run)
	}
}

// TestNodeActorIgnoresOtherNodesTasks: a node actor takes status reports
// only for tasks assigned to its own node. The report is sent from inside
// the manager's process, where the api trusts the sender, so it is the
// node actor's own check that is tested; a report for the node's own task
// sent right after it is the control (applied, so the first was handled).
func TestNodeActorIgnoresOtherNodesTasks(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	for _, name := range []string{"wrk-1", "wrk-2"} {
		spec := &messages.ServiceSpec{Name: "on-" + name, Image: "demo:v1", Replicas: 1, Constraints: []string{"node.hostname==" + name}}
		if r, err := m.ask(NameAPI, &messages.CreateServiceRequest{Spec: spec}, 10*time.Second); err != nil || r.(*messages.ServiceReply).Error != nil {
			t.Fatalf("create %s: %v %v", spec.Name, err, r)
		}
		within(t, 10*time.Second, spec.Name+" placed", func() bool { return converged(m, spec.Name, 1) })
	}
	st := m.store().State
	own, other := liveTasks(m, "on-wrk-1")[1][0], liveTasks(m, "on-wrk-2")[1][0]

	tests := []struct {
		name    string
		updates []*messages.TaskStatusUpdate
	}{
		{"another node's task failed", []*messages.TaskStatusUpdate{
			{TaskId: other.Id, Epoch: other.Epoch, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, Err: "forged"}}}},
		{"another node's task rejected, with a later epoch", []*messages.TaskStatusUpdate{
			{TaskId: other.Id, Epoch: other.Epoch + 1, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_REJECTED, Err: "forged"}}}},
		{"another node's task in a report that also carries an unknown task", []*messages.TaskStatusUpdate{
			{TaskId: "no-such-task", Epoch: 1, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING}},
			{TaskId: other.Id, Epoch: other.Epoch, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_COMPLETE}}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := st.Task(other.Id)
			m.system().Root.Send(pidOf(m, NameAPI), &messages.TaskStatusReport{NodeId: "wrk-1", Updates: tt.updates})
			// The control: wrk-1's own task, a new address each time.
			ctl := hostIn(t, st.Node("wrk-1").Subnet, byte(20+i))
			m.system().Root.Send(pidOf(m, NameAPI), &messages.TaskStatusReport{NodeId: "wrk-1", Updates: []*messages.TaskStatusUpdate{
				{TaskId: own.Id, Epoch: own.Epoch, Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Ip: ctl}}}})
			within(t, 10*time.Second, "wrk-1's own report applied", func() bool { return st.Task(own.Id).GetStatus().GetIp() == ctl })
			c.settle(t)
			after := st.Task(other.Id)
			if after.GetMeta().GetVersion() != before.GetMeta().GetVersion() || after.GetStatus().GetState() != before.GetStatus().GetState() {
				t.Fatalf("wrk-1's report changed wrk-2's task: %v -> %v", before.GetStatus(), after.GetStatus())
			}
			if n := len(st.Tasks(store.TaskFilter{ServiceID: other.ServiceId})); n != 1 {
				t.Fatalf("wrk-2's service has %d tasks: the forged report got its task replaced", n)
			}
		})
	}
}
