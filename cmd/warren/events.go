package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show actor lifecycle and state-change events",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep streaming new events"},
			&cli.Uint64Flag{Name: "since", Usage: "only events after this sequence number"},
			&cli.StringSliceFlag{Name: "type", Usage: "event type prefix, e.g. actor. or task. (repeatable)"},
			outputFlag(),
		},
		OnUsageError: usageError,
		Action: withClient(func(c *cli.Context, cl *client.Client) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var idle *time.Timer
			if !c.Bool("follow") {
				// History arrives before the subscription is confirmed;
				// stop once it has gone quiet.
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				idle = time.AfterFunc(time.Second, cancel)
			}
			json := c.String("output") == "json"
			if !json && c.String("output") != "table" {
				return errOutput
			}
			return cl.Events(ctx, client.EventOptions{Replay: !c.Bool("follow") || c.IsSet("since"), SinceSeq: c.Uint64("since"), Types: c.StringSlice("type")}, func(ev *messages.Event) error {
				if idle != nil {
					idle.Reset(300 * time.Millisecond)
				}
				if json {
					b, err := protojson.Marshal(ev)
					if err != nil {
						return err
					}
					fmt.Println(string(b))
					return nil
				}
				return renderEvent(os.Stdout, ev)
			})
		}),
	}
}

func debugCommand() *cli.Command {
	return &cli.Command{
		Name:   "debug",
		Hidden: true,
		Subcommands: withUsage([]*cli.Command{
			{Name: "crash", Usage: "make an actor panic (node needs --enable-debug)", ArgsUsage: "ACTOR-ID",
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if err := exactArgs(c, 1, "one actor id, e.g. manager/leader/scheduler"); err != nil {
						return err
					}
					return cl.DebugCrash(c.Args().First())
				})},
		}),
	}
}
