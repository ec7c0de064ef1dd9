package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "list and inspect nodes",
		Subcommands: withUsage([]*cli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "list nodes (-q prints their ids)", Flags: listFlags(nodeRow{}, nodeFilters...), Action: nodeList},
			{Name: "ps", Usage: "list the tasks on a node (default: the manager answering)", ArgsUsage: "[NODE]", Flags: append([]cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include finished tasks"}}, listFlags(taskRow{}, taskFilters...)...), Action: nodePs},
			{Name: "inspect", Usage: "show a node (JSON; --pretty for people)", ArgsUsage: "NODE", Flags: inspectFlags("{{.Node.Description.Addr}}"),
				Action: func(c *cli.Context) error {
					if err := exactArgs(c, 1, "one node id or hostname"); err != nil {
						return err
					}
					pretty, tmpl, err := inspectOpts(c)
					if err != nil {
						return err
					}
					return withClient(func(c *cli.Context, cl *client.Client) error {
						r, err := cl.InspectNode(c.Args().First())
						if err != nil {
							return err
						}
						return printInspect(c, r, pretty, tmpl, func() error { return renderNode(os.Stdout, r) })
					})(c)
				}},
			{Name: "update", Usage: "change a node's availability and labels", ArgsUsage: "NODE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "availability", Usage: "active, pause (no new tasks) or drain (move tasks off)"},
					&cli.StringSliceFlag{Name: "label-add", Usage: "add or change a label KEY=VALUE (repeatable)"},
					&cli.StringSliceFlag{Name: "label-rm", Usage: "remove a label KEY (repeatable)"},
					outputFlag(),
				},
				Action: nodeUpdate},
			{Name: "promote", Usage: "make workers managers (raft voters)", ArgsUsage: "NODE...", Flags: []cli.Flag{outputFlag()},
				Action: eachNode("promoted", func(cl *client.Client) func(string) error { return cl.PromoteNode })},
			{Name: "demote", Usage: "make managers workers (refused if it would lose quorum)", ArgsUsage: "NODE...", Flags: []cli.Flag{outputFlag()},
				Action: eachNode("demoted", func(cl *client.Client) func(string) error { return cl.DemoteNode })},
			{Name: "rm", Aliases: []string{"remove"}, Usage: "remove a node that left the cluster", ArgsUsage: "NODE...",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "remove it even if it still reports as up"}, outputFlag()},
				Action: func(c *cli.Context) error {
					return eachNode("removed", func(cl *client.Client) func(string) error {
						return func(n string) error { return cl.RemoveNode(n, c.Bool("force")) }
					})(c)
				}},
		}),
	}
}

// eachNode runs op on every node named, printing each as it is done.
func eachNode(done string, op func(cl *client.Client) func(string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() == 0 {
			return fmt.Errorf("no node named: see `%s --help`", c.Command.HelpName)
		}
		if err := checkOutput(c); err != nil {
			return err
		}
		return withClient(func(c *cli.Context, cl *client.Client) error {
			fn := op(cl)
			for _, n := range c.Args().Slice() {
				if err := fn(n); err != nil {
					return fmt.Errorf("%s: %w", n, err)
				}
				if err := printLine(c, map[string]string{done: n}, n); err != nil {
					return err
				}
			}
			return nil
		})(c)
	}
}

func nodeList(c *cli.Context) error {
	o, err := parseListOpts(c, nodeRow{}, nodeFilters...)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		nodes, err := cl.ListNodes()
		if err != nil {
			return err
		}
		nodes, rows := filterNodes(o, nodes)
		if done, err := printRows(os.Stdout, o, rows, func(r nodeRow) string { return r.ID }); done {
			return err
		}
		return output(c, &messages.ListNodesReply{Nodes: nodes}, func() error { return renderNodes(os.Stdout, nodes) })
	})(c)
}

// nodeUpdate checks the flags, then sends one update.
func nodeUpdate(c *cli.Context) error {
	if err := exactArgs(c, 1, "one node id or hostname"); err != nil {
		return err
	}
	if err := checkOutput(c); err != nil {
		return err
	}
	req := &messages.UpdateNodeRequest{Node: c.Args().First(), LabelRm: c.StringSlice("label-rm")}
	if a := c.String("availability"); a != "" {
		v, ok := messages.NodeAvailability_value["NODE_AVAILABILITY_"+strings.ToUpper(a)]
		if !ok {
			return fmt.Errorf("invalid --availability %q: use active, pause or drain", a)
		}
		req.Availability, req.SetAvailability = messages.NodeAvailability(v), true
	}
	var err error
	if req.LabelAdd, err = keyValues(c.StringSlice("label-add"), "--label-add"); err != nil {
		return err
	}
	if !req.SetAvailability && len(req.LabelAdd) == 0 && len(req.LabelRm) == 0 {
		return fmt.Errorf("nothing to update: give --availability, --label-add or --label-rm (see `%s --help`)", c.Command.HelpName)
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		n, err := cl.UpdateNode(req)
		if err != nil {
			return err
		}
		return output(c, n, func() error { fmt.Println(n.Id); return nil })
	})(c)
}

// nodePs lists the tasks on one node, as `docker node ps`: the node named,
// or the manager the CLI reached.
func nodePs(c *cli.Context) error {
	if c.NArg() > 1 {
		return fmt.Errorf("node ps takes at most one node id or hostname, got %d: `%s node ps [NODE]`", c.NArg(), prog())
	}
	o, err := parseListOpts(c, taskRow{}, taskFilters...)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		node := c.Args().First()
		if node == "" {
			info, err := cl.ClusterInfo()
			if err != nil {
				return err
			}
			node = info.NodeId
		}
		tasks, err := cl.ListTasks("", node, c.Bool("all"))
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
