package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/runtime/fakeruntime"
)

// The actor-level tests run a real protoactor ActorSystem in-process with
// the agent and its task actors, on fakeruntime (no containerd, no root), a
// fakeNetwork (no namespaces) and a fakeManager actor registered under the
// name the agent sends to. Timings are short so the package runs in
// seconds.

var bg = context.Background()

const (
	testNode    = "node-1"
	testAPIName = "api"
	testImage   = "docker.io/library/demo:v1"
	testBeat    = 100 * time.Millisecond
)

// fakeNetwork stands in for netmesh's bridge and namespaces.
type fakeNetwork struct {
	mu       sync.Mutex
	attached map[string]bool
	detached []string
	gcKeep   []map[string]bool
	next     int
}

func (n *fakeNetwork) Attach(_ context.Context, taskID string) (*netmesh.Sandbox, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	n.attached[taskID] = true
	return &netmesh.Sandbox{TaskID: taskID, NetNSPath: n.NetNSPath(taskID), IP: netip.AddrFrom4([4]byte{10, 88, 1, byte(1 + n.next)})}, nil
}

func (n *fakeNetwork) Detach(_ context.Context, taskID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.attached, taskID)
	n.detached = append(n.detached, taskID)
	return nil
}

func (n *fakeNetwork) NetNSPath(taskID string) string { return "/run/netns/" + taskID }

func (n *fakeNetwork) GC(_ context.Context, keep map[string]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gcKeep = append(n.gcKeep, keep)
	return nil
}

// fakeManager plays the leader's api actor: it registers the node,
// acknowledges heartbeats, keeps the newest status of every task and
// answers drains, or holds them until release.
type fakeManager struct {
	mu        sync.Mutex
	registers int
	beats     []time.Time
	status    map[string]*messages.TaskStatus
	states    map[string][]messages.TaskState // every state reported, in order
	drains    []time.Time
	holdDrain bool
	held      []*actor.PID
	netAcks   []uint64
}

func newFakeManager() *fakeManager {
	return &fakeManager{status: map[string]*messages.TaskStatus{}, states: map[string][]messages.TaskState{}}
}

func (f *fakeManager) Receive(ctx actor.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch m := ctx.Message().(type) {
	case *messages.RegisterNode:
		f.registers++
		ctx.Respond(&messages.RegisterNodeReply{Node: &messages.Node{Id: m.NodeId, Subnet: "10.88.1.0/24"}})
	case *messages.Heartbeat:
		f.beats = append(f.beats, time.Now())
		ctx.Respond(&messages.Heartbeat{NodeId: m.NodeId})
	case *messages.TaskStatusReport:
		for _, u := range m.Updates {
			f.status[u.TaskId] = u.Status
			f.states[u.TaskId] = append(f.states[u.TaskId], u.Status.GetState())
		}
	case *messages.DrainTask:
		f.drains = append(f.drains, time.Now())
		if f.holdDrain {
			f.held = append(f.held, ctx.Sender())
			return
		}
		ctx.Respond(&messages.DrainTaskReply{})
	case *messages.NetworkProgrammed:
		f.netAcks = append(f.netAcks, m.Index)
	}
}

// release answers the drains held so far.
func (f *fakeManager) release(sys *actor.ActorSystem) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.held {
		sys.Root.Send(p, &messages.DrainTaskReply{})
	}
	f.held, f.holdDrain = nil, false
}

func (f *fakeManager) taskStatus(id string) *messages.TaskStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status[id]
}

func (f *fakeManager) counts() (registers, beats, drains int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.registers, len(f.beats), len(f.drains)
}

// rig is one node's agent on a fake runtime, network and manager.
type rig struct {
	t     *testing.T
	sys   *actor.ActorSystem
	rt    *fakeruntime.Runtime
	net   *fakeNetwork
	mgr   *fakeManager
	mpid  *actor.PID
	agent *actor.PID
	cfg   AgentConfig
}

// newRig starts the fake manager (when withManager) but not the agent.
func newRig(t *testing.T, rtCfg fakeruntime.Config, withManager bool) *rig {
	t.Helper()
	rtCfg.Images = append(rtCfg.Images, testImage)
	r := &rig{t: t, sys: quietSystem(), rt: fakeruntime.New(rtCfg), net: &fakeNetwork{attached: map[string]bool{}}}
	dir := t.TempDir()
	log := testLogger(t)
	// The netmesh actor confirms each view at once: these tests are about
	// the agent, netmesh_test.go about programming.
	mesh := r.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if v, ok := ctx.Message().(*messages.NetworkView); ok {
			ctx.Respond(&netProgrammed{index: v.Index})
		}
	}))
	r.cfg = AgentConfig{
		NodeID: testNode, Role: messages.NodeRole_NODE_ROLE_WORKER, Description: &messages.NodeDescription{Hostname: "node-1"},
		Managers: []string{r.sys.Address()}, APIName: testAPIName, Runtime: r.rt,
		OpenNetwork: func(netip.Prefix) (Network, error) { return r.net, nil },
		CachePath:   filepath.Join(dir, "agent.db"), UploadDir: filepath.Join(dir, "uploads"),
		Task:      TaskConfig{NodeID: testNode, Runtime: r.rt, LogDir: filepath.Join(dir, "logs"), Log: log.Named("task")},
		Heartbeat: testBeat, NetMesh: mesh, Log: log.Named("agent"),
	}
	t.Cleanup(func() {
		r.stopAgent()
		r.stopManager()
		r.sys.Shutdown()
	})
	if withManager {
		r.startManager()
	}
	return r
}

