package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func serviceCommand() *cli.Command {
	return &cli.Command{
		Name:  "service",
		Usage: "create, update, scale, inspect and delete services; steer their deployments",
		Subcommands: withUsage(append([]*cli.Command{
			{
				Name:      "create",
				Usage:     "create a service",
				ArgsUsage: "NAME [ARG...]",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "image", Usage: "image to run, e.g. demo:v1", Required: true},
					&cli.StringFlag{Name: "replicas", Value: "1", Usage: "number of tasks (replicated mode)"},
					&cli.StringFlag{Name: "mode", Value: "replicated", Usage: "replicated or global (one task per node)"},
					&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable KEY=VALUE (repeatable)"},
					&cli.StringSliceFlag{Name: "label", Usage: "service label KEY=VALUE (repeatable)"},
					&cli.StringFlag{Name: "entrypoint", Usage: "override the image entrypoint (space-separated)"},
					&cli.StringFlag{Name: "workdir", Usage: "working directory in the container"},
					&cli.StringFlag{Name: "user", Usage: "user[:group] to run as"},
					&cli.StringFlag{Name: "limit-memory", Usage: "memory limit, e.g. 64M or 1G"},
					&cli.Float64Flag{Name: "limit-cpu", Usage: "CPU limit in CPUs, e.g. 0.5"},
					&cli.StringFlag{Name: "reserve-memory", Usage: "memory reserved for placement, e.g. 64M"},
					&cli.Float64Flag{Name: "reserve-cpu", Usage: "CPUs reserved for placement"},
					&cli.StringFlag{Name: "restart-condition", Value: "any", Usage: "any, on-failure or none"},
					&cli.UintFlag{Name: "restart-max-attempts", Usage: "give up after this many restarts (0 = never)"},
					&cli.DurationFlag{Name: "restart-delay", Usage: "first restart delay (doubles up to --restart-max-delay)"},
					&cli.DurationFlag{Name: "restart-max-delay", Usage: "cap of the restart backoff"},
					&cli.DurationFlag{Name: "restart-window", Usage: "window in which restart attempts are counted"},
					&cli.StringSliceFlag{Name: "constraint", Usage: "placement constraint, e.g. node.labels.zone==a (repeatable)"},
					&cli.StringSliceFlag{Name: "publish", Aliases: []string{"p"}, Usage: "publish [NAME=]PUBLISHED:TARGET[/PROTO], or declare [NAME=]TARGET[/PROTO] (repeatable); NAME labels its DNS SRV record"},
					&cli.DurationFlag{Name: "stop-grace-period", Usage: "time between SIGTERM and SIGKILL (default 10s)"},
					&cli.StringFlag{Name: "hostname", Usage: "container hostname (default: the task id)"},
					&cli.StringFlag{Name: "update-order", Value: "stop-first", Usage: "replacing a task (update, drain): stop-first or start-first (the old one serves until the new one runs)"},
					&cli.StringSliceFlag{Name: "cap-add", Usage: "add a Linux capability to Docker's default set, e.g. NET_ADMIN (repeatable; applied after --cap-drop)"},
					&cli.StringSliceFlag{Name: "cap-drop", Usage: "drop a capability from the default set, or ALL (repeatable)"},
					&cli.Int64Flag{Name: "pids-limit", Usage: fmt.Sprintf("most processes and threads a task may hold (0: the default, %d; -1: unlimited)", messages.DefaultPidsLimit)},
					&cli.StringFlag{Name: "seccomp", Usage: "seccomp profile: default (Docker's) or unconfined (none; only for tasks that need a blocked syscall)"},
					waitFlag(), waitTimeoutFlag(),
					outputFlag(),
				}, healthFlags()...),
				Action: withClient(serviceCreate),
			},
			{Name: "list", Aliases: []string{"ls"}, Usage: "list services", Flags: []cli.Flag{outputFlag()}, Action: withClient(serviceList)},
			{Name: "inspect", Usage: "show a service", ArgsUsage: "NAME", Flags: []cli.Flag{&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "json", Usage: "json or table"}}, Action: withClient(serviceInspect)},
			{Name: "ps", Usage: "list a service's tasks", ArgsUsage: "NAME", Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include finished tasks"}, outputFlag()}, Action: withClient(servicePs)},
			{Name: "scale", Usage: "set replica counts", ArgsUsage: "NAME=REPLICAS...", Flags: []cli.Flag{waitFlag(), waitTimeoutFlag()}, Action: withClient(serviceScale)},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete services; their containers stop and are removed", ArgsUsage: "NAME...", Action: withClient(serviceDelete)},
		}, deploymentCommands()...)),
	}
}

