package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestNormalizeImageRef(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "demo:v1", want: "docker.io/library/demo:v1"},
		{in: "demo", want: "docker.io/library/demo:latest"},
		{in: "acme/demo:v2", want: "docker.io/acme/demo:v2"},
		{in: "docker.io/library/demo:v1", want: "docker.io/library/demo:v1"},
		{in: "localhost:5000/demo:v1", want: "localhost:5000/demo:v1"},
		{in: "ghcr.io/acme/demo", want: "ghcr.io/acme/demo:latest"},
		{
			in:   "demo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			want: "docker.io/library/demo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		},
		{in: "", wantErr: true},
		{in: "  ", wantErr: true},
		{in: "Demo:v1", wantErr: true}, // repository names are lower case
		{in: "demo:v1:v2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeImageRef(tt.in)
			if tt.wantErr {
				if err == nil || !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("NormalizeImageRef(%q) = %q, %v; want an invalid-argument error", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeImageRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestValidateSpec(t *testing.T) {
	base := func() ContainerSpec { return ContainerSpec{ID: "web.1", Image: "demo:v1"} }
	tests := []struct {
		name    string
		mutate  func(*ContainerSpec)
		wantErr string // substring; "" means valid
	}{
		{name: "minimal", mutate: func(*ContainerSpec) {}},
		{name: "full", mutate: func(s *ContainerSpec) {
			s.Env = []string{"A=1", "B="}
			s.MemoryLimitBytes = 64 << 20
			s.CPUMillis = 500
			s.NetNSPath = "/run/netns/x"
			s.LogPath = "/var/log/warren/web.1.log"
			s.CgroupParent = "/warren-node1"
			s.WorkDir = "/srv"
			s.Labels = map[string]string{"warren.service": "web"}
			s.Mounts = []Mount{{Source: "/data", Target: "/data", ReadOnly: true}, {Type: "tmpfs", Target: "/scratch"}}
			s.ResolvConfPath = "/etc/resolv.conf"
		}},
		{name: "empty ID", mutate: func(s *ContainerSpec) { s.ID = "" }, wantErr: "invalid ID"},
		{name: "ID with slash", mutate: func(s *ContainerSpec) { s.ID = "a/b" }, wantErr: "invalid ID"},
		{name: "ID too long", mutate: func(s *ContainerSpec) { s.ID = strings.Repeat("a", 77) }, wantErr: "invalid ID"},
		{name: "no image", mutate: func(s *ContainerSpec) { s.Image = "" }, wantErr: "image reference is empty"},
		{name: "bad image", mutate: func(s *ContainerSpec) { s.Image = "UPPER:v1" }, wantErr: "not valid"},
		{name: "env without =", mutate: func(s *ContainerSpec) { s.Env = []string{"FOO"} }, wantErr: "KEY=VALUE"},
		{name: "env empty key", mutate: func(s *ContainerSpec) { s.Env = []string{"=x"} }, wantErr: "KEY=VALUE"},
		{name: "negative memory", mutate: func(s *ContainerSpec) { s.MemoryLimitBytes = -1 }, wantErr: "negative"},
		{name: "tiny memory", mutate: func(s *ContainerSpec) { s.MemoryLimitBytes = 1 << 20 }, wantErr: "6MiB"},
		{name: "negative cpu", mutate: func(s *ContainerSpec) { s.CPUMillis = -5 }, wantErr: "negative"},
		{name: "relative log", mutate: func(s *ContainerSpec) { s.LogPath = "logs/x" }, wantErr: "LogPath"},
		{name: "relative netns", mutate: func(s *ContainerSpec) { s.NetNSPath = "ns" }, wantErr: "NetNSPath"},
		{name: "relative cgroup parent", mutate: func(s *ContainerSpec) { s.CgroupParent = "warren" }, wantErr: "cgroup parent"},
		{name: "systemd cgroup parent", mutate: func(s *ContainerSpec) { s.CgroupParent = "/system.slice:warren:x" }, wantErr: "cgroup parent"},
		{name: "unclean cgroup parent", mutate: func(s *ContainerSpec) { s.CgroupParent = "/a/../b" }, wantErr: "cgroup parent"},
		{name: "reserved label", mutate: func(s *ContainerSpec) { s.Labels = map[string]string{labelLogPath: "x"} }, wantErr: "reserved"},
		{name: "containerd label", mutate: func(s *ContainerSpec) { s.Labels = map[string]string{"containerd.io/gc.root": "x"} }, wantErr: "reserved"},
		{name: "huge label", mutate: func(s *ContainerSpec) { s.Labels = map[string]string{"k": strings.Repeat("v", 5000)} }, wantErr: "label"},
		{name: "relative mount target", mutate: func(s *ContainerSpec) { s.Mounts = []Mount{{Source: "/a", Target: "data"}} }, wantErr: "target"},
		{name: "relative bind source", mutate: func(s *ContainerSpec) { s.Mounts = []Mount{{Source: "a", Target: "/data"}} }, wantErr: "bind source"},
		{name: "unknown mount type", mutate: func(s *ContainerSpec) { s.Mounts = []Mount{{Type: "nfs", Target: "/data"}} }, wantErr: "not supported"},
		{name: "long hostname", mutate: func(s *ContainerSpec) { s.Hostname = strings.Repeat("h", 65) }, wantErr: "hostname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.mutate(&s)
			got, err := s.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				if got.Image != "docker.io/library/demo:v1" {
					t.Errorf("image not normalized: %q", got.Image)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate accepted the spec; want error containing %q", tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestWithArgs(t *testing.T) {
	entry, cmd := []string{"/app"}, []string{"--listen", ":80"}
	tests := []struct {
		name          string
		entry, cmd    []string
		command, args []string
		want          []string
		wantErr       bool
	}{
		{name: "image defaults", entry: entry, cmd: cmd, want: []string{"/app", "--listen", ":80"}},
		{name: "args replace cmd", entry: entry, cmd: cmd, args: []string{"-x"}, want: []string{"/app", "-x"}},
		{name: "command drops cmd", entry: entry, cmd: cmd, command: []string{"/bin/sh"}, want: []string{"/bin/sh"}},
		{name: "command and args", entry: entry, cmd: cmd, command: []string{"/bin/sh"}, args: []string{"-c", "true"}, want: []string{"/bin/sh", "-c", "true"}},
		{name: "cmd only image", cmd: []string{"/bin/true"}, want: []string{"/bin/true"}},
		{name: "nothing to run", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &oci.Spec{Process: &specs.Process{}}
			err := withArgs(tt.entry, tt.cmd, tt.command, tt.args)(context.Background(), nil, nil, s)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want error, got args %q", s.Process.Args)
				}
				return
			}
			if err != nil || !slices.Equal(s.Process.Args, tt.want) {
				t.Fatalf("args = %q, %v; want %q", s.Process.Args, err, tt.want)
			}
		})
	}
}

func TestOCIMounts(t *testing.T) {
	got := ociMounts(ContainerSpec{
		Mounts: []Mount{
			{Source: "/srv/data", Target: "/data", ReadOnly: true},
			{Type: "tmpfs", Target: "/scratch"},
		},
		ResolvConfPath: "/run/warren/resolv.conf",
	})
	want := []specs.Mount{
		{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "rw"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: "/run/warren/resolv.conf", Options: []string{"rbind", "rprivate", "ro"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Destination != want[i].Destination || got[i].Type != want[i].Type ||
			got[i].Source != want[i].Source || !slices.Equal(got[i].Options, want[i].Options) {
			t.Errorf("mount %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestRemoveCgroup(t *testing.T) {
	// A fake v1 layout; rmdir on a plain directory behaves like on cgroupfs
	// once it is empty.
	old := cgroupRoot
	cgroupRoot = t.TempDir()
	defer func() { cgroupRoot = old }()
	for _, d := range []string{"memory/warren-node1/web/sub", "memory/warren-node1/other", "cpu/warren-node1/web"} {
		if err := os.MkdirAll(filepath.Join(cgroupRoot, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Paths that are not the container's own leaf must never be touched.
	for _, p := range []string{"", "/", "/warren-node1", "/warren-node1/other", "warren-node1:web:x"} {
		if err := removeCgroup(p, "web"); err != nil {
			t.Errorf("removeCgroup(%q): %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "memory/warren-node1/other")); err != nil {
		t.Fatalf("guarded call removed a sibling: %v", err)
	}
	if err := removeCgroup("/warren-node1/web", "web"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"memory/warren-node1/web", "cpu/warren-node1/web"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, d)); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "memory/warren-node1/other")); err != nil {
		t.Errorf("sibling removed: %v", err)
	}
	if err := removeCgroup("/warren-node1/web", "web"); err != nil {
		t.Errorf("second removal not idempotent: %v", err)
	}
}