func (r *rig) startManager() {
	r.t.Helper()
	r.mgr = newFakeManager()
	var err error
	if r.mpid, err = r.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return r.mgr }), testAPIName); err != nil {
		r.t.Fatalf("start fake manager: %v", err)
	}
}

func (r *rig) stopManager() {
	if r.mpid != nil {
		_ = r.sys.Root.StopFuture(r.mpid).Wait()
		r.mpid = nil
	}
}

// startAgent spawns the agent; registered waits until the fake manager
// has it registered.
func (r *rig) startAgent(registered bool) {
	r.t.Helper()
	var err error
	if r.agent, err = r.sys.Root.SpawnNamed(NewAgent(r.cfg), "agent"); err != nil {
		r.t.Fatalf("start agent: %v", err)
	}
	if registered {
		eventually(r.t, 5*time.Second, "agent registered", func() bool { n, _, _ := r.mgr.counts(); return n > 0 })
	}
}

// stopAgent stops the agent and its task actors; containers stay, as when
// the warren process ends.
func (r *rig) stopAgent() {
	if r.agent != nil {
		_ = r.sys.Root.StopFuture(r.agent).Wait()
		r.agent = nil
	}
}

func (r *rig) assign(index uint64, tasks ...*messages.Task) {
	r.sys.Root.Send(r.agent, &messages.Assignments{NodeId: testNode, Index: index, Tasks: tasks})
}

// runningTask is a task the manager wants running, never started before.
func runningTask(id string, epoch uint64, rp *messages.RestartPolicy) *messages.Task {
	return &messages.Task{Id: id, ServiceName: "web", NodeId: testNode, Epoch: epoch, SpecVersion: 1,
		DesiredState: messages.TaskState_TASK_STATE_RUNNING,
		Spec:         &messages.ServiceSpec{Name: "web", Image: "demo:v1", RestartPolicy: rp, StopGracePeriodMs: 200},
		Status:       &messages.TaskStatus{State: messages.TaskState_TASK_STATE_ASSIGNED}}
}

// shutdownTask is t as the manager sends it once it wants it stopped.
func shutdownTask(t *messages.Task) *messages.Task {
	c := *runningTask(t.Id, t.Epoch, t.Spec.GetRestartPolicy())
	c.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN
	return &c
}

// waitStarts waits until container id has been started n times and runs.
func (r *rig) waitStarts(id string, n int) {
	r.t.Helper()
	eventually(r.t, 5*time.Second, fmt.Sprintf("%s started %d times and running", id, n), func() bool {
		st, _ := r.rt.Status(context.Background(), id)
		return r.succeeded(fakeruntime.OpStart, id) == n && st.Running
	})
}

// succeeded counts the calls of op on id that returned no error.
func (r *rig) succeeded(op fakeruntime.Op, id string) int {
	n := 0
	for _, c := range r.rt.Calls() {
		if c.Op == op && c.ID == id && c.Err == nil {
			n++
		}
	}
	return n
}

// reported waits until the fake manager's newest status of task id
// satisfies ok.
func (r *rig) reported(id string, what string, ok func(*messages.TaskStatus) bool) *messages.TaskStatus {
	r.t.Helper()
	var st *messages.TaskStatus
	eventually(r.t, 5*time.Second, "task "+id+" reported "+what, func() bool {
		st = r.mgr.taskStatus(id)
		return st != nil && ok(st)
	})
	return st
}

func inState(s messages.TaskState) func(*messages.TaskStatus) bool {
	return func(st *messages.TaskStatus) bool { return st.State == s }
}

// quietSystem is an actor system that keeps protoactor's own logging
// (dead letters from stopped test actors) out of the test output.
func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// never fails if cond becomes true within d.
func never(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger logs through t (visible with -v or on failure) and drops what
// actors log after the test is over, which t.Log would panic on.
func testLogger(t *testing.T) *zap.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	enc := zap.NewDevelopmentEncoderConfig()
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), zapcore.DebugLevel))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

var _ runtime.Runtime = (*fakeruntime.Runtime)(nil)
