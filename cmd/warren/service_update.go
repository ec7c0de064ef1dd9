package main

// `warren service update`: read the service, edit its spec with the flags,
// send the whole spec with the version read (a concurrent change is a
// conflict, retried once on a fresh read), then follow the deployment it
// started until it ends.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func updateCommand() *cli.Command {
	return &cli.Command{
		Name:      "update",
		Usage:     "change a service: a new task template starts a deployment (rolling, blue-green or canary), a new replica count scales",
		ArgsUsage: "NAME",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "image", Usage: "new image, e.g. demo:v2"},
			&cli.StringSliceFlag{Name: "env-add", Usage: "set an environment variable KEY=VALUE (repeatable)"},
			&cli.StringSliceFlag{Name: "env-rm", Usage: "remove an environment variable KEY (repeatable)"},
			&cli.StringSliceFlag{Name: "publish-add", Usage: "add or replace a port, as create's --publish (repeatable)"},
			&cli.StringSliceFlag{Name: "publish-rm", Usage: "remove the port published on PUBLISHED[/PROTO], or declared as TARGET[/PROTO] (repeatable)"},
			&cli.StringSliceFlag{Name: "constraint-add", Usage: "add a placement constraint, e.g. node.labels.zone==a (repeatable)"},
			&cli.StringSliceFlag{Name: "constraint-rm", Usage: "remove a placement constraint, as written (repeatable)"},
			&cli.StringFlag{Name: "replicas", Usage: "number of tasks (replicated mode); alone, it scales without a deployment"},
			&cli.StringFlag{Name: "limit-memory", Usage: "memory limit, e.g. 64M (0 removes it)"},
			&cli.Float64Flag{Name: "limit-cpu", Usage: "CPU limit in CPUs, e.g. 0.5 (0 removes it)"},
			&cli.StringFlag{Name: "strategy", Usage: "how a new template is deployed: rolling, blue-green or canary (kept for later updates)"},
			&cli.IntFlag{Name: "update-parallelism", Usage: "tasks replaced at once (0: all at once)", DefaultText: "1"},
			&cli.DurationFlag{Name: "update-delay", Usage: "pause between batches", DefaultText: "none"},
			&cli.StringFlag{Name: "update-order", Usage: "stop-first or start-first (the old task serves until its replacement is healthy)"},
			&cli.StringFlag{Name: "update-failure-action", Usage: "when new tasks fail: rollback, pause or continue", DefaultText: "rollback"},
			&cli.DurationFlag{Name: "update-monitor", Usage: "how long a new task is watched for failure after it is healthy", DefaultText: "5s"},
			&cli.Float64Flag{Name: "update-max-failure-ratio", Usage: "share of failed new tasks tolerated, 0 to 1", DefaultText: "0"},
			&cli.StringFlag{Name: "switch-after", Usage: "blue-green: healthy (switch traffic when every green task is healthy) or manual (on warren service promote)"},
			&cli.DurationFlag{Name: "grace", Usage: "blue-green: how long blue stays after the switch, for an instant rollback", DefaultText: "30s"},
			&cli.IntFlag{Name: "canary-replicas", Usage: "canary: tasks of the new version beside the stable ones", DefaultText: "1"},
			&cli.IntFlag{Name: "weight", Usage: "canary: percent of requests the canary gets first, 1-100", DefaultText: "10"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "return once the update is committed, without following the deployment"},
			&cli.BoolFlag{Name: "wait", Usage: "follow the deployment (the default); for a scale-only update, wait until every replica runs"},
			&cli.DurationFlag{Name: "wait-timeout", Value: 10 * time.Minute, Usage: "how long to follow before giving up (the deployment goes on)"},
			outputFlag(),
		}, healthFlags()...),
		Action: serviceUpdate,
	}
}

// specEdit changes one part of a spec; parseUpdateFlags checks every
// flag's syntax before a connection is made, the edits then apply to the
// spec read from the cluster.
type specEdit func(s *messages.ServiceSpec) error

// updateFlagNames are the flags that change the spec.
var updateFlagNames = []string{"image", "env-add", "env-rm", "publish-add", "publish-rm", "constraint-add", "constraint-rm",
	"replicas", "limit-memory", "limit-cpu", "strategy", "update-parallelism", "update-delay", "update-order",
	"update-failure-action", "update-monitor", "update-max-failure-ratio", "switch-after", "grace", "canary-replicas", "weight",
	"health-cmd", "health-port", "health-interval", "health-timeout", "health-retries", "health-start-period"}

