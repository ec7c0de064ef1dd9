package main

// The rows of the lists: what the tables print, what --filter tests and
// what --format templates see (the exported fields).

import (
	"fmt"
	"strings"
	"time"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
)

// serviceRow is a line of `service ls`.
type serviceRow struct {
	ID, Name, Mode    string
	Replicas          string // running/desired, e.g. 3/3
	Running, Desired  uint64
	Image, Ports      string
	Labels            map[string]string
	UpdateOrder       string
	DeploymentState   string // "" when none ever ran
	DeploymentVersion string // e.g. v2 → v3
}

var serviceFilters = []string{"id", "name", "label", "mode"}

func newServiceRow(s *messages.ServiceSummary) serviceRow {
	v := s.GetService()
	r := serviceRow{
		ID: v.GetId(), Name: v.GetSpec().GetName(), Mode: modeName(v.GetSpec()),
		Replicas: fmt.Sprintf("%d/%d", s.GetRunning(), s.GetDesired()), Running: s.GetRunning(), Desired: s.GetDesired(),
		Image: v.GetSpec().GetImage(), Ports: portsColumn(v.GetSpec()), Labels: v.GetSpec().GetLabels(),
		UpdateOrder: "stop-first",
	}
	if v.GetSpec().GetUpdateConfig().GetOrder() == messages.UpdateOrder_UPDATE_ORDER_START_FIRST {
		r.UpdateOrder = "start-first"
	}
	if d := v.GetDeployment(); d != nil {
		r.DeploymentState = deploymentStateName(d.State)
		r.DeploymentVersion = fmt.Sprintf("v%d → v%d", d.FromVersion, d.ToVersion)
	}
	return r
}

func (o *listOpts) keepService(r serviceRow) bool {
	return o.match("id", prefix(r.ID)) && o.match("name", prefix(r.Name)) &&
		o.match("label", labelMatch(r.Labels)) && o.match("mode", equalFold(r.Mode))
}

func filterServices(o *listOpts, list []*messages.ServiceSummary) ([]*messages.ServiceSummary, []serviceRow) {
	var keep []*messages.ServiceSummary
	var rows []serviceRow
	for _, s := range list {
		if r := newServiceRow(s); o.keepService(r) {
			keep, rows = append(keep, s), append(rows, r)
		}
	}
	return keep, rows
}

func portsColumn(s *messages.ServiceSpec) string {
	var ports []string
	for _, p := range s.GetPorts() {
		if p.PublishedPort == 0 {
			ports = append(ports, fmt.Sprintf("%d/%s", p.TargetPort, p.Protocol))
		} else {
			ports = append(ports, fmt.Sprintf("*:%d->%d/%s", p.PublishedPort, p.TargetPort, p.Protocol))
		}
	}
	return strings.Join(ports, ",")
}

// taskRow is a line of `service ps` and `node ps`.
type taskRow struct {
	ID, Name, Service string
	Slot              uint64
	Node, NodeID      string
	Version, Side     string
	DesiredState      string
	State             string // the current state alone, e.g. running
	CurrentState      string // with health and age, e.g. running (healthy) 5s ago
	IP                string
	Restarts          uint32
	Error             string
	Labels            map[string]string // the service's labels, as the task runs them
}

var taskFilters = []string{"id", "name", "service", "node", "state", "desired-state", "label"}

