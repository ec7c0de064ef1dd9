package main

// Shell completion: `warren completion bash|zsh|fish` prints a script that
// asks the binary itself (the hidden `__complete` command) for the words
// that may come next: commands, flags, flag values, and the names of
// services, nodes and tasks, read from the cluster with a short timeout
// (nothing is offered when it does not answer).

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
)

// completeTimeout bounds the cluster lookups of a completion: a shell
// waiting on TAB must not hang on a cluster that is down.
const completeTimeout = 2 * time.Second

// argKinds says what the positional arguments of a command name. A kind
// ending in "=" is completed as NAME= (service scale).
var argKinds = map[string]string{
	"service inspect": "service", "service ps": "service", "service scale": "service=", "service delete": "service",
	"service update": "service", "service promote": "service", "service rollback": "service", "service pause": "service",
	"service resume": "service", "service deployment": "service", "service logs": "service",
	"node ps": "node", "node inspect": "node", "node update": "node", "node promote": "node", "node demote": "node", "node rm": "node",
	"task logs": "task", "task inspect": "task",
	"cluster join-token": "static:worker manager", "completion": "static:bash zsh fish",
}

// flagValues are the values a flag takes, where they are few.
var flagValues = map[string][]string{
	"output": {"table", "json"}, "mode": {"replicated", "global"}, "availability": {"active", "pause", "drain"},
	"restart-condition": {"any", "on-failure", "none"}, "update-order": {"stop-first", "start-first"},
	"strategy": {"rolling", "blue-green", "canary"}, "update-failure-action": {"rollback", "pause", "continue"},
	"switch-after": {"healthy", "manual"}, "seccomp": {"default", "unconfined"},
}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish (e.g. `source <(" + prog() + " completion bash)` in ~/.bashrc)",
		ArgsUsage: "bash|zsh|fish",
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "a shell: bash, zsh or fish"); err != nil {
				return err
			}
			s, ok := completionScripts[c.Args().First()]
			if !ok {
				return fmt.Errorf("no completion for shell %q: use bash, zsh or fish", c.Args().First())
			}
			_, err := fmt.Fprint(c.App.Writer, s)
			return err
		},
	}
}

// completeCommand is what the scripts call: `warren __complete -- WORD...`
// with the words after the program name, the last being the one under
// the cursor (maybe empty). It prints the candidates, one a line.
func completeCommand() *cli.Command {
	return &cli.Command{
		Name:            "__complete",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			words := c.Args().Slice()
			if len(words) > 0 && words[0] == "--" {
				words = words[1:]
			}
			for _, w := range completeWords(c.App, words, clusterNames) {
				fmt.Fprintln(c.App.Writer, w)
			}
			return nil
		},
	}
}

// completion is where the words before the cursor lead.
type completion struct {
	path      []string       // the command path, e.g. service inspect
	cmds      []*cli.Command // subcommands still possible (nil at a leaf)
	flags     []cli.Flag
	valueOf   string // the flag whose value is under the cursor
	configDir string
	managers  []string
}

func walkWords(app *cli.App, words []string) completion {
	w := completion{cmds: app.Commands, flags: app.Flags}
	top := true
	for i := 0; i < len(words); i++ {
		a := words[i]
		if strings.HasPrefix(a, "-") {
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			name = primaryName(w.flags, name)
			if !hasVal && takesValue(w.flags, a) {
				if i+1 == len(words) {
					w.valueOf = name
					break
				}
				val = words[i+1]
				i++
			}
			if top && name == "config-dir" {
				w.configDir = val
			} else if top && name == "manager" {
				w.managers = append(w.managers, val)
			}
			continue
		}
		if w.cmds == nil {
			continue // a positional argument
		}
		c := find(w.cmds, a)
		if c == nil {
			w.cmds = nil
			continue
		}
		top = false
		w.path, w.flags = append(w.path, c.Name), c.Flags
		w.cmds = c.Subcommands
		if len(c.Subcommands) == 0 {
			w.cmds = nil
		}
	}
	return w
}

// completeWords is the candidates for the last word, given the ones
// before; names looks up a kind of name in the cluster.
func completeWords(app *cli.App, words []string, names func(w completion, kind string) []string) []string {
	cur := ""
	if len(words) > 0 {
		cur, words = words[len(words)-1], words[:len(words)-1]
	}
	w := walkWords(app, words)
	if len(w.path) == 1 && w.path[0] == "help" && !strings.HasPrefix(cur, "-") {
		// help's arguments are a command path: `help service cr` -> create.
		i := slices.IndexFunc(words, func(s string) bool { return s == "help" || s == "h" })
		w = walkWords(app, words[i+1:])
		if w.cmds == nil {
			return nil
		}
		w.valueOf = ""
	}
	var cands []string
	switch {
	case w.valueOf != "":
		cands = flagValues[w.valueOf]
		if w.valueOf == "filter" {
			cands = filterKeys(strings.Join(w.path, " "))
		}
	case strings.HasPrefix(cur, "-"):
		for _, f := range w.flags {
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue
			}
			for _, n := range f.Names() {
				if len(n) == 1 {
					cands = append(cands, "-"+n)
				} else {
					cands = append(cands, "--"+n)
				}
			}
		}
		cands = append(cands, "--help")
	case w.cmds != nil:
		for _, c := range w.cmds {
			if !c.Hidden {
				cands = append(cands, c.Name)
			}
		}
	default:
		kind := argKinds[strings.Join(w.path, " ")]
		if s, ok := strings.CutPrefix(kind, "static:"); ok {
			cands = strings.Fields(s)
		} else if kind != "" {
			cands = names(w, kind)
		}
	}
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, cur) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func filterKeys(path string) []string {
	var keys []string
	switch path {
	case "service ls", "service list":
		keys = serviceFilters
	case "service ps", "node ps":
		keys = taskFilters
	case "node ls", "node list":
		keys = nodeFilters
	case "image ls", "image list":
		keys = imageFilters
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "="
	}
	return out
}

// clusterNames asks the cluster for the names of a kind; on any error it
// returns none, so a shell shows nothing rather than an error.
func clusterNames(w completion, kind string) []string {
	dir := w.configDir
	if dir == "" {
		dir = os.Getenv("WARREN_CONFIG_DIR")
	}
	managers := w.managers
	if len(managers) == 0 && os.Getenv("WARREN_MANAGER") != "" {
		managers = []string{os.Getenv("WARREN_MANAGER")}
	}
	cl, err := client.Dial(client.Options{ConfigDir: dir, Managers: managers, Timeout: completeTimeout})
	if err != nil {
		return nil
	}
	defer cl.Close()
	var out []string
	switch strings.TrimSuffix(kind, "=") {
	case "service":
		list, err := cl.ListServices()
		if err != nil {
			return nil
		}
		for _, s := range list {
			out = append(out, s.GetService().GetSpec().GetName())
		}
	case "node":
		nodes, err := cl.ListNodes()
		if err != nil {
			return nil
		}
		for _, n := range nodes {
			out = append(out, n.GetDescription().GetHostname())
		}
	case "task":
		tasks, err := cl.ListTasks("", "", true)
		if err != nil {
			return nil
		}
		for _, t := range tasks {
			out = append(out, t.Id)
		}
	}
	if strings.HasSuffix(kind, "=") {
		for i := range out {
			out[i] += "="
		}
	}
	return out
}

// primaryName is a flag's first name, given any of its names (-o: output).
func primaryName(flags []cli.Flag, name string) string {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f.Names()[0]
		}
	}
	return name
}
