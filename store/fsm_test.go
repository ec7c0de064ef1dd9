package store

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/warrenorch/warren/messages"
)

func svc(id, name string, replicas uint64) *messages.Service {
	return &messages.Service{Id: id, Spec: &messages.ServiceSpec{Name: name, Image: "demo:v1", Replicas: replicas}}
}

func createSvc(id, name string) *messages.Command {
	return &messages.Command{Op: &messages.Command_CreateService{CreateService: &messages.CreateService{Service: svc(id, name, 1)}}, UnixNano: 42}
}

func TestStateApply(t *testing.T) {
	type step struct {
		cmd      *messages.Command
		wantCode messages.ErrorCode
		changes  int
	}
	task := func(id, sid, node string, epoch uint64) *messages.Task {
		return &messages.Task{Id: id, ServiceId: sid, ServiceName: "web", NodeId: node, Epoch: epoch, DesiredState: messages.TaskState_TASK_STATE_RUNNING}
	}
	status := func(id string, epoch uint64, st messages.TaskState) *messages.Command {
		return &messages.Command{Op: &messages.Command_UpdateTaskStatuses{UpdateTaskStatuses: &messages.UpdateTaskStatuses{Updates: []*messages.TaskStatusUpdate{{TaskId: id, Epoch: epoch, Status: &messages.TaskStatus{State: st}}}}}}
	}
	cases := []struct {
		name  string
		steps []step
		check func(t *testing.T, s *State)
	}{
		{"create then duplicate name", []step{
			{createSvc("s1", "web"), messages.ErrorCode_ERROR_CODE_NONE, 1},
			{createSvc("s2", "web"), messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, 0},
		}, func(t *testing.T, s *State) {
			if got := s.ServiceByName("web"); got == nil || got.Id != "s1" || got.Meta.Version != 1 || got.SpecVersion != 1 {
				t.Fatalf("service = %v", got)
			}
		}},
		{"update with stale version conflicts", []step{
			{createSvc("s1", "web"), 0, 1},
			{&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "s1", ExpectedVersion: 1, Spec: svc("s1", "web", 3).Spec}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "s1", ExpectedVersion: 1, Spec: svc("s1", "web", 5).Spec}}}, messages.ErrorCode_ERROR_CODE_CONFLICT, 0},
		}, func(t *testing.T, s *State) {
			v := s.ServiceByName("web")
			if v.Spec.Replicas != 3 || v.SpecVersion != 2 || v.Meta.Version != 2 || v.PreviousSpec != nil {
				t.Fatalf("service = %v (scaling keeps previous_spec: nothing to roll back to)", v)
			}
		}},
		{"a template change moves previous_spec and starts its deployment in the same commit", []step{
			{createSvc("s1", "web"), 0, 1},
			{&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "s1", Spec: &messages.ServiceSpec{Name: "web", Image: "demo:v2", Replicas: 1},
				Deployment: &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH}}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "s1", Spec: &messages.ServiceSpec{Name: "web", Image: "demo:v2", Replicas: 4}}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_SetDeployment{SetDeployment: &messages.SetDeployment{ServiceId: "s1", ExpectedIndex: 1,
				Deployment: &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_DONE}}}}, messages.ErrorCode_ERROR_CODE_CONFLICT, 0},
			{&messages.Command{Op: &messages.Command_SetDeployment{SetDeployment: &messages.SetDeployment{ServiceId: "s1", ExpectedIndex: 2,
				Deployment: &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK}, RestorePrevious: true}}, UnixNano: 99}, 0, 1},
		}, func(t *testing.T, s *State) {
			v := s.ServiceByName("web")
			d := v.Deployment
			if v.Spec.Image == "demo:v2" || v.PreviousSpec.GetImage() != "demo:v2" || v.SpecVersion != 4 {
				t.Fatalf("rolled back service = %v", v)
			}
			if d.FromVersion != 1 || d.ToVersion != 2 || d.Index != 5 || d.FinishedUnixNano == 0 || d.State != messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK {
				t.Fatalf("deployment = %v", d)
			}
		}},
		{"rename refused", []step{
			{createSvc("s1", "web"), 0, 1},
			{&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "s1", Spec: svc("s1", "api", 1).Spec}}}, messages.ErrorCode_ERROR_CODE_INVALID, 0},
		}, nil},
		{"update unknown service", []step{
			{&messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: "nope", Spec: svc("nope", "x", 1).Spec}}}, messages.ErrorCode_ERROR_CODE_NOT_FOUND, 0},
		}, nil},
		{"delete service shuts its tasks down", []step{
			{createSvc("s1", "web"), 0, 1},
			{&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{task("t1", "s1", "n1", 1), task("t2", "s1", "n1", 1)}}}}, 0, 2},
			{&messages.Command{Op: &messages.Command_DeleteService{DeleteService: &messages.DeleteService{ServiceId: "s1"}}}, 0, 3},
		}, func(t *testing.T, s *State) {
			if s.ServiceByName("web") != nil {
				t.Fatal("service still there")
			}
			for _, tk := range s.Tasks(TaskFilter{ServiceID: "s1"}) {
				if tk.DesiredState != messages.TaskState_TASK_STATE_SHUTDOWN {
					t.Fatalf("task %s desired %v", tk.Id, tk.DesiredState)
				}
			}
		}},
		{"status from an older epoch is fenced", []step{
			{&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{task("t1", "s1", "n1", 2)}}}}, 0, 1},
			{status("t1", 1, messages.TaskState_TASK_STATE_FAILED), 0, 0},
			{status("t1", 2, messages.TaskState_TASK_STATE_RUNNING), 0, 1},
			{status("t1", 2, messages.TaskState_TASK_STATE_RUNNING), 0, 0},
		}, func(t *testing.T, s *State) {
			if st := s.Task("t1").Status.State; st != messages.TaskState_TASK_STATE_RUNNING {
				t.Fatalf("state %v", st)
			}
		}},
		{"duplicate task id rejects the whole batch", []step{
			{&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{task("t1", "s1", "n1", 1)}}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{task("t2", "s1", "n1", 1), task("t1", "s1", "n1", 1)}}}}, messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, 0},
		}, func(t *testing.T, s *State) {
			if s.Task("t2") != nil {
				t.Fatal("partial batch applied")
			}
		}},
		{"move task updates node index", []step{
			{&messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{task("t1", "s1", "n1", 1)}}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_UpdateTasks{UpdateTasks: &messages.UpdateTasks{Tasks: []*messages.Task{task("t1", "s1", "n2", 2)}}}}, 0, 1},
		}, func(t *testing.T, s *State) {
			if len(s.Tasks(TaskFilter{NodeID: "n1"})) != 0 || len(s.Tasks(TaskFilter{NodeID: "n2"})) != 1 {
				t.Fatal("node index not updated")
			}
		}},
		{"nodes get distinct subnets", []step{
			{&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{Id: "n1"}}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{Id: "n2"}}}}, 0, 1},
			{&messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{Id: "n1", Subnet: "1.2.3.0/24"}}}}, 0, 1},
		}, func(t *testing.T, s *State) {
			if a, b := s.Node("n1").Subnet, s.Node("n2").Subnet; a != "10.88.1.0/24" || b != "10.88.2.0/24" {
				t.Fatalf("subnets %s %s", a, b)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewState()
			for i, st := range tc.steps {
				res, ch := s.Apply(uint64(i+1), st.cmd)
				if got := res.GetError().GetCode(); got != st.wantCode {
					t.Fatalf("step %d: code %v want %v (%s)", i, got, st.wantCode, res.GetError().GetMessage())
				}
				if len(ch) != st.changes {
					t.Fatalf("step %d: %d changes want %d", i, len(ch), st.changes)
				}
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	s := NewState()
	s.Apply(1, createSvc("s1", "web"))
	s.Apply(2, &messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{{Id: "t1", ServiceId: "s1", NodeId: "n1"}}}}})
	r := NewState()
	r.restore(s.Snapshot())
	if r.Index() != 2 || r.ServiceByName("web") == nil || len(r.Tasks(TaskFilter{ServiceID: "s1"})) != 1 || len(r.Tasks(TaskFilter{NodeID: "n1"})) != 1 {
		t.Fatalf("restore lost data: %v", r.Snapshot())
	}
}

