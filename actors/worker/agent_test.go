package worker

import (
	"os"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/runtime/fakeruntime"
)

var restartAny = &messages.RestartPolicy{Condition: messages.RestartCondition_RESTART_CONDITION_ANY, DelayMs: 20}

// TestAdoption: a task actor that comes back (the agent restarted from its
// cache, or the task actor itself crashed) adopts the container still
// running: no second container, no second start, and it watches the
// adopted process (its exit is restarted).
func TestAdoption(t *testing.T) {
	tests := []struct {
		name string
		lose func(r *rig)
	}{
		{"agent restarted", func(r *rig) {
			r.stopAgent()
			r.startAgent(false)
		}},
		{"task actor crashed", func(r *rig) {
			r.sys.Root.Send(r.sys.NewLocalPID("agent/tasks/task-adopt-00001"), &messages.DebugCrash{})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, fakeruntime.Config{}, true)
			r.startAgent(true)
			const id = "task-adopt-00001"
			r.assign(1, runningTask(id, 1, restartAny))
			r.waitStarts(id, 1)
			first := r.reported(id, "running", inState(messages.TaskState_TASK_STATE_RUNNING)).Pid
			statusCalls := r.rt.Count(fakeruntime.OpStatus, id)

			tt.lose(r)
			eventually(t, 5*time.Second, "the container looked at again", func() bool {
				return r.rt.Count(fakeruntime.OpStatus, id) > statusCalls
			})
			r.reported(id, "running after adoption", inState(messages.TaskState_TASK_STATE_RUNNING))
			if n := r.succeeded(fakeruntime.OpCreate, id); n != 1 {
				t.Fatalf("%d containers created, want 1", n)
			}
			if n := r.rt.Count(fakeruntime.OpStart, id); n != 1 {
				t.Fatalf("%d starts, want 1: the running container was not adopted", n)
			}
			if err := r.rt.Exit(id, 1); err != nil {
				t.Fatal(err)
			}
			r.waitStarts(id, 2)
			st := r.reported(id, "restarted", func(s *messages.TaskStatus) bool {
				return s.State == messages.TaskState_TASK_STATE_RUNNING && s.Pid != first
			})
			if st.RestartCount != 1 {
				t.Fatalf("restart count %d, want 1", st.RestartCount)
			}
		})
	}
}

// TestAutonomyAndReconnect: with no manager reachable, a restarted agent
// runs its cached tasks and restarts them; once a manager appears, it
// registers, heartbeats and reports what it runs.
func TestAutonomyAndReconnect(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	r.startAgent(true)
	const a, b = "task-autonomy-1", "task-autonomy-2"
	r.assign(1, runningTask(a, 1, restartAny), runningTask(b, 1, restartAny))
	r.waitStarts(a, 1)
	r.waitStarts(b, 1)

	r.stopAgent()
	r.stopManager()
	statusCalls := r.rt.Count(fakeruntime.OpStatus, a)
	r.startAgent(false)
	eventually(t, 5*time.Second, "the cached task resumed", func() bool { return r.rt.Count(fakeruntime.OpStatus, a) > statusCalls })
	if n := r.rt.Count(fakeruntime.OpStart, a); n != 1 {
		t.Fatalf("%d starts: the cached task was not adopted", n)
	}
	// Both run on; a's exit is restarted without any manager.
	if err := r.rt.Exit(a, 1); err != nil {
		t.Fatal(err)
	}
	r.waitStarts(a, 2)
	if err := r.rt.Exit(b, 0); err != nil {
		t.Fatal(err)
	}
	r.waitStarts(b, 2)

	r.startManager()
	eventually(t, 5*time.Second, "the agent registered with the new manager", func() bool { n, _, _ := r.mgr.counts(); return n > 0 })
	eventually(t, 5*time.Second, "heartbeats", func() bool { _, n, _ := r.mgr.counts(); return n >= 2 })
	st := r.reported(a, "running with its restart", func(s *messages.TaskStatus) bool {
		return s.State == messages.TaskState_TASK_STATE_RUNNING && s.RestartCount == 1
	})
	if st.Ip == "" {
		t.Fatalf("report without the task's address: %+v", st)
	}
	r.reported(b, "running", inState(messages.TaskState_TASK_STATE_RUNNING))
}

// TestDuplicateSuppression: the same set pushed twice spawns nothing new,
// an older index is ignored, and a task whose epoch is older than the one
// this node acts on is fenced, however often it is pushed.
func TestDuplicateSuppression(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	r.startAgent(true)
	const id = "task-duplicate1"
	cur := runningTask(id, 2, nil)
	r.assign(5, cur)
	r.waitStarts(id, 1)
	r.reported(id, "running", inState(messages.TaskState_TASK_STATE_RUNNING))

	stopped := func() bool {
		st, _ := r.rt.Status(bg, id)
		return !st.Running || r.rt.Count(fakeruntime.OpStop, id) > 0
	}
	r.assign(5, cur)
	r.assign(3) // older: would remove the task
	stale := shutdownTask(cur)
	stale.Epoch = 1
	r.assign(6, stale)
	r.assign(7, stale)
	never(t, 400*time.Millisecond, "a duplicate, older or fenced set touched the task", func() bool {
		return stopped() || r.rt.Count(fakeruntime.OpCreate, id) != 1 || r.rt.Count(fakeruntime.OpStart, id) != 1
	})
	// The current epoch still acts.
	r.assign(8, shutdownTask(cur))
	r.reported(id, "shut down", inState(messages.TaskState_TASK_STATE_SHUTDOWN))
}

