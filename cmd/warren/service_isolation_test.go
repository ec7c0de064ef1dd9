package main

import (
	"slices"
	"strings"
	"testing"
)

func TestIsolationFlags(t *testing.T) {
	cases := []struct {
		name              string
		args              []string
		wantAdd, wantDrop []string
		wantPids          int64
		wantSeccomp       string
		wantErr           string
	}{
		{name: "defaults", args: nil},
		{
			name:    "docker spellings normalized",
			args:    []string{"--cap-add", "net_admin", "--cap-add", "CAP_SYS_PTRACE", "--cap-drop", "all", "--pids-limit", "100", "--seccomp", "unconfined"},
			wantAdd: []string{"CAP_NET_ADMIN", "CAP_SYS_PTRACE"}, wantDrop: []string{"ALL"}, wantPids: 100, wantSeccomp: "unconfined",
		},
		{name: "unlimited pids", args: []string{"--pids-limit", "-1"}, wantPids: -1},
		{name: "unknown capability", args: []string{"--cap-add", "NET_ADMINS"}, wantErr: `invalid --cap-add: unknown capability "NET_ADMINS": use a name from ` + "`man 7 capabilities`"},
		{name: "unknown drop", args: []string{"--cap-drop", "FLY"}, wantErr: "invalid --cap-drop"},
		{name: "add all", args: []string{"--cap-add", "ALL"}, wantErr: "--cap-add ALL is not supported"},
		{name: "bad pids", args: []string{"--pids-limit", "-5"}, wantErr: "invalid pids limit -5"},
		{name: "bad seccomp", args: []string{"--seccomp", "/tmp/p.json"}, wantErr: "invalid seccomp setting"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := runCreate(t, append([]string{"web", "--image", "demo:v1"}, tc.args...))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.CapAdd, tc.wantAdd) || !slices.Equal(s.CapDrop, tc.wantDrop) || s.PidsLimit != tc.wantPids || s.Seccomp != tc.wantSeccomp {
				t.Fatalf("spec cap_add %q cap_drop %q pids_limit %d seccomp %q; want %q %q %d %q",
					s.CapAdd, s.CapDrop, s.PidsLimit, s.Seccomp, tc.wantAdd, tc.wantDrop, tc.wantPids, tc.wantSeccomp)
			}
		})
	}
}
