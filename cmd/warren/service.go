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
			createCommand(),
			{Name: "list", Aliases: []string{"ls"}, Usage: "list services (-q prints their names)", Flags: listFlags(serviceRow{}, serviceFilters...), Action: serviceList},
			inspectCommand(),
			serviceLogsCommand(),
			{Name: "ps", Usage: "list a service's tasks", ArgsUsage: "NAME", Flags: append([]cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include finished tasks"}}, listFlags(taskRow{}, taskFilters...)...), Action: servicePs},
			{Name: "scale", Usage: "set replica counts", ArgsUsage: "NAME=REPLICAS...", Flags: []cli.Flag{waitFlag(), waitTimeoutFlag(), outputFlag()}, Action: serviceScale},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete services; their containers stop and are removed", ArgsUsage: "NAME...", Flags: []cli.Flag{outputFlag()}, Action: serviceDelete},
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

func serviceList(c *cli.Context) error {
	o, err := parseListOpts(c, serviceRow{}, serviceFilters...)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		list, err := cl.ListServices()
		if err != nil {
			return err
		}
		list, rows := filterServices(o, list)
		// -q prints names: every service command takes one.
		if done, err := printRows(os.Stdout, o, rows, func(r serviceRow) string { return r.Name }); done {
			return err
		}
		return output(c, &messages.ListServicesReply{Services: list}, func() error { return renderServices(os.Stdout, list) })
	})(c)
}

func servicePs(c *cli.Context) error {
	if err := exactArgs(c, 1, "one service name"); err != nil {
		return err
	}
	o, err := parseListOpts(c, taskRow{}, taskFilters...)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		tasks, err := cl.ListTasks(c.Args().First(), "", c.Bool("all"))
		if err != nil {
			return err
		}
		nodes, err := cl.ListNodes()
		if err != nil {
			return err
		}
		return printTasks(c, o, tasks, nodes)
	})(c)
}

// printTasks is the output of service ps and node ps.
func printTasks(c *cli.Context, o *listOpts, tasks []*messages.Task, nodes []*messages.Node) error {
	now := time.Now()
	tasks, rows := filterTasks(o, tasks, nodes, now)
	if done, err := printRows(os.Stdout, o, rows, func(r taskRow) string { return r.ID }); done {
		return err
	}
	return output(c, &messages.ListTasksReply{Tasks: tasks}, func() error { return renderTasks(os.Stdout, tasks, nodes, now) })
}

// scaleRequest is one NAME=REPLICAS of `service scale`, and its -o json line.
type scaleRequest struct {
	Service  string `json:"service"`
	Replicas uint64 `json:"replicas"`
}

func serviceScale(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("nothing to scale: `%s service scale NAME=REPLICAS`", prog())
	}
	if err := checkOutput(c); err != nil {
		return err
	}
	var reqs []scaleRequest
	for _, a := range c.Args().Slice() {
		name, n, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return fmt.Errorf("invalid argument %q: expected NAME=REPLICAS, e.g. web=10", a)
		}
		r, err := parseReplicas(n)
		if err != nil {
			return err
		}
		reqs = append(reqs, scaleRequest{name, r})
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		for _, r := range reqs {
			if _, err := cl.ScaleService(r.Service, r.Replicas); err != nil {
				return fmt.Errorf("scale %s: %w", r.Service, err)
			}
			if err := printLine(c, r, fmt.Sprintf("%s scaled to %d", r.Service, r.Replicas)); err != nil {
				return err
			}
		}
		for _, r := range reqs {
			if err := maybeWait(c, cl, r.Service); err != nil {
				return err
			}
		}
		return nil
	})(c)
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

func serviceDelete(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("no service named: `%s service delete NAME`", prog())
	}
	if err := checkOutput(c); err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		for _, name := range c.Args().Slice() {
			if err := cl.DeleteService(name); err != nil {
				return err
			}
			if err := printLine(c, map[string]string{"deleted": name}, name); err != nil {
				return err
			}
		}
		return nil
	})(c)
}
