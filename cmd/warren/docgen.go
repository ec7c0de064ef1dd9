package main

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// cliReference renders the command reference (docs/reference/cli.md) from
// the app itself, so the page cannot drift from the binary: TestCLIReference
// fails when the file differs and rewrites it with -update.
func cliReference(app *cli.App) []byte {
	var b bytes.Buffer
	b.WriteString("# Warren command reference\n\n")
	b.WriteString("<!-- Generated from the CLI by `go test ./cmd/warren -run TestCLIReference -update`; do not edit by hand. -->\n\n")
	b.WriteString("Every command, its arguments and its flags, as `warren --help` shows them. ")
	b.WriteString("[cli.md](../cli.md) explains the conventions (output formats, failover, flag order); ")
	b.WriteString("`wrn` is the same binary under a shorter name.\n\n")
	b.WriteString("## Commands\n\n")
	var index func(prefix string, cmds []*cli.Command, depth int)
	index = func(prefix string, cmds []*cli.Command, depth int) {
		for _, c := range visible(cmds) {
			path := prefix + " " + c.Name
			fmt.Fprintf(&b, "%s- [`%s`](#%s) — %s\n", strings.Repeat("  ", depth), path, anchor(path), oneLine(c.Usage))
			index(path, c.Subcommands, depth+1)
		}
	}
	index("warren", app.Commands, 0)
	b.WriteString("\n## Global options\n\n")
	b.WriteString("They go before the command: `warren --manager 10.0.0.5:4280 service ls`.\n\n")
	flagTable(&b, app.Flags)
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range visible(cmds) {
			path := prefix + " " + c.Name
			fmt.Fprintf(&b, "\n## %s\n\n", path)
			if c.Usage != "" {
				b.WriteString(strings.TrimSpace(c.Usage) + "\n\n")
			}
			usage := path
			if len(visible(c.Subcommands)) > 0 {
				usage += " COMMAND"
			}
			if len(visibleFlags(c.Flags)) > 0 {
				usage += " [options]"
			}
			if c.ArgsUsage != "" {
				usage += " " + c.ArgsUsage
			}
			if c.UsageText != "" {
				usage = strings.TrimSpace(c.UsageText)
			}
			fmt.Fprintf(&b, "```\n%s\n```\n\n", usage)
			if len(c.Aliases) > 0 {
				fmt.Fprintf(&b, "Aliases: `%s`.\n\n", strings.Join(c.Aliases, "`, `"))
			}
			if d := strings.TrimSpace(c.Description); d != "" {
				b.WriteString(d + "\n\n")
			}
			if subs := visible(c.Subcommands); len(subs) > 0 {
				b.WriteString("| command | what it does |\n|---|---|\n")
				for _, s := range subs {
					fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", s.Name, anchor(path+" "+s.Name), cell(s.Usage))
				}
				b.WriteString("\n")
			}
			flagTable(&b, c.Flags)
			walk(path, c.Subcommands)
		}
	}
	walk("warren", app.Commands)
	return bytes.ReplaceAll(b.Bytes(), []byte("\n\n\n"), []byte("\n\n"))
}

func visible(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if !c.Hidden && !strings.HasPrefix(c.Name, "_") {
			out = append(out, c)
		}
	}
	return out
}

func visibleFlags(flags []cli.Flag) []cli.DocGenerationFlag {
	var out []cli.DocGenerationFlag
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		if d, ok := f.(cli.DocGenerationFlag); ok {
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Names()[0] < out[j].Names()[0] })
	return out
}

func flagTable(b *bytes.Buffer, flags []cli.Flag) {
	fs := visibleFlags(flags)
	if len(fs) == 0 {
		return
	}
	b.WriteString("| flag | default | env | meaning |\n|---|---|---|---|\n")
	for _, f := range fs {
		var names []string
		for _, n := range f.Names() {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			name := dash + n
			if f.TakesValue() {
				name += " " + valueName(f)
			}
			names = append(names, "`"+name+"`")
		}
		if s, ok := f.(cli.DocGenerationSliceFlag); ok && s.IsSliceFlag() {
			names[len(names)-1] += " (repeatable)"
		}
		var env []string
		for _, e := range f.GetEnvVars() {
			env = append(env, "`"+e+"`")
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", strings.Join(names, ", "), cell(defaultOf(f)), strings.Join(env, " "), cell(f.GetUsage()))
	}
	b.WriteString("\n")
}

// defaultOf is the flag's default as a reader of the docs should see it:
// not this machine's home directory or environment.
func defaultOf(f cli.DocGenerationFlag) string {
	if !f.TakesValue() {
		return ""
	}
	d := strings.Trim(f.GetDefaultText(), `"`)
	if home, err := os.UserHomeDir(); err == nil && home != "" && strings.HasPrefix(d, home) {
		d = "$HOME" + strings.TrimPrefix(d, home)
	}
	for _, e := range f.GetEnvVars() {
		if v := os.Getenv(e); v != "" && d == v {
			d = "" // the value came from this machine's environment
		}
	}
	if d == "" {
		return ""
	}
	return "`" + d + "`"
}

func valueName(f cli.DocGenerationFlag) string {
	switch f.(type) {
	case *cli.DurationFlag:
		return "DURATION"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag, *cli.Float64Flag:
		return "N"
	}
	return "VALUE"
}

func anchor(s string) string { return strings.ReplaceAll(strings.ToLower(s), " ", "-") }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func cell(s string) string { return strings.ReplaceAll(oneLine(s), "|", `\|`) }
