package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "list and inspect nodes",
		Subcommands: withUsage([]*cli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "list nodes", Flags: []cli.Flag{outputFlag()}, Action: withClient(func(c *cli.Context, cl *client.Client) error {
				nodes, err := cl.ListNodes()
				if err != nil {
					return err
				}
				return output(c, &messages.ListNodesReply{Nodes: nodes}, func() error { return renderNodes(os.Stdout, nodes) })
			})},
			{Name: "ps", Usage: "list the tasks on a node (default: the manager answering)", ArgsUsage: "[NODE]", Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include finished tasks"}, outputFlag()}, Action: withClient(nodePs)},
			{Name: "inspect", Usage: "show a node", ArgsUsage: "NODE", Flags: []cli.Flag{&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "json", Usage: "json or table"}},
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if err := exactArgs(c, 1, "one node id or hostname"); err != nil {
						return err
					}
					r, err := cl.InspectNode(c.Args().First())
					if err != nil {
						return err
					}
					return output(c, r, func() error { return renderNode(os.Stdout, r) })
				})},
			{Name: "update", Usage: "change a node's availability and labels", ArgsUsage: "NODE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "availability", Usage: "active, pause (no new tasks) or drain (move tasks off)"},
					&cli.StringSliceFlag{Name: "label-add", Usage: "add or change a label KEY=VALUE (repeatable)"},
					&cli.StringSliceFlag{Name: "label-rm", Usage: "remove a label KEY (repeatable)"},
				},
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if err := exactArgs(c, 1, "one node id or hostname"); err != nil {
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
					n, err := cl.UpdateNode(req)
					if err != nil {
						return err
					}
					fmt.Println(n.Id)
					return nil
				})},
			{Name: "promote", Usage: "make workers managers (raft voters)", ArgsUsage: "NODE...",
				Action: withClient(func(c *cli.Context, cl *client.Client) error { return eachNode(c, cl.PromoteNode) })},
			{Name: "demote", Usage: "make managers workers (refused if it would lose quorum)", ArgsUsage: "NODE...",
				Action: withClient(func(c *cli.Context, cl *client.Client) error { return eachNode(c, cl.DemoteNode) })},
			{Name: "rm", Aliases: []string{"remove"}, Usage: "remove a node that left the cluster", ArgsUsage: "NODE...",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "remove it even if it still reports as up"}},
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if c.NArg() == 0 {
						return fmt.Errorf("no node named: `warren node rm NODE`")
					}
					for _, n := range c.Args().Slice() {
						if err := cl.RemoveNode(n, c.Bool("force")); err != nil {
							return err
						}
						fmt.Println(n)
					}
					return nil
				})},
		}),
	}
}

func eachNode(c *cli.Context, fn func(string) error) error {
	if c.NArg() == 0 {
		return fmt.Errorf("no node named: see `%s --help`", c.Command.HelpName)
	}
	for _, n := range c.Args().Slice() {
		if err := fn(n); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		fmt.Println(n)
	}
	return nil
}

// nodePs lists the tasks on one node, as `docker node ps`: the node named,
// or the manager the CLI reached.
func nodePs(c *cli.Context, cl *client.Client) error {
	if c.NArg() > 1 {
		return fmt.Errorf("node ps takes at most one node id or hostname, got %d: `warren node ps [NODE]`", c.NArg())
	}
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
	return output(c, &messages.ListTasksReply{Tasks: tasks}, func() error { return renderTasks(os.Stdout, tasks, nodes, time.Now()) })
}
