package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
)

// auditFixture: a write, a failed write, a write forwarded by a follower
// (recorded where it arrived), a refusal by the transport and one by the
// api, and a long error message.
var auditFixture = []*messages.AuditEntry{
	{Seq: 1, UnixNano: ns(3 * time.Hour), User: "admin", Role: "admin", Manager: "mgr-1", Request: "CreateServiceRequest", Actor: "manager/api", Target: "web", DurationMs: 41},
	{Seq: 2, UnixNano: ns(2 * time.Hour), User: "admin", Role: "admin", Manager: "mgr-2", Request: "ScaleServiceRequest", Actor: "manager/api", Target: "web=5"},
	{Seq: 3, UnixNano: ns(time.Hour), User: "ops", Role: "admin", Manager: "mgr-2", Request: "DeleteServiceRequest", Actor: "manager/api", Target: "nope",
		Code: "NOT_FOUND", Message: `service "nope" not found: list them with ` + "`warren service ls`"},
	{Seq: 4, UnixNano: ns(time.Minute), User: "wrk-1", Role: "worker", Manager: "mgr-1", Request: "RemoveNodeRequest", Actor: "manager/api",
		Code: "PERMISSION_DENIED", Denied: true, RefusedBy: "transport", Message: `worker "wrk-1" may not send warren.v1.RemoveNodeRequest to manager/api: the connection was cut`},
	{Seq: 5, UnixNano: ns(time.Second), User: "wrk-1", Role: "worker", Manager: "mgr-1", Request: "Propose", Actor: "manager/store",
		Code: "PERMISSION_DENIED", Denied: true, RefusedBy: "transport"},
	{Seq: 6, UnixNano: ns(0), User: "local", Role: "local", Manager: "mgr-3", Request: "PullImageRequest", Actor: "manager/api", Target: "registry.local:5000/team/agent:1.2",
		Code: "UNAVAILABLE", Message: strings.Repeat("registry unreachable; ", 10)},
}

func TestRenderAuditGolden(t *testing.T) {
	cases := []struct {
		name string
		es   []*messages.AuditEntry
		json bool
	}{
		{"audit", auditFixture, false},
		{"audit_empty", nil, false},
		{"audit_json", auditFixture[2:4], true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			var err error
			if tc.json {
				err = renderAuditJSON(&buf, tc.es)
			} else {
				err = renderAudit(&buf, tc.es, time.UTC)
			}
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, buf.Bytes())
		})
	}
}

// TestAuditFlagsNeedNoCluster: a bad flag is refused before any connection
// (here there is no cluster configured at all).
func TestAuditFlagsNeedNoCluster(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--since", "yesterday"}, `--since "yesterday": give a duration back from now`},
		{[]string{"--tail", "-1"}, "invalid --tail"},
		{[]string{"-o", "yaml"}, "unknown output format"},
		{[]string{"web"}, "takes no arguments"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			app := newApp()
			args := append([]string{"warren", "--config-dir", t.TempDir(), "audit", "ls"}, tc.args...)
			err := app.Run(args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
