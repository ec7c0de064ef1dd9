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
			{Name: "import", Usage: "import an OCI layout or docker-save tarball", ArgsUsage: "FILE.tar", Flags: []cli.Flag{outputFlag()},
				Action: func(c *cli.Context) error {
					if err := exactArgs(c, 1, "one tarball"); err != nil {
						return err
					}
					// Opened before dialing: a wrong path needs no cluster to be told.
					f, err := os.Open(c.Args().First())
					if err != nil {
						return fmt.Errorf("open image tarball: %w", err)
					}
					defer f.Close()
					return withClient(func(c *cli.Context, cl *client.Client) error { return importImage(c, cl, f) })(c)
				}},
			{Name: "pull", Usage: "pull an image from a registry", ArgsUsage: "REF",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "plain-http", Usage: "talk plain HTTP to the registry (a local one without TLS)"}, outputFlag()},
				Action: func(c *cli.Context) error {
					if err := exactArgs(c, 1, "one image reference"); err != nil {
						return err
					}
					if err := messages.ValidateImageRef(c.Args().First()); err != nil {
						return fmt.Errorf("invalid image reference: %w", err)
					}
					return withClient(pullImage)(c)
				}},
			{Name: "list", Aliases: []string{"ls"}, Usage: "list images", Flags: listFlags(imageRow{}, imageFilters...), Action: imageList},
		}),
	}
}

func imageList(c *cli.Context) error {
	o, err := parseListOpts(c, imageRow{}, imageFilters...)
	if err != nil {
		return err
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		imgs, err := cl.ListImages()
		if err != nil {
			return err
		}
		imgs, rows := filterImages(o, imgs)
		if done, err := printRows(os.Stdout, o, rows, func(r imageRow) string { return r.Ref }); done {
			return err
		}
		return output(c, &messages.ListImagesReply{Images: imgs}, func() error {
			for _, i := range imgs {
				fmt.Println(i)
			}
			return nil
		})
	})(c)
}

func importImage(c *cli.Context, cl *client.Client, f *os.File) error {
	imgs, err := cl.ImportImage(f)
	if err != nil {
		return err
	}
	return output(c, &messages.ListImagesReply{Images: imgs}, func() error {
		for _, i := range imgs {
			fmt.Println(i)
		}
		return nil
	})
}

func pullImage(c *cli.Context, cl *client.Client) error {
	img, err := cl.PullImage(c.Args().First(), c.Bool("plain-http"))
	if err != nil {
		return err
	}
	return printLine(c, map[string]string{"image": img}, img)
}
