package main

// Golden tests of the habits a Docker user brings (issue 14, point 6),
// each run through the real app with no cluster configured: a bad flag is
// reported as such, and a good command line gets as far as dialing.

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/warrenorch/warren/messages"
)

// runNoCluster runs the real app, real actions included, against an
// empty config dir, and returns what a user would see on stderr.
func runNoCluster(t *testing.T, dir string, args ...string) string {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	err := app.Run(interspersed(app, append([]string{"warren", "--config-dir", dir}, args...)))
	if err == nil {
		return "(no error)"
	}
	return strings.ReplaceAll("Error: "+asInvoked(friendly(err)), dir, "$CONFIG")
}

func TestHabitsWithNoCluster(t *testing.T) {
	dir := t.TempDir()
	cases := [][]string{
		// Flags are checked before any connection.
		{"service", "create", "--name", "web", "-p", "99999:80", "demo:v1"},
		{"service", "create", "--name", "web", "-p", "published=8080", "demo:v1"},
		{"service", "create", "--name", "web", "-p", "published=8080,target=80,mode=host", "demo:v1"},
		{"service", "create", "--name", "web", "-p", "published=8080,target=80,colour=red", "demo:v1"},
		{"service", "create", "--name", "web", "--health-cmd", "http example.com", "demo:v1"},
		{"service", "create", "--name", "web", "--entrypoint", "/bin/app 'unterminated", "demo:v1"},
		{"service", "create", "--name", "web", "--limit-memory", "lots", "demo:v1"},
		{"service", "create", "--name", "web", "--replicas", "-2", "demo:v1"},
		{"service", "create", "--name", "web"},
		{"service", "create", "web"},
		{"service", "create", "--name", "web", "-o", "yaml", "demo:v1"},
		{"service", "update", "web"},
		{"service", "scale", "web=lots"},
		{"service", "ls", "--filter", "colour=red"},
		{"service", "ls", "--filter", "name"},
		{"service", "ls", "--format", "{{.Nope}}"},
		{"service", "ls", "-q", "-o", "json"},
		{"service", "ps", "web", "--filter", "state=running", "--filter", "bogus=1"},
		{"service", "inspect", "web", "--pretty", "--format", "{{.Id}}"},
		{"node", "ls", "-o", "yaml"},
		{"node", "update", "n1", "--availability", "gone"},
		{"node", "update", "n1"},
		{"cluster", "join-token", "boss"},
		{"image", "import", "/no/such/file.tar"},
		{"completion", "tcsh"},
		// Unknown commands suggest the nearest.
		{"servce", "ls"},
		{"service", "crate", "--name", "web", "demo:v1"},
		// Good command lines: checked, then they need the cluster.
		{"service", "create", "--name", "web", "-p", "published=8080,target=80,protocol=udp", "--health-cmd", "curl -f http://localhost/ || exit 1", "demo:v1", "sh", "-c", "echo hi"},
		{"service", "create", "web", "--image", "demo:v1", "-p", "8080:80/udp"},
		{"service", "ls", "--filter", "label=team=edge", "--format", "table {{.Name}}\\t{{.Replicas}}"},
	}
	var b bytes.Buffer
	for _, args := range cases {
		fmt.Fprintf(&b, "$ warren %s\n%s\n\n", shellJoin(args), runNoCluster(t, dir, args...))
	}
	golden(t, "habits_no_cluster", b.Bytes())
}

// TestHabitsSpecs shows the spec each habit builds, as `service inspect
// --pretty` prints it.
func TestHabitsSpecs(t *testing.T) {
	cases := []struct {
		name string
		args []string
	}{
		{"Docker's order, command with its own flags", []string{"--name", "web", "--replicas", "2", "demo:v1", "sh", "-c", "echo hi && sleep 1d"}},
		{"Warren's order", []string{"web", "--image", "demo:v1", "--", "--port", "80"}},
		{"long -p syntax beside the short one", []string{"--name", "dns", "-p", "published=5353,target=53,protocol=udp,mode=ingress", "-p", "8080:80", "-p", "name=metrics,target=9100", "demo:v1"}},
		{"shell-form health command", []string{"--name", "web", "-p", "8080:80", "--health-cmd", "curl -f http://localhost/ || exit 1", "--health-interval", "5s", "demo:v1"}},
		{"CMD-SHELL forces a shell command", []string{"--name", "web", "--health-cmd", "CMD-SHELL http --check localhost", "demo:v1"}},
		{"the mini-language still works", []string{"--name", "web", "-p", "8080:80", "--health-cmd", "http GET /healthz", "demo:v1"}},
		{"exec health check split with shell quoting", []string{"--name", "web", "--health-cmd", `exec /bin/check --path "/var/run/my app.sock"`, "demo:v1"}},
		{"none: no health check", []string{"--name", "web", "--health-cmd", "none", "demo:v1"}},
		{"entrypoint split with shell quoting", []string{"--name", "web", "--entrypoint", `/bin/app --config "/etc/my app.conf" --name='a b'`, "demo:v1"}},
	}
	var b bytes.Buffer
	for _, tc := range cases {
		s, err := runCreate(t, tc.args)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		fmt.Fprintf(&b, "# %s\n$ warren service create %s\n", tc.name, shellJoin(tc.args))
		if err := renderService(&b, serviceOf(s)); err != nil {
			t.Fatal(err)
		}
		b.WriteString("\n")
	}
	golden(t, "habits_specs", b.Bytes())
}

// serviceOf is a freshly created service of spec s.
func serviceOf(s *messages.ServiceSpec) *messages.Service {
	return &messages.Service{Id: "9e8d7c6b5a4f3e2d1c0b9a8f", Meta: &messages.Meta{Version: 1}, Spec: s, SpecVersion: 1}
}