func parseUpdateFlags(c *cli.Context) ([]specEdit, error) {
	if !slices.ContainsFunc(updateFlagNames, c.IsSet) {
		return nil, fmt.Errorf("nothing to update: give what changes, e.g. `warren service update %s --image demo:v2` (see --help)", c.Args().First())
	}
	var edits []specEdit
	add := func(e specEdit) { edits = append(edits, e) }

	if c.IsSet("image") {
		img := c.String("image")
		if err := messages.ValidateImageRef(img); err != nil {
			return nil, fmt.Errorf("invalid --image: %w", err)
		}
		add(func(s *messages.ServiceSpec) error { s.Image = img; return nil })
	}

	rmEnv := c.StringSlice("env-rm")
	for _, k := range rmEnv {
		if k == "" || strings.Contains(k, "=") {
			return nil, fmt.Errorf("invalid --env-rm %q: give the variable's name only, e.g. --env-rm LOG_LEVEL", k)
		}
	}
	addEnv, err := keyValues(c.StringSlice("env-add"), "--env-add")
	if err != nil {
		return nil, err
	}
	if len(rmEnv) > 0 || len(addEnv) > 0 {
		add(func(s *messages.ServiceSpec) error {
			for _, k := range rmEnv {
				if _, ok := s.Env[k]; !ok {
					return fmt.Errorf("--env-rm %s: %s has no such variable", k, s.Name)
				}
				delete(s.Env, k)
			}
			if len(addEnv) > 0 && s.Env == nil {
				s.Env = map[string]string{}
			}
			for k, v := range addEnv {
				s.Env[k] = v
			}
			return nil
		})
	}

	type portRef struct {
		port  uint32
		proto string
	}
	var rmPorts []portRef
	for _, p := range c.StringSlice("publish-rm") {
		num, proto, _ := strings.Cut(p, "/")
		if proto == "" {
			proto = "tcp"
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 || (proto != "tcp" && proto != "udp") {
			return nil, fmt.Errorf("invalid --publish-rm %q: give the published port and an optional protocol, e.g. 8080 or 5353/udp", p)
		}
		rmPorts = append(rmPorts, portRef{uint32(n), proto})
	}
	var addPorts []*messages.PortConfig
	for _, p := range c.StringSlice("publish-add") {
		pc, err := parsePort(p)
		if err != nil {
			return nil, fmt.Errorf("invalid --publish-add %q: expected [NAME=][PUBLISHED:]TARGET[/PROTO], e.g. 8080:80", p)
		}
		addPorts = append(addPorts, pc)
	}
	if len(rmPorts) > 0 || len(addPorts) > 0 {
		add(func(s *messages.ServiceSpec) error {
			for _, r := range rmPorts {
				// The published port, else a port only declared (no
				// published one) with that target.
				i := slices.IndexFunc(s.Ports, func(p *messages.PortConfig) bool {
					return p.PublishedPort == r.port && protoOf(p) == r.proto
				})
				if i < 0 {
					i = slices.IndexFunc(s.Ports, func(p *messages.PortConfig) bool {
						return p.PublishedPort == 0 && p.TargetPort == r.port && protoOf(p) == r.proto
					})
				}
				if i < 0 {
					return fmt.Errorf("--publish-rm %d/%s: %s has no such port (it has %s)", r.port, r.proto, s.Name, portsText(s.Ports))
				}
				s.Ports = slices.Delete(s.Ports, i, i+1)
			}
			for _, a := range addPorts {
				// A port published (or declared) again replaces the old one.
				s.Ports = slices.DeleteFunc(s.Ports, func(p *messages.PortConfig) bool {
					if protoOf(p) != protoOf(a) {
						return false
					}
					if a.PublishedPort != 0 {
						return p.PublishedPort == a.PublishedPort
					}
					return p.PublishedPort == 0 && p.TargetPort == a.TargetPort
				})
				s.Ports = append(s.Ports, a)
			}
			return nil
		})
	}

	rmCons, addCons := c.StringSlice("constraint-rm"), c.StringSlice("constraint-add")
	for _, k := range addCons {
		if _, _, _, err := messages.ParseConstraint(k); err != nil {
			return nil, fmt.Errorf("invalid --constraint-add: %w", err)
		}
	}
	if len(rmCons) > 0 || len(addCons) > 0 {
		add(func(s *messages.ServiceSpec) error {
			for _, k := range rmCons {
				i := slices.Index(s.Constraints, strings.TrimSpace(k))
				if i < 0 {
					return fmt.Errorf("--constraint-rm %q: %s has no such constraint (it has %s)", k, s.Name, listText(s.Constraints))
				}
				s.Constraints = slices.Delete(s.Constraints, i, i+1)
			}
			for _, k := range addCons {
				if !slices.Contains(s.Constraints, strings.TrimSpace(k)) {
					s.Constraints = append(s.Constraints, strings.TrimSpace(k))
				}
			}
			return nil
		})
	}

	if c.IsSet("replicas") {
		n, err := parseReplicas(c.String("replicas"))
		if err != nil {
			return nil, err
		}
		add(func(s *messages.ServiceSpec) error {
			if s.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
				return fmt.Errorf("--replicas: %s is a global service (one task per eligible node); drop --replicas", s.Name)
			}
			s.Replicas = n
			return nil
		})
	}

	if c.IsSet("limit-memory") || c.IsSet("limit-cpu") {
		mem, err := parseBytes(c.String("limit-memory"))
		if err != nil {
			return nil, fmt.Errorf("invalid --limit-memory: %w", err)
		}
		cpu := c.Float64("limit-cpu")
		if cpu < 0 || cpu > 1e6 {
			return nil, fmt.Errorf("invalid --limit-cpu %g: give a number of CPUs, e.g. 0.5 (0 removes the limit)", cpu)
		}
		add(func(s *messages.ServiceSpec) error {
			if s.Resources == nil {
				s.Resources = &messages.ResourceRequirements{}
			}
			if s.Resources.Limits == nil {
				s.Resources.Limits = &messages.Resources{}
			}
			if c.IsSet("limit-memory") {
				s.Resources.Limits.MemoryBytes = mem
			}
			if c.IsSet("limit-cpu") {
				s.Resources.Limits.NanoCpus = int64(cpu * 1e9)
			}
			// No limit and no reservation left: no resources at all, so
			// that removing a limit gives back the spec it had.
			if proto.Size(s.Resources.Limits) == 0 && proto.Size(s.Resources.GetReservations()) == 0 {
				s.Resources = nil
			}
			return nil
		})
	}

	if e, err := healthEdit(c); err != nil {
		return nil, err
	} else if e != nil {
		add(e)
	}
	e, err := updateConfigEdit(c)
	if err != nil {
		return nil, err
	}
	if e != nil {
		add(e)
	}
	return edits, nil
}

