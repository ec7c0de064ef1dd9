package main

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// zeroDefault is urfave's rendering of a zero number or duration: a lie
// when the zero means "the node's default" (--timeout 0s is really 30s),
// so such flags carry a DefaultText, or their usage says what 0 means.
// placeholder is urfave's value name in a usage, e.g. `N` in "the last `N` lines".
var placeholder = regexp.MustCompile("`[^`]*`")

var zeroDefault = regexp.MustCompile(`\(default: 0(s|\.0+)?\)`)

// TestFlagHelpDefaults walks every command's flags: a usage must not
// carry its own "(default ...)" (urfave prints the value, so it showed
// twice or disagreed), nor a command in backquotes (urfave makes
// backquoted text the value's placeholder), and a zero default is shown only where 0 is explained.
func TestFlagHelpDefaults(t *testing.T) {
	var walk func(path string, flags []cli.Flag, cmds []*cli.Command)
	walk = func(path string, flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok {
				continue
			}
			usage, shown := df.GetUsage(), f.String()
			if strings.Contains(strings.ToLower(usage), "(default") {
				t.Errorf("%s --%s: usage %q states its own default; set Value or DefaultText and let urfave print it", path, f.Names()[0], usage)
			}
			if m := placeholder.FindString(usage); strings.Contains(m, " ") {
				t.Errorf("%s --%s: usage %q: urfave shows %s as the value's name", path, f.Names()[0], usage, m)
			}
			if zeroDefault.MatchString(shown) && !regexp.MustCompile(`\b0\b`).MatchString(usage) {
				t.Errorf("%s --%s: help shows %q; give DefaultText with what an unset flag means", path, f.Names()[0], shown)
			}
		}
		for _, c := range cmds {
			walk(path+" "+c.Name, c.Flags, c.Subcommands)
		}
	}
	app := newApp()
	walk(app.Name, app.Flags, app.Commands)
}

// TestHelpCommand: `warren help`, `warren help service` (with its
// subcommands) and `warren help service create` print the help that
// --help prints.
func TestHelpCommand(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"help"}, []string{"COMMANDS:", "service", "completion", "GLOBAL OPTIONS:"}},
		{[]string{"help", "service"}, []string{"warren service -", "create", "inspect", "ps"}},
		{[]string{"help", "service", "create"}, []string{"warren service create [options] --name NAME IMAGE [CMD...]", "--health-cmd"}},
		{[]string{"h", "node", "ls"}, []string{"warren node list", "--filter"}},
		{[]string{"--help"}, []string{"COMMANDS:"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := runHelp(t, "warren", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("%v: no %q in\n%s", tc.args, w, out)
				}
			}
		})
	}
	if _, err := runHelp(t, "warren", "help", "servce"); err == nil || !strings.Contains(friendly(err), `did you mean "service"?`) {
		t.Errorf("help servce: %v, want a suggestion", err)
	}
}

func runHelp(t *testing.T, argv0 string, args ...string) (string, error) {
	t.Helper()
	var b bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &b, io.Discard
	err := app.Run(append([]string{argv0}, args...))
	return b.String(), err
}

// TestInvokedAsWrn: called as wrn, help, usage and errors say wrn.
func TestInvokedAsWrn(t *testing.T) {
	saved := os.Args[0]
	os.Args[0] = "/usr/local/bin/wrn"
	t.Cleanup(func() { os.Args[0] = saved })
	for _, args := range [][]string{{"--help"}, {"help", "service"}, {"service", "create", "--help"}, {"node", "ps", "--help"}} {
		out, err := runHelp(t, "wrn", args...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "warren ") {
			t.Errorf("wrn %v prints warren:\n%s", args, out)
		}
		if !strings.Contains(out, "wrn ") {
			t.Errorf("wrn %v does not name wrn:\n%s", args, out)
		}
	}
	dir := t.TempDir()
	for args, want := range map[string]string{
		"service create web": "`wrn service create --name NAME IMAGE [CMD...]`",
		"service ls --bogus": "see `wrn service list --help`",
		"service ls":         "run `wrn cluster init` on this machine",
		"node ps a b":        "`wrn node ps [NODE]`",
		"service scale":      "`wrn service scale NAME=REPLICAS`",
	} {
		got := runNoCluster(t, dir, strings.Fields(args)...)
		if !strings.Contains(got, want) || strings.Contains(got, "warren ") {
			t.Errorf("wrn %s: %q, want it to contain %q and no `warren `", args, got, want)
		}
	}
}
