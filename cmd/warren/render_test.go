package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

var update = flag.Bool("update", false, "rewrite golden files")

// renderNow is the fixed clock of the golden files, so "3m ago" stays put.
var renderNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func ns(d time.Duration) int64 { return renderNow.Add(-d).UnixNano() }

// golden compares got with testdata/<name>.golden, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run `go test ./cmd/warren -run %s -update` to create it", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended)\n--- got:\n%s--- want:\n%s", path, got, want)
	}
}

// Fixtures shared by the renderers: two edge nodes and a manager, a
// replicated web service and a global agent.
var (
	nodeManager = &messages.Node{
		Id:   "7c1e4b2a9f3d5e6c8a0b1d2f",
		Meta: &messages.Meta{Version: 12},
		Spec: &messages.NodeSpec{Role: messages.NodeRole_NODE_ROLE_MANAGER},
		Description: &messages.NodeDescription{
			Hostname: "edge-1", Addr: "192.168.1.10:4242", Os: "linux", Arch: "arm64",
			Resources: &messages.Resources{NanoCpus: 4e9, MemoryBytes: 8 << 30},
			Runtime:   "containerd 1.7.20 (embedded)", Version: "0.1.0",
		},
		Status: &messages.NodeStatus{State: messages.NodeState_NODE_STATE_READY, Message: "registered"},
		Subnet: "10.88.1.0/24",
	}
	nodeDrained = &messages.Node{
		Id:          "0a9b8c7d6e5f4a3b2c1d0e9f",
		Spec:        &messages.NodeSpec{Role: messages.NodeRole_NODE_ROLE_WORKER, Availability: messages.NodeAvailability_NODE_AVAILABILITY_DRAIN},
		Description: &messages.NodeDescription{Hostname: "edge-2", Addr: "192.168.1.11:4242"},
		Status:      &messages.NodeStatus{State: messages.NodeState_NODE_STATE_DOWN, Message: "no heartbeat for 15s"},
		Subnet:      "10.88.2.0/24",
	}
	nodePaused = &messages.Node{
		Id:          "f1e2d3c4b5a6978877665544",
		Spec:        &messages.NodeSpec{Availability: messages.NodeAvailability_NODE_AVAILABILITY_PAUSE},
		Description: &messages.NodeDescription{Hostname: "edge-3-with-a-long-name", Addr: "[fd00::3]:4242"},
		Status:      &messages.NodeStatus{State: messages.NodeState_NODE_STATE_DISCONNECTED},
		Subnet:      "10.88.3.0/24",
	}
	allNodes = []*messages.Node{nodeManager, nodeDrained, nodePaused}

	webSvc = &messages.Service{
		Id:   "3f2a9c1d8e7b6a5f4c3d2e1f",
		Meta: &messages.Meta{Version: 42},
		Spec: &messages.ServiceSpec{
			Name: "web", Image: "demo:v1", Replicas: 3,
			Env: map[string]string{"LOG_LEVEL": "debug", "A": "1", "EMPTY": ""},
			Ports: []*messages.PortConfig{
				{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080},
				{Protocol: "udp", TargetPort: 53, PublishedPort: 5353},
			},
		},
		SpecVersion: 3,
	}
	agentSvc = &messages.Service{
		Id:          "aa11bb22cc33dd44ee55ff66",
		Meta:        &messages.Meta{Version: 7},
		Spec:        &messages.ServiceSpec{Name: "agent", Image: "registry.local:5000/team/agent:1.2", Mode: messages.ServiceMode_SERVICE_MODE_GLOBAL},
		SpecVersion: 1,
	}
)