func newTaskRow(t *messages.Task, names map[string]string, now time.Time) taskRow {
	st := t.GetStatus()
	r := taskRow{ID: t.Id, Service: t.ServiceName, Slot: t.Slot, NodeID: t.NodeId, Side: t.Side, Labels: t.GetSpec().GetLabels(),
		DesiredState: events.TaskStateName(t.DesiredState), State: events.TaskStateName(st.GetState()), IP: st.GetIp(),
		Restarts: st.GetRestartCount(), Error: st.GetErr(), Version: "-", Node: names[t.NodeId]}
	r.Name = fmt.Sprintf("%s.%d", t.ServiceName, t.Slot)
	if t.Slot == 0 {
		r.Name = t.ServiceName + "." + short(t.NodeId)
	}
	if r.Node == "" {
		r.Node = "-"
	}
	if r.IP == "" {
		r.IP = "-"
	}
	if r.Error == "" && st.GetState() == messages.TaskState_TASK_STATE_PENDING {
		r.Error = st.GetMessage()
	}
	state := r.State
	if h := st.GetHealth(); h != messages.HealthState_HEALTH_STATE_NONE && st.GetState() == messages.TaskState_TASK_STATE_RUNNING {
		state += " (" + strings.ToLower(strings.TrimPrefix(h.String(), "HEALTH_STATE_")) + ")"
	}
	r.CurrentState = state + " " + ago(now, st.GetTimestampUnixNano())
	if t.SpecVersion != 0 {
		r.Version = fmt.Sprintf("v%d", t.SpecVersion)
	}
	if r.Side == "" {
		r.Side = "-"
	}
	return r
}

func (o *listOpts) keepTask(r taskRow) bool {
	return o.match("id", prefix(r.ID)) && o.match("name", prefix(r.Name)) && o.match("service", equalFold(r.Service)) &&
		o.match("node", func(v string) bool { return v == r.Node || (v != "" && strings.HasPrefix(r.NodeID, v)) }) &&
		o.match("state", equalFold(r.State)) && o.match("desired-state", equalFold(r.DesiredState)) &&
		o.match("label", labelMatch(r.Labels))
}

func filterTasks(o *listOpts, tasks []*messages.Task, nodes []*messages.Node, now time.Time) ([]*messages.Task, []taskRow) {
	names := nodeNames(nodes)
	var keep []*messages.Task
	var rows []taskRow
	for _, t := range tasks {
		if r := newTaskRow(t, names, now); o.keepTask(r) {
			keep, rows = append(keep, t), append(rows, r)
		}
	}
	return keep, rows
}

// nodeRow is a line of `node ls`.
type nodeRow struct {
	ID, Hostname, Status, Availability, Role string
	Address, Subnet, Version                 string
	Labels                                   map[string]string
}

var nodeFilters = []string{"id", "name", "label", "role", "state", "availability"}

func newNodeRow(n *messages.Node) nodeRow {
	return nodeRow{ID: n.Id, Hostname: n.GetDescription().GetHostname(), Status: events.NodeStateName(n.GetStatus().GetState()),
		Availability: availabilityName(n.GetSpec().GetAvailability()), Role: roleName(n.GetSpec().GetRole()),
		Address: n.GetDescription().GetAddr(), Subnet: n.Subnet, Version: n.GetDescription().GetVersion(), Labels: n.GetSpec().GetLabels()}
}

func filterNodes(o *listOpts, nodes []*messages.Node) ([]*messages.Node, []nodeRow) {
	var keep []*messages.Node
	var rows []nodeRow
	for _, n := range nodes {
		r := newNodeRow(n)
		if o.match("id", prefix(r.ID)) && o.match("name", prefix(r.Hostname)) && o.match("label", labelMatch(r.Labels)) &&
			o.match("role", equalFold(r.Role)) && o.match("state", equalFold(r.Status)) && o.match("availability", equalFold(r.Availability)) {
			keep, rows = append(keep, n), append(rows, r)
		}
	}
	return keep, rows
}

// imageRow is a line of `image ls`.
type imageRow struct {
	Ref string
}

var imageFilters = []string{"name"}

func filterImages(o *listOpts, refs []string) ([]string, []imageRow) {
	var keep []string
	var rows []imageRow
	for _, ref := range refs {
		if o.match("name", func(v string) bool { return strings.Contains(ref, v) }) {
			keep, rows = append(keep, ref), append(rows, imageRow{Ref: ref})
		}
	}
	return keep, rows
}
