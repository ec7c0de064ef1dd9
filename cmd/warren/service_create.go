package main

// `warren service create`, in Warren's order (NAME --image IMAGE [ARG...])
// or Docker's (--name NAME IMAGE [CMD...]). The whole spec is built and
// checked before any connection, so a bad flag is reported as such even
// with no cluster configured.

import (
	"fmt"
	"strings"

	"github.com/google/shlex"
	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func createCommand() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create a service",
		UsageText: prog() + " service create [options] --name NAME IMAGE [CMD...]    (Docker's order)\n" + prog() + " service create [options] NAME --image IMAGE [ARG...]",
		ArgsUsage: "--name NAME IMAGE [CMD...] | NAME --image IMAGE [ARG...]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "service name; then the first argument is the image and the rest its command, flags included (Docker's order: give the options before IMAGE)"},
			&cli.StringFlag{Name: "image", Usage: "image to run, e.g. demo:v1 (or give it after --name NAME as the first argument)"},
			&cli.StringFlag{Name: "replicas", Value: "1", Usage: "number of tasks (replicated mode)"},
			&cli.StringFlag{Name: "mode", Value: "replicated", Usage: "replicated or global (one task per node)"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable KEY=VALUE (repeatable)"},
			&cli.StringSliceFlag{Name: "label", Usage: "service label KEY=VALUE (repeatable)"},
			&cli.StringFlag{Name: "entrypoint", Usage: "override the image entrypoint, split as a shell would ('/bin/app --config \"/etc/my app.conf\"')"},
			&cli.StringFlag{Name: "workdir", Usage: "working directory in the container"},
			&cli.StringFlag{Name: "user", Usage: "user[:group] to run as"},
			&cli.StringFlag{Name: "limit-memory", Usage: "memory limit, e.g. 64M or 1G"},
			&cli.Float64Flag{Name: "limit-cpu", Usage: "CPU limit in CPUs, e.g. 0.5", DefaultText: "none"},
			&cli.StringFlag{Name: "reserve-memory", Usage: "memory reserved for placement, e.g. 64M"},
			&cli.Float64Flag{Name: "reserve-cpu", Usage: "CPUs reserved for placement", DefaultText: "none"},
			&cli.StringFlag{Name: "restart-condition", Value: "any", Usage: "any, on-failure or none"},
			&cli.UintFlag{Name: "restart-max-attempts", Usage: "give up after this many restarts (0 = never)"},
			&cli.DurationFlag{Name: "restart-delay", Usage: "first restart delay (doubles up to --restart-max-delay)", DefaultText: "the node's backoff"},
			&cli.DurationFlag{Name: "restart-max-delay", Usage: "cap of the restart backoff", DefaultText: "the node's cap"},
			&cli.DurationFlag{Name: "restart-window", Usage: "window in which restart attempts are counted", DefaultText: "forever"},
			&cli.StringSliceFlag{Name: "constraint", Usage: "placement constraint, e.g. node.labels.zone==a (repeatable)"},
			&cli.StringSliceFlag{Name: "publish", Aliases: []string{"p"}, Usage: "publish [NAME=]PUBLISHED:TARGET[/PROTO] or published=P,target=T[,protocol=udp][,name=NAME], or declare [NAME=]TARGET[/PROTO] (repeatable); NAME labels its DNS SRV record"},
			&cli.DurationFlag{Name: "stop-grace-period", Usage: "time between SIGTERM and SIGKILL", DefaultText: "10s"},
			&cli.StringFlag{Name: "hostname", Usage: "container hostname", DefaultText: "the task id"},
			&cli.StringFlag{Name: "update-order", Value: "stop-first", Usage: "replacing a task (update, drain): stop-first or start-first (the old one serves until the new one runs)"},
			&cli.StringSliceFlag{Name: "cap-add", Usage: "add a Linux capability to Docker's default set, e.g. NET_ADMIN (repeatable; applied after --cap-drop)"},
			&cli.StringSliceFlag{Name: "cap-drop", Usage: "drop a capability from the default set, or ALL (repeatable)"},
			&cli.Int64Flag{Name: "pids-limit", Usage: "most processes and threads a task may hold (-1: unlimited)", DefaultText: fmt.Sprint(messages.DefaultPidsLimit)},
			&cli.StringFlag{Name: "seccomp", Usage: "seccomp profile: default (Docker's) or unconfined (none; only for tasks that need a blocked syscall)", DefaultText: "default"},
			waitFlag(), waitTimeoutFlag(),
			outputFlag(),
		}, healthFlags()...),
		Action: serviceCreate,
	}
}

