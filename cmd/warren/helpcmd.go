package main

import "github.com/urfave/cli/v2"

// helpCommand is `warren help [COMMAND...]`, the same as `warren COMMAND...
// --help`. urfave's own help command prints a group's help without its
// subcommands (`help service` listed none), so it stays hidden and this
// one reruns the app with --help instead.
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:            "help",
		Aliases:         []string{"h"},
		Usage:           "show the commands, or one command's help",
		ArgsUsage:       "[COMMAND...]",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			args := append([]string{c.App.Name}, c.Args().Slice()...)
			return c.App.Run(append(args, "--help"))
		},
	}
}