func keyValues(list []string, what string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid %s %q: expected KEY=VALUE", what, kv)
		}
		out[k] = v
	}
	return out, nil
}

// parseBytes reads 64M, 1G, 512k or a plain byte count.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	u := strings.ToLower(s)
	for suffix, m := range map[string]int64{"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30} {
		if strings.HasSuffix(u, suffix) && len(u) > len(suffix) {
			if _, err := strconv.ParseFloat(u[:len(u)-len(suffix)], 64); err == nil {
				u, mult = u[:len(u)-len(suffix)], m
				break
			}
		}
	}
	f, err := strconv.ParseFloat(u, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: use a number with an optional unit, e.g. 64M or 1G", s)
	}
	return int64(f * float64(mult)), nil
}

func parseReplicas(s string) (uint64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid replica count %q: give a whole number from 0 to %d", s, messages.MaxReplicas)
	}
	if n < 0 {
		return 0, fmt.Errorf("invalid replica count %d: it cannot be negative", n)
	}
	if n > messages.MaxReplicas {
		return 0, fmt.Errorf("replica count %d is more than the limit of %d: give a smaller number", n, messages.MaxReplicas)
	}
	return uint64(n), nil
}

func parsePort(s string) (*messages.PortConfig, error) {
	p := &messages.PortConfig{Protocol: "tcp"}
	if name, rest, ok := strings.Cut(s, "="); ok {
		p.Name, s = name, rest // checked with the rest of the spec
	}
	if i := strings.Index(s, "/"); i >= 0 {
		p.Protocol, s = s[i+1:], s[:i]
	}
	pub, tgt, ok := strings.Cut(s, ":")
	if !ok {
		tgt, pub = pub, ""
	}
	t, err := strconv.ParseUint(tgt, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid --publish %q: expected PUBLISHED:TARGET, e.g. 8080:80", s)
	}
	p.TargetPort = uint32(t)
	if pub != "" {
		v, err := strconv.ParseUint(pub, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid --publish %q: expected PUBLISHED:TARGET, e.g. 8080:80", s)
		}
		p.PublishedPort = uint32(v)
	}
	return p, nil
}

// specFromFlags builds a ServiceSpec from `service create` flags.
func specFromFlags(c *cli.Context) (*messages.ServiceSpec, error) {
	if c.NArg() < 1 {
		return nil, fmt.Errorf("no service name given: `warren service create NAME --image IMAGE`")
	}
	s := &messages.ServiceSpec{Name: c.Args().First(), Image: c.String("image"), Args: c.Args().Slice()[1:]}
	var err error
	if s.Replicas, err = parseReplicas(c.String("replicas")); err != nil {
		return nil, err
	}
	switch c.String("mode") {
	case "replicated":
	case "global":
		s.Mode = messages.ServiceMode_SERVICE_MODE_GLOBAL
		if !c.IsSet("replicas") {
			s.Replicas = 0
		}
	default:
		return nil, fmt.Errorf("invalid --mode %q: use replicated or global", c.String("mode"))
	}
	if s.Env, err = keyValues(c.StringSlice("env"), "--env"); err != nil {
		return nil, err
	}
	if s.Labels, err = keyValues(c.StringSlice("label"), "--label"); err != nil {
		return nil, err
	}
	if e := c.String("entrypoint"); e != "" {
		s.Command = strings.Fields(e)
	}
	s.Workdir, s.User, s.Hostname = c.String("workdir"), c.String("user"), c.String("hostname")
	lm, err := parseBytes(c.String("limit-memory"))
	if err != nil {
		return nil, err
	}
	rm, err := parseBytes(c.String("reserve-memory"))
	if err != nil {
		return nil, err
	}
	if lm != 0 || rm != 0 || c.Float64("limit-cpu") != 0 || c.Float64("reserve-cpu") != 0 {
		s.Resources = &messages.ResourceRequirements{
			Limits:       &messages.Resources{MemoryBytes: lm, NanoCpus: int64(c.Float64("limit-cpu") * 1e9)},
			Reservations: &messages.Resources{MemoryBytes: rm, NanoCpus: int64(c.Float64("reserve-cpu") * 1e9)},
		}
	}
	rp := &messages.RestartPolicy{
		MaxAttempts: uint32(c.Uint("restart-max-attempts")),
		DelayMs:     c.Duration("restart-delay").Milliseconds(),
		MaxDelayMs:  c.Duration("restart-max-delay").Milliseconds(),
		WindowMs:    c.Duration("restart-window").Milliseconds(),
	}
	switch c.String("restart-condition") {
	case "any", "always":
	case "on-failure":
		rp.Condition = messages.RestartCondition_RESTART_CONDITION_ON_FAILURE
	case "none", "never":
		rp.Condition = messages.RestartCondition_RESTART_CONDITION_NONE
	default:
		return nil, fmt.Errorf("invalid --restart-condition %q: use any, on-failure or none", c.String("restart-condition"))
	}
	s.RestartPolicy = rp
	s.Constraints = c.StringSlice("constraint")
	for _, p := range c.StringSlice("publish") {
		pc, err := parsePort(p)
		if err != nil {
			return nil, err
		}
		s.Ports = append(s.Ports, pc)
	}
	s.StopGracePeriodMs = c.Duration("stop-grace-period").Milliseconds()
	switch c.String("update-order") {
	case "stop-first":
	case "start-first":
		s.UpdateConfig = &messages.UpdateConfig{Order: messages.UpdateOrder_UPDATE_ORDER_START_FIRST}
	default:
		return nil, fmt.Errorf("invalid --update-order %q: use stop-first or start-first", c.String("update-order"))
	}
	if hc := c.String("health-cmd"); hc != "" {
		if s.HealthCheck, err = parseHealthCmd(hc); err != nil {
			return nil, err
		}
		setHealthFlags(c, s.HealthCheck, s.Ports)
	}
	if s.CapAdd, err = messages.NormalizeCapabilities(c.StringSlice("cap-add")); err != nil {
		return nil, fmt.Errorf("invalid --cap-add: %w", err)
	}
	if s.CapDrop, err = messages.NormalizeCapabilities(c.StringSlice("cap-drop")); err != nil {
		return nil, fmt.Errorf("invalid --cap-drop: %w", err)
	}
	s.PidsLimit, s.Seccomp = c.Int64("pids-limit"), c.String("seccomp")
	// Checked here too, so a bad spec fails before any connection is made.
	if err := messages.ValidateServiceSpec(s); err != nil {
		return nil, err
	}
	return s, nil
}