// nameImageArgs reads the service's name, image and arguments in either
// order: --name NAME IMAGE [CMD...] (Docker's), NAME --image IMAGE
// [ARG...] (Warren's), or --name and --image both with ARG... after.
func nameImageArgs(c *cli.Context) (name, image string, args []string, err error) {
	name, image, args = c.String("name"), c.String("image"), c.Args().Slice()
	p := prog()
	switch {
	case name != "" && image != "":
	case name != "":
		if len(args) == 0 {
			return "", "", nil, fmt.Errorf("no image given: `%s service create --name %s IMAGE [CMD...]`", p, name)
		}
		image, args = args[0], args[1:]
	case image != "":
		if len(args) == 0 {
			return "", "", nil, fmt.Errorf("no service name given: `%s service create --name NAME %s` or `%s service create NAME --image %s`", p, image, p, image)
		}
		name, args = args[0], args[1:]
	case len(args) == 0:
		return "", "", nil, fmt.Errorf("no service name or image given: `%s service create --name NAME IMAGE [CMD...]`", p)
	default:
		return "", "", nil, fmt.Errorf("no --name or --image given, so %q could be either: `%s service create --name NAME IMAGE [CMD...]` or `%s service create NAME --image IMAGE`", args[0], p, p)
	}
	if err := messages.ValidateImageRef(image); err != nil {
		return "", "", nil, fmt.Errorf("invalid image %q: %w", image, err)
	}
	return name, image, args, nil
}

// specFromFlags builds a ServiceSpec from `service create` flags and
// checks it as the server will, before any connection is made.
func specFromFlags(c *cli.Context) (*messages.ServiceSpec, error) {
	name, image, args, err := nameImageArgs(c)
	if err != nil {
		return nil, err
	}
	s := &messages.ServiceSpec{Name: name, Image: image, Args: args}
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
		// Split as a shell would: quotes keep a path with spaces whole.
		if s.Command, err = shlex.Split(e); err != nil {
			return nil, fmt.Errorf("invalid --entrypoint %q: %v (check the quotes)", e, err)
		}
	}
	s.Workdir, s.User, s.Hostname = c.String("workdir"), c.String("user"), c.String("hostname")
	if err := setResources(c, s); err != nil {
		return nil, err
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
	if hc := c.String("health-cmd"); hc != "" && !strings.EqualFold(strings.TrimSpace(hc), "none") { // none: no check, as on update
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
	if err := messages.ValidateServiceSpec(s); err != nil {
		return nil, err
	}
	return s, nil
}

func setResources(c *cli.Context, s *messages.ServiceSpec) error {
	lm, err := parseBytes(c.String("limit-memory"))
	if err != nil {
		return fmt.Errorf("invalid --limit-memory: %w", err)
	}
	rm, err := parseBytes(c.String("reserve-memory"))
	if err != nil {
		return fmt.Errorf("invalid --reserve-memory: %w", err)
	}
	if lm != 0 || rm != 0 || c.Float64("limit-cpu") != 0 || c.Float64("reserve-cpu") != 0 {
		s.Resources = &messages.ResourceRequirements{
			Limits:       &messages.Resources{MemoryBytes: lm, NanoCpus: int64(c.Float64("limit-cpu") * 1e9)},
			Reservations: &messages.Resources{MemoryBytes: rm, NanoCpus: int64(c.Float64("reserve-cpu") * 1e9)},
		}
	}
	return nil
}

// serviceCreate checks everything it can first; only then dials.
func serviceCreate(c *cli.Context) error {
	if err := checkOutput(c); err != nil {
		return err
	}
	spec, err := specFromFlags(c)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
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
	})(c)
}
