package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/messages"
)

// listWith parses args with a list's real flags and prints what the
// command would for rows (table, -q, --format) into a buffer.
func listWith(t *testing.T, row any, keys []string, args []string, print func(o *listOpts, w io.Writer) error) string {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "warren", Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*cli.Context, error) {}, Flags: listFlags(row, keys...),
		Action: func(c *cli.Context) error {
			o, err := parseListOpts(c, row, keys...)
			if err != nil {
				return err
			}
			return print(o, &out)
		}}
	if err := app.Run(append([]string{"warren"}, args...)); err != nil {
		return "Error: " + err.Error() + "\n"
	}
	return out.String()
}

func TestListOptionsGolden(t *testing.T) {
	web := &messages.Service{Id: webSvc.Id, Meta: webSvc.Meta, SpecVersion: webSvc.SpecVersion, Spec: &messages.ServiceSpec{
		Name: "web", Image: "demo:v1", Replicas: 3, Labels: map[string]string{"team": "edge", "tier": "front"},
		Ports: []*messages.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}}}
	api := &messages.Service{Id: "5b4a39281706f5e4d3c2b1a0", Spec: &messages.ServiceSpec{Name: "web-api", Image: "api:2", Replicas: 2, Labels: map[string]string{"team": "core"}}}
	services := []*messages.ServiceSummary{{Service: web, Desired: 3, Running: 3}, {Service: api, Desired: 2, Running: 1}, {Service: agentSvc, Desired: 3, Running: 3}}
	tasks := []*messages.Task{
		{Id: "b1c2d3e4f5a6b7c8d9e0f1a2", ServiceName: "web", Slot: 1, NodeId: nodeManager.Id, SpecVersion: 3, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, TimestampUnixNano: ns(5 * time.Second), Ip: "10.88.1.2"}},
		{Id: "c2d3e4f5a6b7c8d9e0f1a2b3", ServiceName: "web", Slot: 2, NodeId: nodeDrained.Id, SpecVersion: 3, DesiredState: messages.TaskState_TASK_STATE_SHUTDOWN,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_FAILED, TimestampUnixNano: ns(3 * time.Minute), Err: "exit 1"}},
		{Id: "d3e4f5a6b7c8d9e0f1a2b3c4", ServiceName: "web", Slot: 3, NodeId: nodeManager.Id, SpecVersion: 3, DesiredState: messages.TaskState_TASK_STATE_RUNNING,
			Status: &messages.TaskStatus{State: messages.TaskState_TASK_STATE_STARTING, TimestampUnixNano: ns(2 * time.Second)}},
	}
	labelled := func(n *messages.Node, kv ...string) *messages.Node {
		c := &messages.Node{Id: n.Id, Spec: &messages.NodeSpec{Role: n.Spec.GetRole(), Availability: n.Spec.GetAvailability(), Labels: map[string]string{}},
			Description: n.Description, Status: n.Status, Subnet: n.Subnet}
		for i := 0; i+1 < len(kv); i += 2 {
			c.Spec.Labels[kv[i]] = kv[i+1]
		}
		return c
	}
	nodes := []*messages.Node{labelled(nodeManager, "zone", "a"), labelled(nodeDrained, "zone", "b"), labelled(nodePaused)}
	svcList := func(o *listOpts, w io.Writer) error {
		list, rows := filterServices(o, services)
		if done, err := printRows(w, o, rows, func(r serviceRow) string { return r.Name }); done {
			return err
		}
		return renderServices(w, list)
	}
	taskList := func(o *listOpts, w io.Writer) error {
		list, rows := filterTasks(o, tasks, nodes, renderNow)
		if done, err := printRows(w, o, rows, func(r taskRow) string { return r.ID }); done {
			return err
		}
		return renderTasks(w, list, nodes, renderNow)
	}
	nodeList := func(o *listOpts, w io.Writer) error {
		list, rows := filterNodes(o, nodes)
		if done, err := printRows(w, o, rows, func(r nodeRow) string { return r.ID }); done {
			return err
		}
		return renderNodes(w, list)
	}
	cases := []struct {
		cmd   string
		args  []string
		row   any
		keys  []string
		print func(o *listOpts, w io.Writer) error
	}{
		{"service ls", nil, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"-q"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--filter", "name=web"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--filter", "name=web-"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--filter", "label=team=edge", "--filter", "label=team=core"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--filter", "label=tier", "--filter", "name=web"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--filter", "mode=global", "-q"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--format", "{{.Name}} {{.Replicas}}"}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--format", `table {{.Name}}\t{{.Image}}\t{{.UpdateOrder}}`}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--format", `{{.Name}}: {{json .Labels}}`}, serviceRow{}, serviceFilters, svcList},
		{"service ls", []string{"--filter", "node=edge-1"}, serviceRow{}, serviceFilters, svcList},
		{"service ps web", []string{"--filter", "state=running"}, taskRow{}, taskFilters, taskList},
		{"service ps web", []string{"--filter", "desired-state=running", "--filter", "node=edge-1", "-q"}, taskRow{}, taskFilters, taskList},
		{"service ps web", []string{"--format", `table {{.Name}}\t{{.Node}}\t{{.State}}\t{{.Error}}`}, taskRow{}, taskFilters, taskList},
		{"node ls", []string{"--filter", "label=zone", "--format", "{{.Hostname}} {{.Labels.zone}}"}, nodeRow{}, nodeFilters, nodeList},
		{"node ls", []string{"--filter", "state=ready", "--filter", "state=down", "--filter", "role=worker"}, nodeRow{}, nodeFilters, nodeList},
		{"node ls", []string{"--format", "{{.Nope}}"}, nodeRow{}, nodeFilters, nodeList},
	}
	var b bytes.Buffer
	for _, tc := range cases {
		fmt.Fprintf(&b, "$ %s\n%s\n", strings.TrimSpace("warren "+tc.cmd+" "+shellJoin(tc.args)), listWith(t, tc.row, tc.keys, tc.args, tc.print))
	}
	golden(t, "lists", b.Bytes())
}

func TestHeaderName(t *testing.T) {
	for in, want := range map[string]string{"Name": "NAME", "CurrentState": "CURRENT STATE", "ID": "ID", "IP": "IP", "DesiredState": "DESIRED STATE", "NodeID": "NODE ID"} {
		if got := headerName(in); got != want {
			t.Errorf("headerName(%q) = %q, want %q", in, got, want)
		}
	}
}