func serviceCreate(c *cli.Context, cl *client.Client) error {
	spec, err := specFromFlags(c)
	if err != nil {
		return err
	}
	svc, err := cl.CreateService(spec)
	if err != nil {
		return err
	}
	if err := maybeWait(c, cl, spec.Name); err != nil {
		return err
	}
	return output(c, svc, func() error {
		fmt.Println(svc.Id)
		return nil
	})
}

func serviceList(c *cli.Context, cl *client.Client) error {
	list, err := cl.ListServices()
	if err != nil {
		return err
	}
	return output(c, &messages.ListServicesReply{Services: list}, func() error { return renderServices(os.Stdout, list) })
}

func serviceInspect(c *cli.Context, cl *client.Client) error {
	if err := exactArgs(c, 1, "one service name"); err != nil {
		return err
	}
	svc, err := cl.InspectService(c.Args().First())
	if err != nil {
		return err
	}
	return output(c, svc, func() error { return renderService(os.Stdout, svc) })
}

func servicePs(c *cli.Context, cl *client.Client) error {
	if err := exactArgs(c, 1, "one service name"); err != nil {
		return err
	}
	tasks, err := cl.ListTasks(c.Args().First(), "", c.Bool("all"))
	if err != nil {
		return err
	}
	nodes, err := cl.ListNodes()
	if err != nil {
		return err
	}
	return output(c, &messages.ListTasksReply{Tasks: tasks}, func() error { return renderTasks(os.Stdout, tasks, nodes, time.Now()) })
}

func serviceScale(c *cli.Context, cl *client.Client) error {
	if c.NArg() == 0 {
		return fmt.Errorf("nothing to scale: `warren service scale NAME=REPLICAS`")
	}
	type req struct {
		name string
		n    uint64
	}
	var reqs []req
	for _, a := range c.Args().Slice() {
		name, n, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return fmt.Errorf("invalid argument %q: expected NAME=REPLICAS, e.g. web=10", a)
		}
		r, err := parseReplicas(n)
		if err != nil {
			return err
		}
		reqs = append(reqs, req{name, r})
	}
	for _, r := range reqs {
		if _, err := cl.ScaleService(r.name, r.n); err != nil {
			return fmt.Errorf("scale %s: %w", r.name, err)
		}
		fmt.Printf("%s scaled to %d\n", r.name, r.n)
	}
	for _, r := range reqs {
		if err := maybeWait(c, cl, r.name); err != nil {
			return err
		}
	}
	return nil
}

func waitFlag() cli.Flag {
	return &cli.BoolFlag{Name: "wait", Usage: "return once every replica runs (and passes its health check), or fail saying why not"}
}

