package main

import (
	"os"

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
		}),
	}
}
