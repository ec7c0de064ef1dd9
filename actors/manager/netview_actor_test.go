package manager

import (
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
)

// TestNetViewPushesAndDrains runs the leader's netview and node actors on a
// real manager with two fake workers: a task's endpoint reaches every
// node's push once it reports running, leaves it when it fails, and a
// drain of it is answered as soon as every ready node has confirmed a push
// at least as new as the task's last write (well before the drain timeout,
// which would otherwise end it).
func TestNetViewPushesAndDrains(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	w1, w2 := c.workers["wrk-1"], c.workers["wrk-2"]
	st := m.store().State
	spec := &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1, Constraints: []string{"node.hostname==wrk-1"},
		Ports: []*messages.PortConfig{{TargetPort: 80}}}
	if r, err := m.ask(NameAPI, &messages.CreateServiceRequest{Spec: spec}, 10*time.Second); err != nil || r.(*messages.ServiceReply).Error != nil {
		t.Fatalf("create web: %v %v", err, r)
	}
	within(t, 10*time.Second, "web placed", func() bool { return converged(m, "web", 1) })
	task := liveTasks(m, "web")[1][0]
	ip := nthAddr(st.Node("wrk-1").Subnet, 5)

	// lastPush is a worker's newest push, with web's endpoints in it.
	lastPush := func(w *fakeWorker) (*messages.Assignments, []*messages.NetEndpoint) {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, s := range w.last.GetServices() {
			if s.Name == "web" {
				return w.last, s.Endpoints
			}
		}
		return w.last, nil
	}

	w1.report(m, task, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Ip: ip})
	for _, w := range []*fakeWorker{w1, w2} {
		within(t, 5*time.Second, w.name+" pushed web's endpoint", func() bool {
			_, eps := lastPush(w)
			return len(eps) == 1 && eps[0].Ip == ip && eps[0].Weight == 1
		})
	}

	w1.report(m, task, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, Ip: ip})
	within(t, 5*time.Second, "the failure in the state", func() bool { return !Healthy(st.Task(task.Id)) })
	written := st.Task(task.Id).Meta.GetVersion()
	// The same report again commits a command that changes nothing: the
	// state's index moves past the last change, and no view is published
	// at it. The drain must not wait for one.
	w1.report(m, task, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, Ip: ip})
	within(t, 5*time.Second, "a commit that changes nothing", func() bool { return st.Index() > written })
	start := time.Now()
	reply := make(chan any, 1)
	go func() {
		r, err := w1.ask(m, &messages.DrainTask{NodeId: "wrk-1", TaskId: task.Id}, 10*time.Second)
		if err != nil {
			r = err
		}
		reply <- r
	}()
	for _, w := range []*fakeWorker{w1, w2} {
		var as *messages.Assignments
		within(t, 5*time.Second, w.name+" pushed web without the endpoint", func() bool {
			var eps []*messages.NetEndpoint
			as, eps = lastPush(w)
			return as != nil && len(eps) == 0 && as.Index >= written
		})
		w.send(m, &messages.NetworkProgrammed{NodeId: w.name, Index: as.Index})
	}
	// The manager's own node runs no agent here: confirm for it as the
	// node's agent would, from inside the process.
	m.sys.Root.Send(pidOf(m, NameAPI), &messages.NetworkProgrammed{NodeId: m.id, Index: st.Index()})
	select {
	case r := <-reply:
		d, ok := r.(*messages.DrainTaskReply)
		if !ok || len(d.Unconfirmed) > 0 || d.Index != written {
			t.Fatalf("drain reply %v, want every node confirmed at index %d", r, written)
		}
		if took := time.Since(start); took >= drainTimeout {
			t.Fatalf("drain answered after %s: by its timeout, not the confirmations", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no drain reply")
	}
}