func waitTimeoutFlag() cli.Flag {
	return &cli.DurationFlag{Name: "wait-timeout", Value: 2 * time.Minute, Usage: "how long --wait waits"}
}

// maybeWait waits for a service to converge when --wait asks for it. The
// manager answers on the state change that completes it: no polling.
func maybeWait(c *cli.Context, cl *client.Client, name string) error {
	if !c.Bool("wait") {
		return nil
	}
	r, err := cl.WaitService(name, c.Duration("wait-timeout"))
	if err != nil {
		return fmt.Errorf("wait for %s: %w", name, err)
	}
	fmt.Fprintf(os.Stderr, "%s: %d/%d tasks running\n", name, r.Ready, r.Desired)
	return nil
}

func serviceDelete(c *cli.Context, cl *client.Client) error {
	if c.NArg() == 0 {
		return fmt.Errorf("no service named: `warren service delete NAME`")
	}
	for _, name := range c.Args().Slice() {
		if err := cl.DeleteService(name); err != nil {
			return err
		}
		fmt.Println(name)
	}
	return nil
}

// healthFlags are the health check's flags, shared by create and update.
func healthFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "health-cmd", Usage: "health check: 'http GET /path', 'tcp', 'exec CMD ARG...' or 'grpc [SERVICE]'"},
		&cli.UintFlag{Name: "health-port", Usage: "port the http, tcp and grpc checks use (default: the first --publish target, else 80)"},
		&cli.DurationFlag{Name: "health-interval", Usage: "time between checks (default 30s)"},
		&cli.DurationFlag{Name: "health-timeout", Usage: "time a check may take (default 5s)"},
		&cli.UintFlag{Name: "health-retries", Usage: "failures in a row that make a task unhealthy (default 3)"},
		&cli.DurationFlag{Name: "health-start-period", Usage: "failures in this time after start do not count"},
	}
}

// setHealthFlags copies the --health-* flags other than --health-cmd into
// hc; the port defaults to the first port's target. On update only the
// flags given change the check.
func setHealthFlags(c *cli.Context, hc *messages.HealthCheck, ports []*messages.PortConfig) {
	if c.IsSet("health-port") || c.IsSet("health-cmd") {
		hc.Port = uint32(c.Uint("health-port"))
		if hc.Port == 0 && len(ports) > 0 {
			hc.Port = ports[0].TargetPort
		}
	}
	if c.IsSet("health-interval") || c.IsSet("health-cmd") {
		hc.IntervalMs = c.Duration("health-interval").Milliseconds()
	}
	if c.IsSet("health-timeout") || c.IsSet("health-cmd") {
		hc.TimeoutMs = c.Duration("health-timeout").Milliseconds()
	}
	if c.IsSet("health-retries") || c.IsSet("health-cmd") {
		hc.Retries = uint32(c.Uint("health-retries"))
	}
	if c.IsSet("health-start-period") || c.IsSet("health-cmd") {
		hc.StartPeriodMs = c.Duration("health-start-period").Milliseconds()
	}
}

// parseHealthCmd reads --health-cmd: "http GET /healthz" (or "http
// /healthz"), "tcp", "exec CMD ARG..." or "grpc [SERVICE]".
func parseHealthCmd(v string) (*messages.HealthCheck, error) {
	f := strings.Fields(v)
	bad := fmt.Errorf("invalid --health-cmd %q: use 'http GET /path', 'tcp', 'exec CMD ARG...' or 'grpc [SERVICE]'", v)
	if len(f) == 0 {
		return nil, bad
	}
	hc := &messages.HealthCheck{}
	switch strings.ToLower(f[0]) {
	case "http":
		hc.Kind, hc.HttpPath = messages.HealthCheck_KIND_HTTP, "/"
		rest := f[1:]
		if len(rest) > 0 && strings.EqualFold(rest[0], "GET") {
			rest = rest[1:]
		}
		if len(rest) > 1 {
			return nil, bad
		}
		if len(rest) == 1 {
			if !strings.HasPrefix(rest[0], "/") {
				return nil, bad
			}
			hc.HttpPath = rest[0]
		}
	case "tcp":
		if len(f) != 1 {
			return nil, bad
		}
		hc.Kind = messages.HealthCheck_KIND_TCP
	case "exec", "cmd":
		if len(f) < 2 {
			return nil, bad
		}
		hc.Kind, hc.ExecCommand = messages.HealthCheck_KIND_EXEC, f[1:]
	case "grpc":
		if len(f) > 2 {
			return nil, bad
		}
		hc.Kind = messages.HealthCheck_KIND_GRPC
		if len(f) == 2 {
			hc.GrpcService = f[1]
		}
	default:
		return nil, bad
	}
	return hc, nil
}
