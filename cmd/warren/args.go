package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed moves a leaf command's flags before its positional
// arguments, so `warren service create web --image demo:v1` parses like
// Docker's CLI does; urfave/cli stops at the first positional otherwise.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	cmds, flags := app.Commands, app.Flags
	i := 1
	// Global flags and the command path.
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		c := find(cmds, a)
		if c == nil {
			break
		}
		out = append(out, a)
		i++
		if len(c.Subcommands) == 0 {
			flags = c.Flags
			cmds = nil
			break
		}
		cmds, flags = c.Subcommands, c.Flags
	}
	if cmds != nil { // not at a leaf: leave the rest to urfave's errors
		return append(out, args[i:]...)
	}
	var pos []string
	// Docker's order, `service create --name web IMAGE [CMD...]`: once
	// --name came before the image, everything after the image is the
	// command, flags included (sh -c, nginx -g ...), as in Docker.
	dockerOrder := len(out) >= 3 && out[len(out)-2] == "service" && out[len(out)-1] == "create"
	named := false
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case dockerOrder && named && !strings.HasPrefix(a, "-"):
			pos = append(pos, args[i:]...)
			i = len(args)
		case a == "--name" || strings.HasPrefix(a, "--name="):
			named = len(pos) == 0
			out = append(out, a)
			if a == "--name" && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}

func find(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether flag arg (e.g. "--image", "-o") needs the next
// argument as its value.
func takesValue(flags []cli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	name := strings.TrimLeft(arg, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if _, ok := f.(*cli.BoolFlag); ok {
				return false
			}
			return true
		}
	}
	return false
}
