package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/messages"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "show the CLI's version and every node's",
		Flags: []cli.Flag{outputFlag()},
		Action: func(c *cli.Context) error {
			if err := checkOutput(c); err != nil {
				return err
			}
			// The client's version is known without a cluster; the nodes'
			// need one, and a failure to reach it says so after it.
			var nodes []*messages.Node
			cl, err := dial(c)
			if err == nil {
				nodes, err = cl.ListNodes()
				cl.Close()
			}
			if c.String("output") == "json" {
				if jerr := renderVersionJSON(os.Stdout, version, nodes); jerr != nil {
					return jerr
				}
			} else if rerr := renderVersion(os.Stdout, version, nodes, err == nil); rerr != nil {
				return rerr
			}
			if err != nil {
				return fmt.Errorf("the nodes' versions need a cluster: %w", err)
			}
			return nil
		},
	}
}

// renderVersion prints the client's version, then each node's (when the
// cluster answered), flagging those that differ from the client's.
func renderVersion(w io.Writer, client string, nodes []*messages.Node, reached bool) error {
	fmt.Fprintf(w, "Client:  %s\n", client)
	if !reached {
		return nil
	}
	tw := table(w)
	fmt.Fprintln(tw, "\nNODE\tROLE\tVERSION\t")
	for _, n := range nodes {
		v, note := n.GetDescription().GetVersion(), ""
		if v == "" {
			v = "-"
		} else if v != client {
			note = "(differs from the client)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.GetDescription().GetHostname(), roleName(n.GetSpec().GetRole()), v, note)
	}
	return tw.Flush()
}

// versionRecord is `version -o json`.
type versionRecord struct {
	Client string        `json:"client"`
	Nodes  []nodeVersion `json:"nodes"`
}

type nodeVersion struct {
	ID       string `json:"id"`
	Hostname string `json:"hostname"`
	Role     string `json:"role"`
	Version  string `json:"version"`
}

func renderVersionJSON(w io.Writer, client string, nodes []*messages.Node) error {
	r := versionRecord{Client: client, Nodes: []nodeVersion{}}
	for _, n := range nodes {
		r.Nodes = append(r.Nodes, nodeVersion{ID: n.Id, Hostname: n.GetDescription().GetHostname(), Role: roleName(n.GetSpec().GetRole()), Version: n.GetDescription().GetVersion()})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