// TestRemovedNodeStaysOut: a removed node id may not be written again (its
// stale registration is refused), and snapshots keep the tombstone.
func TestRemovedNodeStaysOut(t *testing.T) {
	upsert := func(id string) *messages.Command {
		return &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: &messages.Node{Id: id}}}}
	}
	s := NewState()
	s.Apply(1, upsert("n1"))
	s.Apply(2, upsert("n2"))
	if r, _ := s.Apply(3, &messages.Command{Op: &messages.Command_RemoveNode{RemoveNode: &messages.RemoveNode{NodeId: "n1"}}}); r.GetError() != nil {
		t.Fatal(r.Error)
	}
	for name, st := range map[string]*State{"live": s, "restored": func() *State { r := NewState(); r.restore(s.Snapshot()); return r }()} {
		if !st.Removed("n1") || st.Removed("n2") {
			t.Fatalf("%s: removed n1 %v, n2 %v; want true, false", name, st.Removed("n1"), st.Removed("n2"))
		}
		r, changes := st.Apply(4, upsert("n1"))
		if r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED || !strings.Contains(r.Error.Message, "clear its data dir") || len(changes) != 0 || st.Node("n1") != nil {
			t.Fatalf("%s: writing a removed node = %v, %d changes; want PERMISSION_DENIED with advice and no change", name, r.GetError(), len(changes))
		}
	}
}

