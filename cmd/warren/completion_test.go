package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCompleteWords walks the real command tree; the cluster lookup, the
// edge, is a fake that names what was asked for.
func TestCompleteWords(t *testing.T) {
	var asked []string
	names := func(w completion, kind string) []string {
		asked = append(asked, kind+"@"+w.configDir)
		switch kind {
		case "service":
			return []string{"web", "api", "worker"}
		case "service=":
			return []string{"web=", "api="}
		case "node":
			return []string{"edge-1", "edge-2"}
		}
		return nil
	}
	cases := []struct {
		words string // split on spaces; the last is the word under the cursor ("." for empty)
		want  []string
		asked string // the lookup made, if any
	}{
		{".", []string{"cluster", "service", "task", "node", "image", "events", "audit", "version", "help", "completion"}, ""},
		{"se", []string{"service"}, ""},
		{"service .", []string{"create", "list", "inspect", "ps", "scale", "delete", "update", "promote", "rollback", "pause", "resume", "deployment", "logs"}, ""},
		{"service ins", []string{"inspect"}, ""},
		{"service inspect .", []string{"web", "api", "worker"}, "service@"},
		{"service inspect w", []string{"web", "worker"}, "service@"},
		{"--config-dir /etc/w service rm .", []string{"web", "api", "worker"}, "service@/etc/w"},
		{"service ls -o json service ps .", nil, ""}, // ps here is a positional of ls: nothing to offer
		{"service scale .", []string{"web=", "api="}, "service=@"},
		{"node ps e", []string{"edge-1", "edge-2"}, "node@"},
		{"service create --mo", []string{"--mode"}, ""},
		{"service create --mode .", []string{"replicated", "global"}, ""},
		{"service ls -o .", []string{"table", "json"}, ""},
		{"service ls --filter .", []string{"id=", "name=", "label=", "mode="}, ""},
		{"node update x --availability d", []string{"drain"}, ""},
		{"cluster join-token .", []string{"worker", "manager"}, ""},
		{"completion .", []string{"bash", "zsh", "fish"}, ""},
		{"help serv", []string{"service"}, ""},
		{"help service cr", []string{"create"}, ""},
		{"help service create .", nil, ""},
		{"service create .", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.words, func(t *testing.T) {
			words := strings.Fields(tc.words)
			if words[len(words)-1] == "." {
				words[len(words)-1] = ""
			}
			asked = nil
			got := completeWords(newApp(), words, names)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("%q: %q lacks %q", tc.words, got, w)
				}
			}
			if tc.want == nil && len(got) > 0 {
				t.Errorf("%q: %q, want nothing", tc.words, got)
			}
			if strings.Join(asked, ",") != tc.asked {
				t.Errorf("%q: looked up %q, want %q", tc.words, asked, tc.asked)
			}
			if slices.Contains(got, "__complete") || slices.Contains(got, "debug") {
				t.Errorf("%q: hidden commands offered: %q", tc.words, got)
			}
		})
	}
}

// TestCompletionScriptsParse checks each script with its shell's syntax
// check (zsh and fish are skipped where not installed).
func TestCompletionScriptsParse(t *testing.T) {
	checks := map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}}
	for shell, argv := range checks {
		t.Run(shell, func(t *testing.T) {
			if _, err := exec.LookPath(argv[0]); err != nil {
				t.Skipf("%s is not installed", argv[0])
			}
			f := filepath.Join(t.TempDir(), "warren."+shell)
			if err := os.WriteFile(f, []byte(completionScripts[shell]), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(argv[0], append(argv[1:], f)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
			}
		})
	}
}

// cliOnPath puts this test binary on PATH as `warren` and `wrn`, running
// as the CLI (see TestMain), with an empty config dir: no cluster.
func cliOnPath(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, name := range []string{"warren", "wrn"} {
		if err := os.Symlink(exe, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	return append(os.Environ(), "WARREN_TEST_AS_CLI=1", "PATH="+bin+":"+os.Getenv("PATH"), "WARREN_CONFIG_DIR="+t.TempDir())
}

// TestBashCompletionRuns sources the script in bash, checks that complete
// -p shows it registered, and calls the completion function as bash
// would on TAB. Names need a cluster (e2e TestCLIHabits); with none, a
// name completion offers nothing, quickly.
func TestBashCompletionRuns(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	env := cliOnPath(t)
	script := `source <(warren completion bash) || exit 1
complete -p warren
complete -p wrn
try() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _warren_complete; echo "$* => ${COMPREPLY[*]}"; }
try warren service ""
try wrn node ls --f
try warren service create --mode g
try warren service inspect ""
`
	start := time.Now()
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	for _, want := range []string{
		"complete -o default -F _warren_complete warren",
		"complete -o default -F _warren_complete wrn",
		"warren service  => create list inspect",
		"wrn node ls --f => --filter --format",
		"warren service create --mode g => global",
		"warren service inspect  => \n",
	} {
		if !strings.Contains(string(out)+"\n", want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if d := time.Since(start); d > 3*completeTimeout {
		t.Errorf("completion with no cluster took %s", d)
	}
}

// TestFishCompletionRuns loads the fish script and asks fish itself to
// complete command lines (complete -C), as it does on TAB.
func TestFishCompletionRuns(t *testing.T) {
	if _, err := exec.LookPath("fish"); err != nil {
		t.Skip("fish is not installed")
	}
	cmd := exec.Command("fish", "-c", `warren completion fish | source; complete -C "warren service "; echo ---; complete -C "wrn service create --mo"`)
	cmd.Env = cliOnPath(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fish: %v\n%s", err, out)
	}
	before, after, _ := strings.Cut(string(out), "---\n")
	for _, w := range []string{"create", "inspect", "ps", "scale"} {
		if !slices.Contains(strings.Fields(before), w) {
			t.Errorf("warren service <TAB> in fish: no %q in %q", w, before)
		}
	}
	if strings.TrimSpace(after) != "--mode" {
		t.Errorf("wrn service create --mo<TAB> in fish: %q, want --mode", after)
	}
}
