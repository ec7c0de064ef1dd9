package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func systemCommand() *cli.Command {
	return &cli.Command{
		Name:  "system",
		Usage: "what the cluster uses of its machines",
		Subcommands: []*cli.Command{
			{
				Name:  "df",
				Usage: "disk used on every node by images, task containers and logs, and the data dir (raft, events)",
				Description: "Every node is asked at once; a node that is down or does not answer is listed with why its figures " +
					"are missing, and the others are still shown.",
				Flags:  []cli.Flag{outputFlag()},
				Action: withClient(systemDf),
			},
		},
	}
}

// dfTimeout: each node counts its disk use in up to 25 s (directory walks
// on a large data dir); the manager answers once all have.
const dfTimeout = 40 * time.Second

func systemDf(c *cli.Context, cl *client.Client) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: `%s system df` takes none (it shows every node)", c.Args().First(), prog())
	}
	res, err := cl.RequestTimeout(&messages.SystemDfRequest{}, max(dfTimeout, c.Duration("timeout")))
	if err != nil {
		return err
	}
	r, ok := res.(*messages.SystemDfReply)
	if !ok {
		return fmt.Errorf("unexpected reply %T to system df", res)
	}
	if err := output(c, r, func() error { return renderDf(os.Stdout, r) }); err != nil {
		return err
	}
	answered := 0
	for _, n := range r.Nodes {
		if n.Error != "" {
			// On stderr: the table stays what a script would read, and
			// a person still sees which node is missing and why.
			fmt.Fprintf(os.Stderr, "%s: %s\n", dfName(n), n.Error)
		}
		if n.DataDir != "" {
			answered++
		}
	}
	if answered == 0 && len(r.Nodes) > 0 {
		return errors.New("no node answered: see the reasons above, and `" + prog() + " node ls`")
	}
	return nil
}

func dfName(n *messages.NodeDiskUsage) string {
	if n.Hostname != "" {
		return n.Hostname
	}
	return short(n.NodeId)
}

// renderDf prints one row per node; a node without figures shows "-".
func renderDf(w io.Writer, r *messages.SystemDfReply) error {
	tw := table(w)
	fmt.Fprintln(tw, "NODE\tID\tIMAGES\tCONTAINERS\tTASK LOGS\tRAFT\tEVENTS\tDATA DIR\t")
	for _, n := range r.Nodes {
		if n.DataDir == "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t\n", dfName(n), short(n.NodeId))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d (%s)\t%d (%s)\t%s\t%s\t%s\t%s %s\t\n", dfName(n), short(n.NodeId),
			n.Images, humanBytes(n.ImagesBytes), n.Containers, humanBytes(n.ContainersBytes),
			humanBytes(n.LogsBytes), humanBytes(n.RaftBytes), humanBytes(n.EventsBytes), humanBytes(n.DataDirBytes), n.DataDir)
	}
	return tw.Flush()
}

// humanBytes is a size in decimal units, as `docker system df` shows them.
func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", v, "kMGTP"[i-1])
}