func protoOf(p *messages.PortConfig) string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}

func portsText(ports []*messages.PortConfig) string {
	var out []string
	for _, p := range ports {
		if p.PublishedPort == 0 {
			out = append(out, fmt.Sprintf("%d/%s", p.TargetPort, protoOf(p)))
		} else {
			out = append(out, fmt.Sprintf("%d:%d/%s", p.PublishedPort, p.TargetPort, protoOf(p)))
		}
	}
	return listText(out)
}

func listText(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// healthEdit: --health-cmd replaces the check ("none" removes it); the
// other --health-* flags alone change the check the service has.
func healthEdit(c *cli.Context) (specEdit, error) {
	others := slices.ContainsFunc([]string{"health-port", "health-interval", "health-timeout", "health-retries", "health-start-period"}, c.IsSet)
	if !c.IsSet("health-cmd") && !others {
		return nil, nil
	}
	for _, f := range []string{"health-interval", "health-timeout", "health-start-period"} {
		if c.Duration(f) < 0 {
			return nil, fmt.Errorf("invalid --%s %s: it cannot be negative", f, c.Duration(f))
		}
	}
	if c.Uint("health-port") > 65535 {
		return nil, fmt.Errorf("invalid --health-port %d: ports are 1-65535", c.Uint("health-port"))
	}
	if c.IsSet("health-cmd") && strings.EqualFold(strings.TrimSpace(c.String("health-cmd")), "none") {
		if others {
			return nil, fmt.Errorf("--health-cmd none removes the health check: drop the other --health-* flags")
		}
		return func(s *messages.ServiceSpec) error { s.HealthCheck = nil; return nil }, nil
	}
	var fresh *messages.HealthCheck
	if c.IsSet("health-cmd") {
		hc, err := parseHealthCmd(c.String("health-cmd"))
		if err != nil {
			return nil, err
		}
		fresh = hc
	}
	return func(s *messages.ServiceSpec) error {
		hc := fresh
		if hc == nil {
			if s.HealthCheck == nil {
				return fmt.Errorf("%s has no health check to change: give --health-cmd too", s.Name)
			}
			hc = s.HealthCheck
		} else {
			hc = proto.Clone(hc).(*messages.HealthCheck)
		}
		setHealthFlags(c, hc, s.Ports)
		s.HealthCheck = hc
		return nil
	}, nil
}

// editSpec applies the edits to a copy of cur and checks the result as
// the server will.
func editSpec(cur *messages.ServiceSpec, edits []specEdit) (*messages.ServiceSpec, error) {
	s := proto.Clone(cur).(*messages.ServiceSpec)
	for _, e := range edits {
		if err := e(s); err != nil {
			return nil, err
		}
	}
	if proto.Equal(s, cur) {
		return nil, fmt.Errorf("nothing to update: %s already runs with these settings", cur.Name)
	}
	if err := messages.ValidateServiceSpec(s); err != nil {
		return nil, err
	}
	return s, nil
}

func serviceUpdate(c *cli.Context) error {
	if err := exactArgs(c, 1, "one service name"); err != nil {
		return err
	}
	if err := checkOutput(c); err != nil {
		return err
	}
	if c.Bool("detach") && c.Bool("wait") {
		return fmt.Errorf("--detach and --wait contradict each other: give one")
	}
	edits, err := parseUpdateFlags(c)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error { return runUpdate(c, cl, edits) })(c)
}

