package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
)

// output prints m as JSON for -o json, else calls table.
func output(c *cli.Context, m proto.Message, table func() error) error {
	switch c.String("output") {
	case "json":
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(os.Stdout, string(b))
		return err
	case "table", "":
		return table()
	default:
		return errOutput
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 3, ' ', 0) }

func ago(now time.Time, unixNano int64) string {
	if unixNano == 0 {
		return "-"
	}
	d := now.Sub(time.Unix(0, unixNano))
	if d < 0 {
		d = 0 // another node's clock runs slightly ahead
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func modeName(s *messages.ServiceSpec) string {
	if s.GetMode() == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		return "global"
	}
	return "replicated"
}

func renderClusterInfo(w io.Writer, r *messages.ClusterInfoReply) error {
	tw := table(w)
	fmt.Fprintf(tw, "Cluster:\t%s\n", r.Cluster.GetClusterId())
	fmt.Fprintf(tw, "CA fingerprint:\t%s\n", r.Cluster.GetCaFingerprint())
	fmt.Fprintf(tw, "Leader:\t%s (%s)\n", short(r.LeaderId), r.LeaderAddr)
	fmt.Fprintf(tw, "Managers:\t%s (%d raft voters)\n", strings.Join(r.ManagerAddrs, ", "), len(r.RaftVoters))
	fmt.Fprintf(tw, "Nodes:\t%d\n", r.Nodes)
	fmt.Fprintf(tw, "Services:\t%d\n", r.Services)
	fmt.Fprintf(tw, "Tasks running:\t%d\n", r.TasksRunning)
	fmt.Fprintf(tw, "Raft index:\t%d\n", r.Index)
	fmt.Fprintf(tw, "Answered by:\t%s (warren %s)\n", short(r.NodeId), r.Version)
	return tw.Flush()
}

func renderServices(w io.Writer, list []*messages.ServiceSummary) error {
	tw := table(w)
	fmt.Fprintln(tw, "ID\tNAME\tMODE\tREPLICAS\tIMAGE\tPORTS")
	for _, s := range list {
		r := newServiceRow(s)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", short(r.ID), r.Name, r.Mode, r.Replicas, r.Image, r.Ports)
	}
	return tw.Flush()
}

func nodeNames(nodes []*messages.Node) map[string]string {
	m := map[string]string{}
	for _, n := range nodes {
		m[n.Id] = n.Description.GetHostname()
	}
	return m
}

func renderTasks(w io.Writer, tasks []*messages.Task, nodes []*messages.Node, now time.Time) error {
	names := nodeNames(nodes)
	tw := table(w)
	fmt.Fprintln(tw, "ID\tNAME\tNODE\tVERSION\tSIDE\tDESIRED\tCURRENT\tIP\tRESTARTS\tERROR")
	for _, t := range tasks {
		r := newTaskRow(t, names, now)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", short(r.ID), r.Name, r.Node, r.Version, r.Side,
			r.DesiredState, r.CurrentState, r.IP, r.Restarts, r.Error)
	}
	return tw.Flush()
}

func roleName(r messages.NodeRole) string {
	if r == messages.NodeRole_NODE_ROLE_MANAGER {
		return "manager"
	}
	return "worker"
}

func availabilityName(a messages.NodeAvailability) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "NODE_AVAILABILITY_"))
}

func renderNodes(w io.Writer, nodes []*messages.Node) error {
	tw := table(w)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tSTATUS\tAVAILABILITY\tROLE\tADDRESS\tSUBNET")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(n.Id), n.Description.GetHostname(), events.NodeStateName(n.GetStatus().GetState()),
			availabilityName(n.Spec.GetAvailability()), roleName(n.Spec.GetRole()), n.Description.GetAddr(), n.Subnet)
	}
	return tw.Flush()
}

func renderNode(w io.Writer, r *messages.NodeReply) error {
	n := r.Node
	tw := table(w)
	fmt.Fprintf(tw, "ID:\t%s\n", n.Id)
	fmt.Fprintf(tw, "Hostname:\t%s\n", n.Description.GetHostname())
	fmt.Fprintf(tw, "Status:\t%s (%s)\n", events.NodeStateName(n.GetStatus().GetState()), n.GetStatus().GetMessage())
	fmt.Fprintf(tw, "Role:\t%s\n", roleName(n.Spec.GetRole()))
	fmt.Fprintf(tw, "Availability:\t%s\n", availabilityName(n.Spec.GetAvailability()))
	fmt.Fprintf(tw, "Address:\t%s\n", n.Description.GetAddr())
	fmt.Fprintf(tw, "Platform:\t%s/%s\n", n.Description.GetOs(), n.Description.GetArch())
	fmt.Fprintf(tw, "Resources:\t%d CPUs, %d MiB\n", n.Description.GetResources().GetNanoCpus()/1e9, n.Description.GetResources().GetMemoryBytes()>>20)
	fmt.Fprintf(tw, "Runtime:\t%s\n", n.Description.GetRuntime())
	fmt.Fprintf(tw, "Task subnet:\t%s\n", n.Subnet)
	if k := n.Description.GetWgPublicKey(); k != "" {
		fmt.Fprintf(tw, "Mesh:\tWireGuard, %s, endpoint %s, key %s\n", n.Description.GetMeshKind(), n.Description.GetWgEndpoint(), k)
	}
	fmt.Fprintf(tw, "Tasks running:\t%d\n", r.TasksRunning)
	return tw.Flush()
}

func renderEvent(w io.Writer, ev *messages.Event) error {
	ts := time.Unix(0, ev.UnixNano).UTC().Format("2006-01-02T15:04:05.000Z")
	subject := ev.Subject
	if subject == "" {
		subject = ev.Actor
	}
	keys := make([]string, 0, len(ev.Attrs))
	for k := range ev.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var attrs []string
	for _, k := range keys {
		attrs = append(attrs, k+"="+ev.Attrs[k])
	}
	line := fmt.Sprintf("%s %6d %-18s %s", ts, ev.Seq, ev.Type, subject)
	if len(attrs) > 0 {
		line += " (" + strings.Join(attrs, ", ") + ")"
	}
	if ev.Message != "" {
		line += ": " + ev.Message
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