// TestOrphanGC: containers of this node that no assignment names are
// removed once the node knows its set: on the first assignment, and on a
// restart from the cache before any manager answers. Other nodes'
// containers are left alone.
func TestOrphanGC(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	node := func(id, n string) runtime.ContainerSpec {
		return runtime.ContainerSpec{ID: id, Image: testImage, Labels: map[string]string{"warren.node": n}}
	}
	r.rt.AddContainer(node("orphan-here-001", testNode), true)
	r.rt.AddContainer(node("other-node-0001", "node-2"), true)
	const kept = "task-kept-00001"
	r.startAgent(true)
	r.assign(1, runningTask(kept, 1, nil))
	r.waitStarts(kept, 1)
	exists := func(id string) bool { st, _ := r.rt.Status(bg, id); return st.Exists }
	eventually(t, 5*time.Second, "the orphan removed", func() bool { return !exists("orphan-here-001") })
	if !exists("other-node-0001") {
		t.Fatal("another node's container was removed")
	}

	r.stopAgent()
	r.stopManager()
	r.rt.AddContainer(node("orphan-here-002", testNode), false)
	r.startAgent(false)
	eventually(t, 5*time.Second, "the orphan removed on a restart from the cache", func() bool { return !exists("orphan-here-002") })
	if !exists(kept) || !exists("other-node-0001") {
		t.Fatal("a container still wanted was removed")
	}
	r.net.mu.Lock()
	defer r.net.mu.Unlock()
	if n := len(r.net.gcKeep); n != 2 || !r.net.gcKeep[1][kept] || len(r.net.gcKeep[1]) != 1 {
		t.Fatalf("network GC calls %v, want two keeping only %s", r.net.gcKeep, kept)
	}
}

// TestHeartbeatsDuringImport: a large image imported through the agent
// (ImportImageChunk, as a manager distributes it) does not hold back the
// agent's heartbeats; meanwhile the agent still takes assignments.
func TestHeartbeatsDuringImport(t *testing.T) {
	const (
		size   = 24 << 20
		perMB  = 100 * time.Millisecond // 2.4 s for the whole image
		maxGap = 6 * testBeat
	)
	r := newRig(t, fakeruntime.Config{ImportPerMB: perMB}, true)
	r.startAgent(true)
	eventually(t, 5*time.Second, "heartbeats", func() bool { _, n, _ := r.mgr.counts(); return n >= 2 })
	img, err := fakeruntime.ImageTar(size, "big:v1")
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 4 << 20
	var reply *messages.ImportImageReply
	start := time.Now()
	for off, seq := 0, uint64(0); off < len(img); off, seq = off+chunk, seq+1 {
		end := min(off+chunk, len(img))
		res, err := r.sys.Root.RequestFuture(r.agent, &messages.ImportImageChunk{UploadId: "up-1", Seq: seq, Data: img[off:end], Last: end == len(img)}, 30*time.Second).Result()
		if err != nil {
			t.Fatalf("chunk %d: %v", seq, err)
		}
		reply = res.(*messages.ImportImageReply)
		if reply.Error != nil {
			t.Fatalf("chunk %d: %s", seq, reply.Error.Message)
		}
	}
	took := time.Since(start)
	if len(reply.Images) != 1 || reply.Images[0] != "docker.io/library/big:v1" {
		t.Fatalf("imported %v", reply.Images)
	}
	if took < 2*time.Second {
		t.Fatalf("the import took %s: too fast to tell anything about heartbeats", took)
	}
	r.mgr.mu.Lock()
	var during []time.Time
	for _, b := range r.mgr.beats {
		if b.After(start) && b.Before(start.Add(took)) {
			during = append(during, b)
		}
	}
	r.mgr.mu.Unlock()
	gaps := []time.Duration{}
	prev := start
	for _, b := range append(during, start.Add(took)) {
		gaps = append(gaps, b.Sub(prev))
		prev = b
	}
	for i, g := range gaps {
		if g > maxGap {
			t.Fatalf("heartbeat gap %d of %s during a %s import (%d beats), want at most %s: the import holds the mailbox", i, g, took, len(during), maxGap)
		}
	}
	if left, _ := os.ReadDir(r.cfg.UploadDir); len(left) != 0 {
		t.Fatalf("the upload is left behind in %s: %v", r.cfg.UploadDir, left)
	}
}

// TestOrphanSweepOffMailbox: an orphan that ignores SIGTERM holds the sweep
// for its stop grace, but not the agent: heartbeats go on and a new set's
// task starts meanwhile.
func TestOrphanSweepOffMailbox(t *testing.T) {
	r := newRig(t, fakeruntime.Config{}, true)
	const stubborn = "orphan-stubborn"
	r.rt.AddContainer(runtime.ContainerSpec{ID: stubborn, Image: testImage, Labels: map[string]string{"warren.node": testNode}}, true)
	if err := r.rt.IgnoreSIGTERM(stubborn); err != nil {
		t.Fatal(err)
	}
	r.startAgent(true)
	r.assign(1, runningTask("task-first-0001", 1, nil))
	eventually(t, 5*time.Second, "the sweep stopping the orphan", func() bool { return r.rt.Count(fakeruntime.OpStop, stubborn) == 1 })
	_, beats, _ := r.mgr.counts()
	r.assign(2, runningTask("task-first-0001", 1, nil), runningTask("task-second-01", 1, nil))
	eventually(t, 2*time.Second, "a new task started during the sweep", func() bool {
		return r.succeeded(fakeruntime.OpStart, "task-second-01") == 1
	})
	eventually(t, 2*time.Second, "heartbeats during the sweep", func() bool { _, n, _ := r.mgr.counts(); return n >= beats+3 })
	if st, _ := r.rt.Status(bg, stubborn); !st.Running {
		t.Fatal("the orphan is gone already: the test proves nothing (its stop grace is 5 s)")
	}
}
