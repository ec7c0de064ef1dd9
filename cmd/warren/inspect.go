package main

// `service inspect` and `node inspect`: JSON by default (as Docker's),
// --pretty for people, --format for a Go template over the object (the
// fields are the protobuf message's Go names: {{.Spec.Image}}).

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func inspectFlags(example string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "json", Usage: "json or table (table is --pretty)"},
		&cli.BoolFlag{Name: "pretty", Usage: "print a human-readable summary instead of JSON"},
		&cli.StringFlag{Name: "format", Usage: "print with a Go template over the object, whose fields are the JSON's in Go's spelling, e.g. '" + example + "'"},
	}
}

// inspectOpts checks --pretty, --format and -o before any connection.
func inspectOpts(c *cli.Context) (pretty bool, tmpl *template.Template, err error) {
	if err := checkOutput(c); err != nil {
		return false, nil, err
	}
	pretty = c.Bool("pretty") || c.String("output") == "table"
	if c.IsSet("format") {
		if pretty || c.IsSet("output") {
			return false, nil, fmt.Errorf("--format, --pretty and -o each choose the output: give one")
		}
		text := strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(c.String("format"))
		if tmpl, err = template.New("format").Funcs(templateFuncs).Parse(text); err != nil {
			return false, nil, fmt.Errorf("invalid --format: %w", err)
		}
	}
	return pretty, tmpl, nil
}

func printInspect(c *cli.Context, m proto.Message, pretty bool, tmpl *template.Template, render func() error) error {
	switch {
	case tmpl != nil:
		if err := tmpl.Execute(os.Stdout, m); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Println()
		return nil
	case pretty:
		return render()
	}
	return output(c, m, render)
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name: "inspect", Usage: "show a service (JSON; --pretty for people)", ArgsUsage: "NAME",
		Flags: inspectFlags("{{.Spec.Image}}"),
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one service name"); err != nil {
				return err
			}
			pretty, tmpl, err := inspectOpts(c)
			if err != nil {
				return err
			}
			return withClient(func(c *cli.Context, cl *client.Client) error {
				svc, err := cl.InspectService(c.Args().First())
				if err != nil {
					return err
				}
				return printInspect(c, svc, pretty, tmpl, func() error { return renderService(os.Stdout, svc) })
			})(c)
		},
	}
}

