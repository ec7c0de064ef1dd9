// Command warren is Warren's single binary: it runs a node (`warren cluster
// init`) and is the CLI for everything else, talking to the cluster over
// actor remoting with mutual TLS. It also answers as `wrn` (argv[0]).
package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/warrenorch/warren/actors/client"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	app := newApp()
	if err := app.Run(interspersed(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", asInvoked(friendly(err)))
		os.Exit(1)
	}
}

// unknownCommand is urfave's error for a command it does not know, with
// its suggestion when the app asks for one.
var unknownCommand = regexp.MustCompile(`^No help topic for '([^']*)'(?:\. Did you mean "([^"]*)"\?)?$`)

// friendly rewrites the library's errors that do not say what to do.
func friendly(err error) string {
	m := unknownCommand.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	msg := fmt.Sprintf("unknown command %q", m[1])
	if m[2] != "" {
		msg += fmt.Sprintf(": did you mean %q?", m[2])
	}
	return msg + " (--help lists the commands)"
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 prog(),
		Usage:                "a container orchestrator: Swarm's simplicity, with health-gated rollouts, canaries and an encrypted mesh",
		Version:              version,
		EnableBashCompletion: true,
		Suggest:              true, // `warren servce` -> did you mean "service"?
		// Values such as --env HOSTS=a,b keep their commas, as in Docker.
		DisableSliceFlagSeparator: true,
		HideHelpCommand:           true, // helpCommand replaces it
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config-dir", Usage: "where the cluster address and credentials are", EnvVars: []string{"WARREN_CONFIG_DIR"}, Value: client.DefaultConfigDir()},
			&cli.StringSliceFlag{Name: "manager", Usage: "manager address HOST:PORT (overrides the config)", EnvVars: []string{"WARREN_MANAGER"}},
			&cli.DurationFlag{Name: "timeout", Usage: "how long to wait for the cluster to answer", DefaultText: "30s"},
			&cli.BoolFlag{Name: "verbose", Usage: "print each step of reaching the cluster, with timings, on stderr", EnvVars: []string{"WARREN_VERBOSE"}},
			cli.HelpFlag, // urfave adds it only when no command is named help, and helpCommand is
		},
		OnUsageError: usageError,
		Commands: []*cli.Command{
			clusterCommand(),
			serviceCommand(),
			taskCommand(),
			nodeCommand(),
			imageCommand(),
			eventsCommand(),
			auditCommand(),
			systemCommand(),
			versionCommand(),
			debugCommand(),
			helpCommand(),
			completionCommand(),
			completeCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints errors once
	}
}

// usageError turns urfave's usage errors into one line that says what to do.
func usageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if strings.HasPrefix(msg, "flag provided but not defined: ") {
		msg = "unknown flag " + strings.TrimPrefix(msg, "flag provided but not defined: ")
	}
	return fmt.Errorf("%s: see `%s --help`", msg, c.Command.HelpName)
}

func withUsage(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.OnUsageError = usageError
		withUsage(c.Subcommands)
	}
	return cmds
}

// dial connects to the cluster named by the global flags.
func dial(c *cli.Context) (*client.Client, error) {
	return client.Dial(client.Options{
		ConfigDir: c.String("config-dir"),
		Managers:  c.StringSlice("manager"),
		Timeout:   c.Duration("timeout"),
		Log:       verboseLog(c),
	})
}

// verboseLog is the --verbose log on stderr (stdout stays the command's
// output), or nil.
func verboseLog(c *cli.Context) *zap.Logger {
	if !c.Bool("verbose") {
		return nil
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), zap.DebugLevel))
}

// withClient runs fn with a connected client and closes it.
func withClient(fn func(c *cli.Context, cl *client.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := checkOutput(c); err != nil { // a bad -o needs no cluster to be told
			return err
		}
		cl, err := dial(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		if err := fn(c, cl); err != nil {
			return err
		}
		// Learn every manager, so the next command fails over to another
		// when this one is gone. Best effort: the command itself succeeded.
		if len(c.StringSlice("manager")) == 0 {
			_ = cl.RememberManagers(c.String("config-dir"))
		}
		return nil
	}
}

func exactArgs(c *cli.Context, n int, what string) error {
	if c.NArg() != n {
		return fmt.Errorf("expected %s, got %d argument(s): see `%s --help`", what, c.NArg(), c.Command.HelpName)
	}
	return nil
}

var errOutput = errors.New("unknown output format: use -o table or -o json")

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "table or json", Value: "table"}
}
