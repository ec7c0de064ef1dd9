package messages

import (
	"slices"
	"strings"
	"testing"
)

func TestNormalizeCapability(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "NET_ADMIN", want: "CAP_NET_ADMIN"},
		{in: "net_admin", want: "CAP_NET_ADMIN"},
		{in: "CAP_NET_ADMIN", want: "CAP_NET_ADMIN"},
		{in: "cap_sys_ptrace", want: "CAP_SYS_PTRACE"},
		{in: " chown ", want: "CAP_CHOWN"},
		{in: "all", want: "ALL"},
		{in: "CAP_CHECKPOINT_RESTORE", want: "CAP_CHECKPOINT_RESTORE"},
		{in: "NET_ADMINS", wantErr: true},
		{in: "CAP_ALL", wantErr: true},
		{in: "", wantErr: true},
		{in: "CAP_", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeCapability(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NormalizeCapability(%q) = %q; want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "man 7 capabilities") {
					t.Errorf("error %q does not say where to find valid names", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeCapability(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	if n := len(Capabilities()); n != 41 {
		t.Errorf("know %d capabilities, want the 41 of Linux 5.9", n)
	}
	got, err := NormalizeCapabilities([]string{"net_raw", "CAP_NET_RAW", "kill"})
	if err != nil || !slices.Equal(got, []string{"CAP_NET_RAW", "CAP_KILL"}) {
		t.Errorf("NormalizeCapabilities = %q, %v; want repeats dropped", got, err)
	}
}

func TestValidateIsolation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*ServiceSpec)
		wantErr string // substring; "" means valid
	}{
		{name: "defaults", mutate: func(*ServiceSpec) {}},
		{name: "caps", mutate: func(s *ServiceSpec) {
			s.CapAdd, s.CapDrop = []string{"NET_ADMIN", "cap_sys_ptrace"}, []string{"CAP_NET_RAW", "mknod"}
		}},
		{name: "drop all add one", mutate: func(s *ServiceSpec) {
			s.CapAdd, s.CapDrop = []string{"NET_BIND_SERVICE"}, []string{"ALL"}
		}},
		{name: "pids limit", mutate: func(s *ServiceSpec) { s.PidsLimit = 100 }},
		{name: "pids unlimited", mutate: func(s *ServiceSpec) { s.PidsLimit = -1 }},
		{name: "pids max", mutate: func(s *ServiceSpec) { s.PidsLimit = MaxPidsLimit }},
		{name: "seccomp default", mutate: func(s *ServiceSpec) { s.Seccomp = "default" }},
		{name: "seccomp unconfined", mutate: func(s *ServiceSpec) { s.Seccomp = "unconfined" }},
		{name: "unknown cap add", mutate: func(s *ServiceSpec) { s.CapAdd = []string{"NET_ADMINS"} }, wantErr: "--cap-add: unknown capability \"NET_ADMINS\""},
		{name: "unknown cap drop", mutate: func(s *ServiceSpec) { s.CapDrop = []string{"FLY"} }, wantErr: "--cap-drop: unknown capability"},
		{name: "add all", mutate: func(s *ServiceSpec) { s.CapAdd = []string{"all"} }, wantErr: "--cap-add ALL is not supported"},
		{name: "added and dropped", mutate: func(s *ServiceSpec) {
			s.CapAdd, s.CapDrop = []string{"NET_RAW"}, []string{"CAP_NET_RAW"}
		}, wantErr: "both added and dropped"},
		{name: "pids below -1", mutate: func(s *ServiceSpec) { s.PidsLimit = -2 }, wantErr: "invalid pids limit -2"},
		{name: "pids huge", mutate: func(s *ServiceSpec) { s.PidsLimit = MaxPidsLimit + 1 }, wantErr: "invalid pids limit"},
		{name: "seccomp profile path", mutate: func(s *ServiceSpec) { s.Seccomp = "/etc/profile.json" }, wantErr: "invalid seccomp setting"},
		{name: "seccomp case", mutate: func(s *ServiceSpec) { s.Seccomp = "Unconfined" }, wantErr: "invalid seccomp setting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1}
			tt.mutate(s)
			err := ValidateServiceSpec(s)
			wantValidation(t, err, tt.wantErr)
		})
	}
}
