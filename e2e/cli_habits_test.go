package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/messages"
)

// TestCLIHabits is issue 14's point 6 on a real node: Docker's order and
// long -p syntax create a service; -q, --filter and --format read it
// back; inspect --pretty and --format show it; the bash completion
// script, sourced in a real bash, completes the node's service and node
// names by asking the node; wrn works as warren.
func TestCLIHabits(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 1, Bin: warrenBin})
	n := h.Hosts[0]
	must(t, n.StartAndWait(90*time.Second))
	cli(t, n, "image", "import", demoV1)
	cli(t, n, "service", "create", "--name", "web", "--replicas", "2", "-p", "published=8080,target=80", "--label", "team=edge", "demo:v1")
	cli(t, n, "service", "create", "api", "--image", "demo:v1")
	waitRunning(t, n, "web", 2)
	waitRunning(t, n, "api", 1)

	lines := func(s string) []string {
		l := strings.Fields(s)
		slices.Sort(l)
		return l
	}
	t.Run("lists: -q, --filter, --format", func(t *testing.T) {
		if got := lines(cli(t, n, "service", "ls", "-q")); !slices.Equal(got, []string{"api", "web"}) {
			t.Errorf("service ls -q: %q", got)
		}
		if got := cli(t, n, "service", "ls", "--filter", "label=team=edge", "--format", "{{.Name}} {{.Replicas}} {{.Ports}}"); got != "web 2/2 *:8080->80/tcp\n" {
			t.Errorf("service ls --filter label=team=edge --format: %q", got)
		}
		if got := lines(cli(t, n, "service", "ps", "web", "-q", "--filter", "state=running")); len(got) != 2 {
			t.Errorf("service ps web -q --filter state=running: %q", got)
		}
		host := strings.TrimSpace(cli(t, n, "node", "ls", "--format", "{{.Hostname}}"))
		if got := lines(cli(t, n, "node", "ps", host, "-q", "--filter", "service=web")); len(got) != 2 {
			t.Errorf("node ps %s -q --filter service=web: %q", host, got)
		}
		if _, _, err := n.CLI("service", "ls", "--filter", "colour=red"); err == nil || !strings.Contains(err.Error(), `unknown key "colour"`) {
			t.Errorf("a bad filter key: %v", err)
		}
	})

	t.Run("inspect: --pretty, --format, -o json", func(t *testing.T) {
		if got := cli(t, n, "service", "inspect", "web", "--pretty"); !strings.Contains(got, "8080 -> 80/tcp") || !strings.Contains(got, "team=edge") {
			t.Errorf("inspect --pretty:\n%s", got)
		}
		if got := cli(t, n, "service", "inspect", "web", "--format", "{{.Spec.Image}} {{.Spec.Replicas}}"); got != "demo:v1 2\n" {
			t.Errorf("inspect --format: %q", got)
		}
		svc := &messages.Service{}
		must(t, protojson.Unmarshal([]byte(cli(t, n, "service", "inspect", "web", "-o", "json")), svc))
		if p := svc.GetSpec().GetPorts(); len(p) != 1 || p[0].PublishedPort != 8080 || p[0].TargetPort != 80 {
			t.Errorf("ports from the long -p syntax: %v", p)
		}
	})

	// The CLI on PATH as warren and wrn, as a user installs it.
	bin := t.TempDir()
	for _, name := range []string{"warren", "wrn"} {
		must(t, os.Symlink(warrenBin, filepath.Join(bin, name)))
	}
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "WARREN_CONFIG_DIR="+n.ConfigDir)

	t.Run("bash completion completes names from the cluster", func(t *testing.T) {
		script := `source <(warren completion bash) || exit 1
complete -p warren
try() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _warren_complete; echo "$* => $(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')"; }
try warren service inspect ""
try wrn service ps w
try warren service scale a
try warren node ps ""
`
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		must(t, err)
		host := strings.TrimSpace(cli(t, n, "node", "ls", "--format", "{{.Hostname}}"))
		for _, want := range []string{
			"complete -o default -F _warren_complete warren",
			"warren service inspect  => api web \n",
			"wrn service ps w => web \n",
			"warren service scale a => api= \n",
			"warren node ps  => " + host + " \n",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
	})

	t.Run("wrn is warren", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(bin, "wrn"), "service", "ls", "-q")
		cmd.Env = env
		out, err := cmd.Output()
		must(t, err)
		if got := lines(string(out)); !slices.Equal(got, []string{"api", "web"}) {
			t.Errorf("wrn service ls -q: %q", got)
		}
		cmd = exec.Command(filepath.Join(bin, "wrn"), "service", "create", "web2")
		cmd.Env = env
		msg, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(msg), "`wrn service create --name NAME IMAGE [CMD...]`") || strings.Contains(string(msg), "warren ") {
			t.Errorf("wrn service create web2: %v: %s", err, msg)
		}
	})
}