func TestRenderGolden(t *testing.T) {
	scaledToZero := &messages.Service{Id: "short", Spec: &messages.ServiceSpec{Name: "batch", Image: "batch:2024.1"}}
	tasks := []*messages.Task{
		{Id: "b1c2d3e4f5a6b7c8d9e0f1a2", ServiceName: "web", Slot: 1, NodeId: nodeManager.Id, SpecVersion: 3, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, TimestampUnixNano: ns(5 * time.Second), Ip: "10.88.1.2"}},
		{Id: "c2d3e4f5a6b7c8d9e0f1a2b3", ServiceName: "web", Slot: 2, NodeId: nodeDrained.Id, SpecVersion: 4, Side: "canary", DesiredState: messages.TaskState_TASK_STATE_RUNNING,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_STARTING, TimestampUnixNano: ns(3*time.Minute + 59*time.Second), Ip: "10.88.2.3", RestartCount: 2}},
		// Pending: the scheduler's refusal is shown where an error would be.
		{Id: "d3e4f5a6b7c8d9e0f1a2b3c4", ServiceName: "web", Slot: 3, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_PENDING, TimestampUnixNano: ns(2 * time.Hour),
				Message: "no suitable node (node not ready on 1 node; insufficient memory on 2 nodes)"}},
		// History: failed with an error on a node that no longer exists.
		{Id: "e4f5a6b7c8d9e0f1a2b3c4d5", ServiceName: "web", Slot: 3, NodeId: "gone0000gone0000gone0000", SpecVersion: 2, Side: "green", DesiredState: messages.TaskState_TASK_STATE_SHUTDOWN,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, TimestampUnixNano: ns(73 * time.Hour),
				Err: "container exited with code 137 (out of memory)", RestartCount: 5, ExitCode: 137}},
		// A non-pending message is not an error and is not shown.
		{Id: "f5a6b7c8d9e0f1a2b3c4d5e6", ServiceName: "web", Slot: 4, NodeId: nodeManager.Id, DesiredState: messages.TaskState_TASK_STATE_SHUTDOWN,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_SHUTDOWN, TimestampUnixNano: ns(47 * time.Hour), Message: "stopped by scale down"}},
		// Global: named after its node; never-updated status has no age.
		{Id: "a6b7c8d9e0f1a2b3c4d5e6f7", ServiceName: "agent", NodeId: nodeManager.Id, SpecVersion: 1, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_ASSIGNED}},
		{Id: "short", ServiceName: "agent", NodeId: nodePaused.Id, DesiredState: messages.TaskState_TASK_STATE_RUNNING},
	}
	events := []*messages.Event{
		{Seq: 1, UnixNano: renderNow.UnixNano() + 123456789, Type: "actor.started", Actor: "manager/leader/scheduler", Node: "edge-1"},
		{Seq: 2, UnixNano: renderNow.Add(time.Second).UnixNano(), Type: "service.created", Actor: "manager/leader/service-web", Subject: "web",
			Attrs: map[string]string{"replicas": "3", "image": "demo:v1"}},
		{Seq: 17, UnixNano: renderNow.Add(2 * time.Second).UnixNano(), Type: "task.failed", Subject: "web.2",
			Attrs: map[string]string{"node": "edge-2", "exit": "137"}, Message: "container exited"},
		{Seq: 1234567, UnixNano: renderNow.Add(time.Hour).UnixNano(), Type: "actor.restarting", Actor: "agent/task-b1c2d3e4", Message: "panic: debug crash"},
	}
	cases := []struct {
		name   string
		render func(w io.Writer) error
	}{
		{"services", func(w io.Writer) error {
			return renderServices(w, []*messages.ServiceSummary{
				{Service: webSvc, Desired: 3, Running: 2},
				{Service: agentSvc, Desired: 3, Running: 3},
				{Service: scaledToZero},
			})
		}},
		{"services_empty", func(w io.Writer) error { return renderServices(w, nil) }},
		{"service_replicated", func(w io.Writer) error { return renderService(w, webSvc) }},
		{"service_global", func(w io.Writer) error { return renderService(w, agentSvc) }},
		{"service_deploying", func(w io.Writer) error {
			svc := proto.Clone(webSvc).(*messages.Service)
			svc.Spec.Image, svc.SpecVersion = "demo:v2", 4
			svc.PreviousSpec = proto.Clone(webSvc.Spec).(*messages.ServiceSpec)
			svc.Deployment = &messages.Deployment{Strategy: messages.DeployStrategy_DEPLOY_STRATEGY_CANARY, State: messages.DeploymentState_DEPLOYMENT_STATE_PAUSED,
				FromVersion: 3, ToVersion: 4, Message: "paused by `warren service pause`"}
			return renderService(w, svc)
		}},
		{"tasks", func(w io.Writer) error { return renderTasks(w, tasks, allNodes, renderNow) }},
		{"tasks_empty", func(w io.Writer) error { return renderTasks(w, nil, nil, renderNow) }},
		{"nodes", func(w io.Writer) error { return renderNodes(w, allNodes) }},
		{"node", func(w io.Writer) error { return renderNode(w, &messages.NodeReply{Node: nodeManager, TasksRunning: 7}) }},
		{"node_minimal", func(w io.Writer) error { return renderNode(w, &messages.NodeReply{Node: nodePaused}) }},
		{"cluster_info", func(w io.Writer) error {
			return renderClusterInfo(w, &messages.ClusterInfoReply{
				Cluster:  &messages.ClusterInfo{ClusterId: "c0ffee00c0ffee00c0ffee00", Name: "edge", CaFingerprint: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
				LeaderId: nodeManager.Id, LeaderAddr: "192.168.1.10:4242",
				ManagerAddrs: []string{"192.168.1.10:4242", "192.168.1.12:4242"},
				Nodes:        3, Services: 2, TasksRunning: 5, Index: 1042, Version: "0.1.0", NodeId: nodeManager.Id,
			})
		}},
		{"version", func(w io.Writer) error {
			old := proto.Clone(nodeDrained).(*messages.Node)
			old.Description.Version = "0.0.9"
			return renderVersion(w, "0.1.0", []*messages.Node{nodeManager, old, nodePaused}, true)
		}},
		{"version_no_cluster", func(w io.Writer) error { return renderVersion(w, "0.1.0", nil, false) }},
		{"version_json", func(w io.Writer) error { return renderVersionJSON(w, "0.1.0", []*messages.Node{nodeManager}) }},
		{"events", func(w io.Writer) error {
			for _, ev := range events {
				if err := renderEvent(w, ev); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.render(&buf); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, buf.Bytes())
		})
	}
}