// changedSince tells a version conflict (the service changed after it was
// read: worth one retry on a fresh read) from the server's other conflicts
// (a deployment in flight), whose message is the answer.
func changedSince(cl *client.Client, name string, read *messages.Service) bool {
	now, err := cl.InspectService(name)
	return err == nil && now.Meta.GetVersion() != read.Meta.GetVersion()
}

func runUpdate(c *cli.Context, cl *client.Client, edits []specEdit) error {
	name := c.Args().First()
	var before, svc *messages.Service
	for attempt := 1; ; attempt++ {
		cur, err := cl.InspectService(name)
		if err != nil {
			return err
		}
		spec, err := editSpec(cur.Spec, edits)
		if err != nil {
			return err
		}
		svc, err = cl.UpdateService(name, spec, cur.Meta.GetVersion())
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == messages.ErrorCode_ERROR_CODE_CONFLICT && attempt < 2 && changedSince(cl, name, cur) {
			continue // changed since it was read: edit the new one
		}
		if err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
		before = cur
		break
	}
	d := svc.GetDeployment()
	started := d != nil && d.ToVersion == svc.SpecVersion && !proto.Equal(d, before.GetDeployment())
	if !started {
		// A replica count or rollout settings only: nothing to deploy.
		fmt.Fprintf(os.Stderr, "%s updated to spec v%d without a deployment (no task template change)\n", name, svc.SpecVersion)
		if err := maybeWait(c, cl, name); err != nil {
			return err
		}
		return output(c, svc, func() error { fmt.Println(name); return nil })
	}
	if c.Bool("detach") {
		return output(c, svc, func() error {
			fmt.Printf("%s: %s deployment v%d → v%d started: `"+prog()+" service deployment %s --follow` shows it\n",
				name, strategyName(d.Strategy), d.FromVersion, d.ToVersion, name)
			return nil
		})
	}
	f := newFollower(c, name, d.Id, false)
	f.since = svc.GetMeta().GetVersion()
	st, err := f.run(c.Context, cl)
	if err != nil {
		return err
	}
	if hint := nextSteps(st); hint != "" {
		fmt.Fprintln(os.Stderr, hint)
	}
	if !f.json {
		fmt.Println(name)
	}
	return nil
}
