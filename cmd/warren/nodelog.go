package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/host"
)

// logFormatFlag is a node's --log-format.
func logFormatFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-format", Value: host.LogJSON,
		Usage: "json (one JSON object a line with component and node, for jq and log shippers) or console (for people)"}
}

// nodeLogger is the node's logger from --log-level and --log-format.
func nodeLogger(c *cli.Context) (*zap.Logger, error) {
	return host.NewLogger(c.String("log-level"), c.String("log-format"))
}

// notice tells the operator what a node is doing on stderr: a plain
// "warren: ..." line with console logs, a log line (component "cli") with
// json logs, so that every line a json node writes is JSON. A message
// starting "warning: " is logged as a warning. log may be nil (before the
// node's logger exists).
func notice(c *cli.Context, log *zap.Logger, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if c.String("log-format") != host.LogJSON {
		fmt.Fprintln(os.Stderr, prog()+": "+msg)
		return
	}
	if log == nil {
		var err error
		if log, err = nodeLogger(c); err != nil {
			fmt.Fprintln(os.Stderr, prog()+": "+msg)
			return
		}
	}
	log = log.Named("cli")
	if w, ok := strings.CutPrefix(msg, "warning: "); ok {
		log.Warn(w)
		return
	}
	log.Info(msg)
}

// nodeFailed ends a json node that could not start or run with its error
// as a log line (not main's plain "Error:" line); a console node returns
// err to main as every command does.
func nodeFailed(c *cli.Context, log *zap.Logger, err error) error {
	if err == nil || c.String("log-format") != host.LogJSON || log == nil {
		return err
	}
	// The error says what to do; a stack of the CLI's frames would not.
	log.Named("cli").WithOptions(zap.AddStacktrace(zap.FatalLevel)).Error("node stopped", zap.Error(err))
	_ = log.Sync()
	os.Exit(1)
	return nil
}