// A port that is not published (published 0, from `--publish 80`) must not
// be listed as if it were published on port 0.
func TestRenderServicesUnpublishedPort(t *testing.T) {
	svc := &messages.Service{Id: "x", Spec: &messages.ServiceSpec{Name: "web", Image: "demo:v1",
		Ports: []*messages.PortConfig{{Protocol: "tcp", TargetPort: 80}}}}
	var buf bytes.Buffer
	if err := renderServices(&buf, []*messages.ServiceSummary{{Service: svc}}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "*:0->") {
		t.Errorf("unpublished port shown as published on port 0:\n%s", buf.String())
	}
}

func TestAgo(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s ago"},
		{59 * time.Second, "59s ago"},
		{time.Minute, "1m ago"},
		{59*time.Minute + 59*time.Second, "59m ago"},
		{time.Hour, "1h ago"},
		{47*time.Hour + 59*time.Minute, "47h ago"},
		{48 * time.Hour, "2d ago"},
		{400 * 24 * time.Hour, "400d ago"},
		// Task timestamps come from other machines' clocks.
		{-3 * time.Second, "0s ago"},
	}
	for _, tc := range cases {
		t.Run(tc.d.String(), func(t *testing.T) {
			if got := ago(renderNow, ns(tc.d)); got != tc.want {
				t.Errorf("ago(now-%v) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
	if got := ago(renderNow, 0); got != "-" {
		t.Errorf("ago of an unset timestamp = %q, want -", got)
	}
}

// runCreate runs `warren service create ARGS...` through the real app and
// argument handling, with the action replaced by one that only builds the
// spec, so no cluster is needed.
func runCreate(t *testing.T, args []string) (*messages.ServiceSpec, error) {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	create := find(find(app.Commands, "service").Subcommands, "create")
	if create == nil {
		t.Fatal("no `service create` command")
	}
	var spec *messages.ServiceSpec
	create.Action = func(c *cli.Context) error {
		s, err := specFromFlags(c)
		spec = s
		return err
	}
	err := app.Run(interspersed(app, append([]string{"warren", "service", "create"}, args...)))
	return spec, err
}

func TestSpecFromFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    *messages.ServiceSpec
		wantErr string
	}{
		{
			name: "defaults",
			args: []string{"web", "--image", "demo:v1"},
			want: &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1, RestartPolicy: &messages.RestartPolicy{}},
		},
		{
			name: "every flag, interspersed with the positionals",
			args: []string{
				"web", "--image", "demo:v1", "--replicas", "3", "-e", "A=b", "-e", "C=d=e", "--label", "team=edge",
				"--entrypoint", "/bin/app serve", "--workdir", "/srv", "--user", "1000:1000",
				"--limit-memory", "64M", "--limit-cpu", "0.5", "--reserve-memory", "32M", "--reserve-cpu", "0.25",
				"--restart-condition", "on-failure", "--restart-max-attempts", "5", "--restart-delay", "2s",
				"--restart-max-delay", "1m", "--restart-window", "10m", "--constraint", "node.labels.zone==a",
				"--constraint", "node.role!=manager", "--publish", "8080:80", "--publish", "5353:53/udp",
				"--publish", "metrics=9100",
				"--stop-grace-period", "30s", "--hostname", "web-host", "--", "--port", "80",
			},
			want: &messages.ServiceSpec{
				Name: "web", Image: "demo:v1", Replicas: 3,
				Command: []string{"/bin/app", "serve"}, Args: []string{"--port", "80"},
				Env:     map[string]string{"A": "b", "C": "d=e"},
				Labels:  map[string]string{"team": "edge"},
				Workdir: "/srv", User: "1000:1000", Hostname: "web-host",
				Resources: &messages.ResourceRequirements{
					Limits:       &messages.Resources{MemoryBytes: 64 << 20, NanoCpus: 5e8},
					Reservations: &messages.Resources{MemoryBytes: 32 << 20, NanoCpus: 25e7},
				},
				RestartPolicy: &messages.RestartPolicy{
					Condition: messages.RestartCondition_RESTART_CONDITION_ON_FAILURE, MaxAttempts: 5,
					DelayMs: 2000, MaxDelayMs: 60000, WindowMs: 600000,
				},
				Constraints: []string{"node.labels.zone==a", "node.role!=manager"},
				Ports: []*messages.PortConfig{
					{Protocol: "tcp", PublishedPort: 8080, TargetPort: 80},
					{Protocol: "udp", PublishedPort: 5353, TargetPort: 53},
					{Name: "metrics", Protocol: "tcp", TargetPort: 9100},
				},
				StopGracePeriodMs: 30000,
			},
		},
		{
			name: "global mode drops the default replica count",
			args: []string{"agent", "--mode", "global", "--image", "agent:v1", "--restart-condition", "none"},
			want: &messages.ServiceSpec{Name: "agent", Image: "agent:v1", Mode: messages.ServiceMode_SERVICE_MODE_GLOBAL,
				RestartPolicy: &messages.RestartPolicy{Condition: messages.RestartCondition_RESTART_CONDITION_NONE}},
		},
		{
			name: "an env value with a comma stays one variable",
			args: []string{"web", "--image", "demo:v1", "--env", "HOSTS=a,b"},
			want: &messages.ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1, RestartPolicy: &messages.RestartPolicy{},
				Env: map[string]string{"HOSTS": "a,b"}},
		},
		{name: "no name", args: []string{"--image", "demo:v1"}, wantErr: "no service name given: `warren service create --name NAME demo:v1` or `warren service create NAME --image demo:v1`"},
		{name: "no image", args: []string{"web"}, wantErr: `no --name or --image given, so "web" could be either`},
		{name: "docker order without image", args: []string{"--name", "web"}, wantErr: "no image given: `warren service create --name web IMAGE [CMD...]`"},
		{name: "bad image", args: []string{"web", "--image", "Demo:V1"}, wantErr: "invalid image reference"},
		{name: "bad name", args: []string{"Web", "--image", "demo:v1"}, wantErr: "invalid service name"},
		{name: "unknown mode", args: []string{"web", "--image", "demo:v1", "--mode", "daemonset"}, wantErr: `invalid --mode "daemonset": use replicated or global`},
		{name: "global with replicas", args: []string{"web", "--image", "demo:v1", "--mode", "global", "--replicas", "2"}, wantErr: "a global service runs one task per node"},
		{name: "env without =", args: []string{"web", "--image", "demo:v1", "--env", "NOVALUE"}, wantErr: `invalid --env "NOVALUE": expected KEY=VALUE`},
		{name: "env with empty key", args: []string{"web", "--image", "demo:v1", "-e", "=x"}, wantErr: `invalid --env "=x": expected KEY=VALUE`},
		{name: "env with a bad key", args: []string{"web", "--image", "demo:v1", "-e", "1X=y"}, wantErr: `invalid environment variable name "1X"`},
		{name: "label without =", args: []string{"web", "--image", "demo:v1", "--label", "team"}, wantErr: `invalid --label "team": expected KEY=VALUE`},
		{name: "bad restart condition", args: []string{"web", "--image", "demo:v1", "--restart-condition", "sometimes"}, wantErr: `invalid --restart-condition "sometimes": use any, on-failure or none`},
		{name: "negative replicas", args: []string{"web", "--image", "demo:v1", "--replicas", "-1"}, wantErr: "invalid replica count -1: it cannot be negative"},
		{name: "absurd replicas", args: []string{"web", "--image", "demo:v1", "--replicas", "1000000"}, wantErr: "more than the limit of 10000"},
		{name: "replicas not a number", args: []string{"web", "--image", "demo:v1", "--replicas", "three"}, wantErr: "give a whole number from 0 to 10000"},
		{name: "bad memory size", args: []string{"web", "--image", "demo:v1", "--limit-memory", "64Q"}, wantErr: `invalid size "64Q"`},
		{name: "memory limit too small", args: []string{"web", "--image", "demo:v1", "--limit-memory", "1k"}, wantErr: "below the 6 MiB runc needs"},
		{name: "bad publish", args: []string{"web", "--image", "demo:v1", "-p", "8080:http"}, wantErr: "invalid --publish"},
		{name: "bad port name", args: []string{"web", "--image", "demo:v1", "-p", "Web_UI=8080:80"}, wantErr: `invalid port name "Web_UI"`},
		{name: "bad protocol", args: []string{"web", "--image", "demo:v1", "-p", "8080:80/sctp"}, wantErr: `invalid protocol "sctp": use tcp or udp`},
		{name: "same port twice", args: []string{"web", "--image", "demo:v1", "-p", "8080:80", "-p", "8080:81"}, wantErr: "port 8080 is published twice"},
		{name: "bad constraint", args: []string{"web", "--image", "demo:v1", "--constraint", "zone=a"}, wantErr: "invalid constraint"},
		{name: "bad duration", args: []string{"web", "--image", "demo:v1", "--restart-delay", "2"}, wantErr: "restart-delay"},
		{name: "unknown flag", args: []string{"web", "--image", "demo:v1", "--bogus"}, wantErr: "unknown flag -bogus: see `warren service create --help`"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runCreate(t, tc.args)
			checkSpec(t, got, err, tc.want, tc.wantErr)
		})
	}
}

// checkSpec checks a spec built from flags against the wanted one, or the
// error against the wanted substring ("" means no error).
func checkSpec(t *testing.T, got *messages.ServiceSpec, err error, want *messages.ServiceSpec, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want it to contain %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("spec\n got  %s\n want %s", protojson.Format(got), protojson.Format(want))
	}
}