// renderService is `service inspect --pretty`: the whole spec, one
// setting a line, then where the service stands.
func renderService(w io.Writer, v *messages.Service) error {
	tw := table(w)
	s := v.GetSpec()
	line := func(k, format string, a ...any) { fmt.Fprintf(tw, k+":\t"+format+"\n", a...) }
	line("ID", "%s", v.GetId())
	line("Name", "%s", s.GetName())
	for _, k := range sortedKeys(s.GetLabels()) {
		line("Label", "%s=%s", k, s.Labels[k])
	}
	line("Image", "%s", s.GetImage())
	line("Mode", "%s", modeName(s))
	if s.GetMode() != messages.ServiceMode_SERVICE_MODE_GLOBAL {
		line("Replicas", "%d", s.GetReplicas())
	}
	if len(s.GetCommand()) > 0 {
		line("Entrypoint", "%s", shellJoin(s.Command))
	}
	if len(s.GetArgs()) > 0 {
		line("Args", "%s", shellJoin(s.Args))
	}
	for _, k := range sortedKeys(s.GetEnv()) {
		line("Env", "%s=%s", k, s.Env[k])
	}
	if s.GetWorkdir() != "" {
		line("Workdir", "%s", s.Workdir)
	}
	if s.GetUser() != "" {
		line("User", "%s", s.User)
	}
	if s.GetHostname() != "" {
		line("Hostname", "%s", s.Hostname)
	}
	for _, p := range s.GetPorts() {
		name := ""
		if p.Name != "" {
			name = " (" + p.Name + ")"
		}
		if p.PublishedPort == 0 {
			line("Port", "%d/%s, not published%s", p.TargetPort, protoOf(p), name)
		} else {
			line("Port", "%d -> %d/%s%s", p.PublishedPort, p.TargetPort, protoOf(p), name)
		}
	}
	for _, c := range s.GetConstraints() {
		line("Constraint", "%s", c)
	}
	if r := s.GetResources(); r != nil {
		if l := r.GetLimits(); proto.Size(l) > 0 {
			line("Limits", "%s", resourcesText(l))
		}
		if l := r.GetReservations(); proto.Size(l) > 0 {
			line("Reservations", "%s", resourcesText(l))
		}
	}
	if hc := s.GetHealthCheck(); hc != nil {
		line("Health check", "%s, every %s, timeout %s, %d retries%s", healthText(hc), msOr(hc.IntervalMs, "30s"), msOr(hc.TimeoutMs, "5s"),
			retriesOr(hc.Retries), startPeriodText(hc.StartPeriodMs))
	}
	line("Restart", "%s", restartText(s.GetRestartPolicy()))
	if g := s.GetStopGracePeriodMs(); g > 0 {
		line("Stop grace period", "%s", time.Duration(g)*time.Millisecond)
	}
	u := s.GetUpdateConfig()
	order := "stop-first"
	if u.GetOrder() == messages.UpdateOrder_UPDATE_ORDER_START_FIRST {
		order = "start-first"
	}
	line("Update", "%s, %s, parallelism %d, on failure %s", strategyName(u.GetStrategy()), order, max(u.GetParallelism(), 1),
		strings.ToLower(strings.TrimPrefix(u.GetFailureAction().String(), "FAILURE_ACTION_")))
	if len(s.GetCapAdd()) > 0 {
		line("Capabilities added", "%s", strings.Join(s.CapAdd, ", "))
	}
	if len(s.GetCapDrop()) > 0 {
		line("Capabilities dropped", "%s", strings.Join(s.CapDrop, ", "))
	}
	if s.GetPidsLimit() != 0 {
		line("Pids limit", "%d", s.PidsLimit)
	}
	if s.GetSeccomp() != "" {
		line("Seccomp", "%s", s.Seccomp)
	}
	line("Version", "%d (spec %d)", v.GetMeta().GetVersion(), v.GetSpecVersion())
	if p := v.GetPreviousSpec(); p != nil {
		line("Previous spec", "image %s", p.GetImage())
	}
	if d := v.GetDeployment(); d != nil {
		text := fmt.Sprintf("%s v%d → v%d, %s", strategyName(d.Strategy), d.FromVersion, d.ToVersion, deploymentStateName(d.State))
		if d.Message != "" {
			text += ": " + d.Message
		}
		line("Deployment", "%s", text)
	}
	return tw.Flush()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func resourcesText(r *messages.Resources) string {
	var parts []string
	if r.NanoCpus != 0 {
		parts = append(parts, fmt.Sprintf("%g CPUs", float64(r.NanoCpus)/1e9))
	}
	if r.MemoryBytes != 0 {
		parts = append(parts, fmt.Sprintf("%d MiB", r.MemoryBytes>>20))
	}
	return strings.Join(parts, ", ")
}

func msOr(ms int64, def string) string {
	if ms <= 0 {
		return def
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func retriesOr(n uint32) uint32 {
	if n == 0 {
		return 3
	}
	return n
}

func startPeriodText(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return ", start period " + (time.Duration(ms) * time.Millisecond).String()
}

func restartText(rp *messages.RestartPolicy) string {
	text := "any exit"
	switch rp.GetCondition() {
	case messages.RestartCondition_RESTART_CONDITION_ON_FAILURE:
		text = "on failure"
	case messages.RestartCondition_RESTART_CONDITION_NONE:
		return "never"
	}
	if rp.GetMaxAttempts() > 0 {
		text += fmt.Sprintf(", at most %d times", rp.MaxAttempts)
	}
	if rp.GetDelayMs() > 0 {
		text += ", first after " + (time.Duration(rp.DelayMs) * time.Millisecond).String()
	}
	if rp.GetWindowMs() > 0 {
		text += ", counted over " + (time.Duration(rp.WindowMs) * time.Millisecond).String()
	}
	return text
}