func TestVIPAllocation(t *testing.T) {
	s := NewState()
	s.Apply(1, createSvc("s1", "a"))
	s.Apply(2, createSvc("s2", "b"))
	if a, b := s.Service("s1").Vip, s.Service("s2").Vip; a != "10.89.0.2" || b != "10.89.0.3" {
		t.Fatalf("vips %s %s", a, b)
	}
	s.Apply(3, &messages.Command{Op: &messages.Command_DeleteService{DeleteService: &messages.DeleteService{ServiceId: "s1"}}})
	s.Apply(4, createSvc("s3", "c"))
	if c := s.Service("s3").Vip; c != "10.89.0.2" {
		t.Fatalf("a freed VIP is reused: got %s", c)
	}
}

// TestVIPPoolExhausted: the create that finds no free VIP is refused with
// advice and changes nothing; deleting a service makes room again.
func TestVIPPoolExhausted(t *testing.T) {
	defer func(p netip.Prefix) { VIPPool = p }(VIPPool)
	VIPPool = netip.MustParsePrefix("10.89.0.0/29") // .2 to .7
	s := NewState()
	for i := 0; i < 6; i++ {
		if r, _ := s.Apply(uint64(i+1), createSvc(fmt.Sprintf("s%d", i), fmt.Sprintf("svc%d", i))); r.GetError() != nil {
			t.Fatalf("create %d: %v", i, r.Error)
		}
	}
	r, changes := s.Apply(7, createSvc("s6", "svc6"))
	if r.GetError() == nil || !strings.Contains(r.Error.Message, "VIP pool 10.89.0.0/29 is exhausted") || !strings.Contains(r.Error.Message, "delete services") {
		t.Fatalf("create with the pool full = %v, want an exhausted error with advice", r.GetError())
	}
	if len(changes) != 0 || s.Service("s6") != nil || len(s.Services()) != 6 {
		t.Fatalf("a refused create changed state: %d changes, %d services", len(changes), len(s.Services()))
	}
	s.Apply(8, &messages.Command{Op: &messages.Command_DeleteService{DeleteService: &messages.DeleteService{ServiceId: "s3"}}})
	if r, _ := s.Apply(9, createSvc("s6", "svc6")); r.GetError() != nil || s.Service("s6").Vip != "10.89.0.5" {
		t.Fatalf("create after a delete = %v, VIP %s; want the freed 10.89.0.5", r.GetError(), s.Service("s6").GetVip())
	}
}

func TestUpdateTasksIsFencedByVersion(t *testing.T) {
	s := NewState()
	s.Apply(1, &messages.Command{Op: &messages.Command_CreateTasks{CreateTasks: &messages.CreateTasks{Tasks: []*messages.Task{{Id: "t1", ServiceId: "s1", DesiredState: messages.TaskState_TASK_STATE_RUNNING}}}}})
	read := s.Task("t1") // version 1, as both writers read it
	stop := s.Task("t1")
	stop.DesiredState = messages.TaskState_TASK_STATE_SHUTDOWN
	s.Apply(2, &messages.Command{Op: &messages.Command_UpdateTasks{UpdateTasks: &messages.UpdateTasks{Tasks: []*messages.Task{stop}}}})
	read.NodeId, read.Epoch = "n1", 1
	_, ch := s.Apply(3, &messages.Command{Op: &messages.Command_UpdateTasks{UpdateTasks: &messages.UpdateTasks{Tasks: []*messages.Task{read}}}})
	if len(ch) != 0 || s.Task("t1").DesiredState != messages.TaskState_TASK_STATE_SHUTDOWN {
		t.Fatalf("a stale write undid the stop: %v", s.Task("t1"))
	}
}
