package events

import (
	"maps"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
)

// want is the part of an event FromState decides; the time stamp is checked
// separately since it is "now".
type want struct {
	typ, subject, message string
	attrs                 map[string]string
}

func svc(name, image string, replicas uint64) *messages.Change_Service {
	return &messages.Change_Service{Service: &messages.Service{Id: "s-" + name, Spec: &messages.ServiceSpec{Name: name, Image: image, Replicas: replicas}}}
}

func task(id string, desired messages.TaskState, st *messages.TaskStatus) *messages.Change_Task {
	return &messages.Change_Task{Task: &messages.Task{Id: id, ServiceName: "web", NodeId: "n2", DesiredState: desired, Status: st}}
}

func node(id, host string, state messages.NodeState) *messages.Change_Node {
	return &messages.Change_Node{Node: &messages.Node{Id: id, Description: &messages.NodeDescription{Hostname: host}, Status: &messages.NodeStatus{State: state}}}
}

func TestFromState(t *testing.T) {
	const (
		create = messages.ChangeOp_CHANGE_OP_CREATE
		update = messages.ChangeOp_CHANGE_OP_UPDATE
		del    = messages.ChangeOp_CHANGE_OP_DELETE
	)
	running := messages.TaskState_TASK_STATE_RUNNING
	tests := []struct {
		name    string
		index   uint64
		changes []*messages.Change
		want    []want
	}{
		{"service created", 7, []*messages.Change{{Op: create, Object: svc("web", "nginx:1", 3)}}, []want{
			{typ: "service.created", subject: "web", attrs: map[string]string{"service": "web", "index": "7", "replicas": "3", "image": "nginx:1"}},
		}},
		{"service updated", 8, []*messages.Change{{Op: update, Object: svc("web", "nginx:2", 5)}}, []want{
			{typ: "service.updated", subject: "web", attrs: map[string]string{"service": "web", "index": "8", "replicas": "5", "image": "nginx:2"}},
		}},
		{"service deleted", 9, []*messages.Change{{Op: del, Object: svc("web", "nginx:2", 5)}}, []want{
			{typ: "service.deleted", subject: "web", attrs: map[string]string{"service": "web", "index": "9", "replicas": "5", "image": "nginx:2"}},
		}},
		// A deployment transition is its own event, after the service's;
		// a change that carries an older transition (a scale) is not one.
		{"deployment transition", 20, []*messages.Change{{Op: update, Object: &messages.Change_Service{Service: &messages.Service{
			Spec: &messages.ServiceSpec{Name: "web", Image: "nginx:2", Replicas: 4},
			Deployment: &messages.Deployment{Id: "d1", Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, State: messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK,
				FromVersion: 1, ToVersion: 2, Weight: 10, Total: 1, Index: 20, Message: "rolling back: 1 of 1 new tasks failed"}}}}}, []want{
			{typ: "service.updated", subject: "web", attrs: map[string]string{"service": "web", "index": "20", "replicas": "4", "image": "nginx:2"}},
			{typ: "deployment.rolling-back", subject: "web", message: "rolling back: 1 of 1 new tasks failed", attrs: map[string]string{
				"index": "20", "deployment": "d1", "service": "web", "strategy": "canary", "from": "1", "to": "2", "updated": "0/1", "weight": "10"}},
		}},
		{"scale during a deployment", 21, []*messages.Change{{Op: update, Object: &messages.Change_Service{Service: &messages.Service{
			Spec:       &messages.ServiceSpec{Name: "web", Image: "nginx:2", Replicas: 5},
			Deployment: &messages.Deployment{Id: "d1", State: messages.DeploymentState_DEPLOYMENT_STATE_MONITORING, Index: 20}}}}}, []want{
			{typ: "service.updated", subject: "web", attrs: map[string]string{"service": "web", "index": "21", "replicas": "5", "image": "nginx:2"}},
		}},
		// A service without a spec must not panic; it has no name to show.
		{"service without spec", 1, []*messages.Change{{Op: create, Object: &messages.Change_Service{Service: &messages.Service{Id: "s1"}}}}, []want{
			{typ: "service.created", attrs: map[string]string{"service": "", "index": "1", "replicas": "0", "image": ""}},
		}},
		{"task created", 10, []*messages.Change{{Op: create, Object: task("t1", running, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING})}}, []want{
			{typ: "task.created", subject: "t1", attrs: map[string]string{"index": "10", "service": "web", "node": "n2", "desired": "running"}},
		}},
		// A replacement says what it replaces and why, so `warren events`
		// explains a task moving off a down or drained node.
		{"task rescheduled", 10, []*messages.Change{{Op: create, Object: &messages.Change_Task{Task: &messages.Task{Id: "t2", ServiceName: "web", NodeId: "n3", DesiredState: running, Replaces: "t1", Reason: "node n2 is down"}}}}, []want{
			{typ: "task.rescheduled", subject: "t2", message: "node n2 is down", attrs: map[string]string{"index": "10", "service": "web", "node": "n3", "desired": "running", "replaces": "t1"}},
		}},
		// An update is named by the state the task reached, not by "updated".
		{"task running with message", 11, []*messages.Change{{Op: update, Object: task("t1", running, &messages.TaskStatus{State: running, Message: "started"})}}, []want{
			{typ: "task.running", subject: "t1", message: "started", attrs: map[string]string{"index": "11", "service": "web", "node": "n2", "desired": "running"}},
		}},
		// The error says more than the message, so it wins.
		{"task failed with error", 12, []*messages.Change{{Op: update, Object: task("t1", running, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, Message: "exited", Err: "exit code 2"})}}, []want{
			{typ: "task.failed", subject: "t1", message: "exit code 2", attrs: map[string]string{"index": "12", "service": "web", "node": "n2", "desired": "running"}},
		}},
		{"task update without status", 13, []*messages.Change{{Op: update, Object: task("t1", messages.TaskState_TASK_STATE_SHUTDOWN, nil)}}, []want{
			{typ: "task.new", subject: "t1", attrs: map[string]string{"index": "13", "service": "web", "node": "n2", "desired": "shutdown"}},
		}},
		{"task deleted", 14, []*messages.Change{{Op: del, Object: task("t1", messages.TaskState_TASK_STATE_SHUTDOWN, &messages.TaskStatus{State: messages.TaskState_TASK_STATE_COMPLETE, Err: "ignored on delete"})}}, []want{
			{typ: "task.deleted", subject: "t1", attrs: map[string]string{"index": "14", "service": "web", "node": "n2", "desired": "shutdown"}},
		}},
		{"node created", 15, []*messages.Change{{Op: create, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_UNKNOWN)}}, []want{
			{typ: "node.created", subject: "host-a", attrs: map[string]string{"index": "15", "id": "n1", "node": "n1"}},
		}},
		{"node ready", 16, []*messages.Change{{Op: update, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_READY)}}, []want{
			{typ: "node.ready", subject: "host-a", attrs: map[string]string{"index": "16", "id": "n1", "node": "n1"}},
		}},
		{"node down", 17, []*messages.Change{{Op: update, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_DOWN)}}, []want{
			{typ: "node.down", subject: "host-a", attrs: map[string]string{"index": "17", "id": "n1", "node": "n1"}},
		}},
		{"node deleted", 18, []*messages.Change{{Op: del, Object: node("n1", "host-a", messages.NodeState_NODE_STATE_DOWN)}}, []want{
			{typ: "node.deleted", subject: "host-a", attrs: map[string]string{"index": "18", "id": "n1", "node": "n1"}},
		}},
		// One write can change several objects; events keep the order, and
		// a change with no object is skipped rather than reported empty.
		{"several changes in one write", 19, []*messages.Change{
			{Op: create, Object: svc("db", "pg:16", 1)},
			{Op: update},
			{Op: create, Object: task("t9", running, nil)},
		}, []want{
			{typ: "service.created", subject: "db", attrs: map[string]string{"service": "db", "index": "19", "replicas": "1", "image": "pg:16"}},
			{typ: "task.created", subject: "t9", attrs: map[string]string{"index": "19", "service": "web", "node": "n2", "desired": "running"}},
		}},
		{"no changes", 20, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().UnixNano()
			got := FromState("node-x", &messages.StateChanged{Index: tt.index, Changes: tt.changes})
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %v, want %d", len(got), got, len(tt.want))
			}
			for i, ev := range got {
				w := tt.want[i]
				if ev.Type != w.typ || ev.Subject != w.subject || ev.Message != w.message {
					t.Errorf("event %d = {type %q subject %q message %q}, want {%q %q %q}", i, ev.Type, ev.Subject, ev.Message, w.typ, w.subject, w.message)
				}
				if !maps.Equal(ev.Attrs, w.attrs) {
					t.Errorf("event %d attrs = %v, want %v", i, ev.Attrs, w.attrs)
				}
				if ev.Node != "node-x" {
					t.Errorf("event %d node = %q, want node-x", i, ev.Node)
				}
				// The hub numbers events; FromState must leave that to it.
				if ev.Seq != 0 {
					t.Errorf("event %d seq = %d, want 0", i, ev.Seq)
				}
				if ev.UnixNano < before {
					t.Errorf("event %d time %d is before the call (%d)", i, ev.UnixNano, before)
				}
			}
		})
	}
}

func TestStateNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{TaskStateName(messages.TaskState_TASK_STATE_NEW), "new"},
		{TaskStateName(messages.TaskState_TASK_STATE_PENDING), "pending"},
		{TaskStateName(messages.TaskState_TASK_STATE_ASSIGNED), "assigned"},
		{TaskStateName(messages.TaskState_TASK_STATE_PREPARING), "preparing"},
		{TaskStateName(messages.TaskState_TASK_STATE_STARTING), "starting"},
		{TaskStateName(messages.TaskState_TASK_STATE_RUNNING), "running"},
		{TaskStateName(messages.TaskState_TASK_STATE_COMPLETE), "complete"},
		{TaskStateName(messages.TaskState_TASK_STATE_SHUTDOWN), "shutdown"},
		{TaskStateName(messages.TaskState_TASK_STATE_FAILED), "failed"},
		{TaskStateName(messages.TaskState_TASK_STATE_REJECTED), "rejected"},
		{TaskStateName(messages.TaskState_TASK_STATE_ORPHANED), "orphaned"},
		// A state from a newer peer has no name here; its number is shown.
		{TaskStateName(messages.TaskState(99)), "99"},
		{NodeStateName(messages.NodeState_NODE_STATE_UNKNOWN), "unknown"},
		{NodeStateName(messages.NodeState_NODE_STATE_READY), "ready"},
		{NodeStateName(messages.NodeState_NODE_STATE_DOWN), "down"},
		{NodeStateName(messages.NodeState_NODE_STATE_DISCONNECTED), "disconnected"},
		{NodeStateName(messages.NodeState(42)), "42"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("name = %q, want %q", tt.got, tt.want)
			}
		})
	}
}
