package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "load and list images (air-gapped clusters need no registry)",
		Subcommands: withUsage([]*cli.Command{
			{Name: "import", Usage: "import an OCI layout or docker-save tarball", ArgsUsage: "FILE.tar",
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if err := exactArgs(c, 1, "one tarball"); err != nil {
						return err
					}
					f, err := os.Open(c.Args().First())
					if err != nil {
						return fmt.Errorf("open image tarball: %w", err)
					}
					defer f.Close()
					imgs, err := cl.ImportImage(f)
					if err != nil {
						return err
					}
					for _, i := range imgs {
						fmt.Println(i)
					}
					return nil
				})},
			{Name: "pull", Usage: "pull an image from a registry", ArgsUsage: "REF",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "plain-http", Usage: "talk plain HTTP to the registry (a local one without TLS)"}},
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					if err := exactArgs(c, 1, "one image reference"); err != nil {
						return err
					}
					img, err := cl.PullImage(c.Args().First(), c.Bool("plain-http"))
					if err != nil {
						return err
					}
					fmt.Println(img)
					return nil
				})},
			{Name: "list", Aliases: []string{"ls"}, Usage: "list images", Flags: []cli.Flag{outputFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client) error {
					imgs, err := cl.ListImages()
					if err != nil {
						return err
					}
					return output(c, &messages.ListImagesReply{Images: imgs}, func() error {
						for _, i := range imgs {
							fmt.Println(i)
						}
						return nil
					})
				})},
		}),
	}
}
