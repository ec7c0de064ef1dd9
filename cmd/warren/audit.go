package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "who changed what: the cluster's audit log (every write, and every request refused for its certificate)",
		Subcommands: withUsage([]*cli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "list audit entries, oldest first (any manager answers: the log is replicated)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "since", Usage: "only entries from this long ago (10m, 2h) or since this time (RFC3339, e.g. 2026-01-02T15:04:05Z)"},
					&cli.StringFlag{Name: "user", Usage: "only requests sent with this certificate name (admin, a node id)"},
					&cli.BoolFlag{Name: "denied", Usage: "only requests refused for the sender's certificate"},
					&cli.IntFlag{Name: "tail", Aliases: []string{"n"}, Usage: "only the newest N entries (0: all kept)"},
					outputFlag(),
				},
				Action: auditList,
			},
		}),
	}
}

// auditList checks its flags before any connection, then lists.
func auditList(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("audit ls takes no arguments (got %q): filter with --since, --user, --denied", c.Args().First())
	}
	since, err := parseTimeArg("--since", c.String("since"), time.Now())
	if err != nil {
		return err
	}
	if c.Int("tail") < 0 {
		return fmt.Errorf("invalid --tail %d: give a number of entries, 0 for all", c.Int("tail"))
	}
	jsonOut := c.String("output") == "json"
	if !jsonOut && c.String("output") != "table" {
		return errOutput
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		r, err := cl.Audit(client.AuditOptions{Since: since, User: c.String("user"), Denied: c.Bool("denied"), Limit: c.Int("tail")})
		if err != nil {
			return err
		}
		if jsonOut {
			return renderAuditJSON(os.Stdout, r.Entries)
		}
		return renderAudit(os.Stdout, r.Entries, time.Local)
	})(c)
}

// renderAuditJSON prints one entry a line, for jq.
func renderAuditJSON(w io.Writer, es []*messages.AuditEntry) error {
	for _, e := range es {
		b, err := protojson.Marshal(e)
		if err != nil {
			return err
		}
		// protojson varies its spacing on purpose; one compact form keeps
		// lines the same from run to run (diffable exports, golden files).
		var line bytes.Buffer
		if err := json.Compact(&line, b); err != nil {
			return err
		}
		line.WriteByte('\n')
		if _, err := line.WriteTo(w); err != nil {
			return err
		}
	}
	return nil
}

// renderAudit prints the log as a table, times in loc.
func renderAudit(w io.Writer, es []*messages.AuditEntry, loc *time.Location) error {
	tw := table(w)
	fmt.Fprintln(tw, "TIME\tUSER\tROLE\tMANAGER\tREQUEST\tTARGET\tRESULT")
	for _, e := range es {
		target := e.Target
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", time.Unix(0, e.UnixNano).In(loc).Format(time.RFC3339), e.User, e.Role, e.Manager,
			auditRequest(e), target, auditResult(e))
	}
	return tw.Flush()
}

// auditRequest names what was asked: the request without "Request", and
// the actor when it was not the api (a refused message to another actor).
func auditRequest(e *messages.AuditEntry) string {
	r := strings.TrimSuffix(e.Request, "Request")
	if e.Actor != "" && e.Actor != "manager/api" {
		r += " to " + e.Actor
	}
	return r
}

// auditResult is "ok", or the code and the start of the message.
func auditResult(e *messages.AuditEntry) string {
	if e.Code == "" && !e.Denied {
		return "ok"
	}
	s := e.Code
	if e.Denied {
		s = "DENIED"
		if e.RefusedBy != "" {
			s += " by " + e.RefusedBy
		}
	} else if e.Message != "" {
		s += ": " + e.Message
	}
	const max = 72
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max-1]) + "…"
	}
	return s
}
