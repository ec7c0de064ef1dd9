package runtime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/pkg/cap"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/warrenorch/warren/messages"
)

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name      string
		add, drop []string
		want      []string
	}{
		{name: "docker default", want: defaultCaps},
		{name: "drop one", drop: []string{"CAP_NET_RAW"}, want: without(defaultCaps, "CAP_NET_RAW")},
		{name: "add one", add: []string{"CAP_NET_ADMIN"}, want: append(slices.Clone(defaultCaps), "CAP_NET_ADMIN")},
		{name: "add a default one", add: []string{"CAP_KILL"}, want: defaultCaps},
		{name: "drop all", drop: []string{"ALL"}, want: []string{}},
		{name: "drop all then add", drop: []string{"ALL"}, add: []string{"CAP_NET_BIND_SERVICE"}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "drop and add", drop: []string{"CAP_MKNOD", "CAP_SETFCAP"}, add: []string{"CAP_SYS_PTRACE"},
			want: append(without(without(defaultCaps, "CAP_MKNOD"), "CAP_SETFCAP"), "CAP_SYS_PTRACE")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := capabilities(tt.add, tt.drop)
			if got == nil || !slices.Equal(got, tt.want) {
				t.Fatalf("capabilities(%q, %q) = %q; want %q", tt.add, tt.drop, got, tt.want)
			}
		})
	}
}

func without(caps []string, c string) []string {
	return slices.DeleteFunc(slices.Clone(caps), func(x string) bool { return x == c })
}

// TestDefaultCapsAreDockers: the set Warren names is the one containerd's
// default spec starts from (Docker's); if containerd ever differs, this
// says so rather than tasks silently changing.
func TestDefaultCapsAreDockers(t *testing.T) {
	s, err := oci.GenerateSpec(nsCtx(), nil, &containers.Container{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	got, want := slices.Sorted(slices.Values(s.Process.Capabilities.Bounding)), slices.Sorted(slices.Values(defaultCaps))
	if !slices.Equal(got, want) {
		t.Errorf("containerd's default capabilities %q differ from Docker's %q", got, want)
	}
	if DefaultPidsLimit != messages.DefaultPidsLimit {
		t.Errorf("runtime.DefaultPidsLimit %d != messages.DefaultPidsLimit %d", DefaultPidsLimit, messages.DefaultPidsLimit)
	}
	for _, c := range messages.Capabilities() {
		if !slices.Contains(cap.Known(), c) {
			t.Errorf("messages accepts %s, which containerd does not know", c)
		}
	}
}

func TestIsolationOpts(t *testing.T) {
	build := func(iso Isolation) *oci.Spec {
		t.Helper()
		s, err := oci.GenerateSpec(nsCtx(), nil, &containers.Container{ID: "x"}, isolationOpts(iso, false)...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := build(Isolation{})
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
		t.Errorf("default spec has seccomp %+v; want Docker's default profile", s.Linux.Seccomp)
	}
	if s.Linux.Resources.Pids == nil || s.Linux.Resources.Pids.Limit != DefaultPidsLimit {
		t.Errorf("default pids = %+v; want %d", s.Linux.Resources.Pids, DefaultPidsLimit)
	}
	if s.Process.ApparmorProfile != "" {
		t.Errorf("AppArmor profile %q set without AppArmor", s.Process.ApparmorProfile)
	}
	s = build(Isolation{SeccompUnconfined: true, PidsLimit: -1, CapAdd: []string{"CAP_SYS_ADMIN"}})
	if s.Linux.Seccomp != nil {
		t.Errorf("unconfined spec has a seccomp profile")
	}
	if s.Linux.Resources != nil && s.Linux.Resources.Pids != nil {
		t.Errorf("unlimited pids has %+v", s.Linux.Resources.Pids)
	}
	for _, set := range [][]string{s.Process.Capabilities.Bounding, s.Process.Capabilities.Effective, s.Process.Capabilities.Permitted} {
		if !slices.Contains(set, "CAP_SYS_ADMIN") {
			t.Errorf("added capability missing from %q", set)
		}
	}
	// The profile follows the capabilities: with CAP_SYS_ADMIN, mount is allowed.
	s = build(Isolation{CapAdd: []string{"CAP_SYS_ADMIN"}})
	if !seccompAllows(s.Linux.Seccomp, "mount") {
		t.Errorf("profile with CAP_SYS_ADMIN does not allow mount")
	}
	if s = build(Isolation{}); seccompAllows(s.Linux.Seccomp, "mount") {
		t.Errorf("default profile allows mount")
	}
}

func seccompAllows(p *specs.LinuxSeccomp, name string) bool {
	for _, sc := range p.Syscalls {
		if sc.Action == specs.ActAllow && len(sc.Args) == 0 && slices.Contains(sc.Names, name) {
			return true
		}
	}
	return false
}

func TestIsolationValidate(t *testing.T) {
	for _, tt := range []struct {
		iso     Isolation
		wantErr string
	}{
		{iso: Isolation{}},
		{iso: Isolation{CapAdd: []string{"CAP_NET_ADMIN"}, CapDrop: []string{"ALL"}, PidsLimit: -1}},
		{iso: Isolation{CapAdd: []string{"NET_ADMIN"}}, wantErr: "cap-add"},
		{iso: Isolation{CapAdd: []string{"ALL"}}, wantErr: "cap-add"},
		{iso: Isolation{CapDrop: []string{"CAP_FLY"}}, wantErr: "cap-drop"},
		{iso: Isolation{PidsLimit: -2}, wantErr: "pids limit"},
	} {
		spec := ContainerSpec{ID: "x", Image: "demo:v1", Isolation: tt.iso}
		_, err := spec.validate()
		if tt.wantErr == "" && err != nil {
			t.Errorf("%+v: %v", tt.iso, err)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%+v: error %v, want one mentioning %q", tt.iso, err, tt.wantErr)
		}
	}
}

func TestAppArmorDecision(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	enabled, disabled := write("enabled-y", "Y\n"), write("enabled-n", "N\n")
	securityFS := filepath.Join(dir, "apparmor")
	if err := os.Mkdir(securityFS, 0o755); err != nil {
		t.Fatal(err)
	}
	parser := func() (string, error) { return "/sbin/apparmor_parser", nil }
	noParser := func() (string, error) { return "", os.ErrNotExist }
	tests := []struct {
		name string
		h    appArmorHost
		want bool
		why  string
	}{
		{name: "enabled", h: appArmorHost{enabledFile: enabled, securityFS: securityFS, parser: parser}, want: true},
		{name: "no module", h: appArmorHost{enabledFile: filepath.Join(dir, "missing"), securityFS: securityFS, parser: parser}, why: "not in this kernel"},
		{name: "disabled", h: appArmorHost{enabledFile: disabled, securityFS: securityFS, parser: parser}, why: "disabled"},
		{name: "no securityfs", h: appArmorHost{enabledFile: enabled, securityFS: filepath.Join(dir, "nosfs"), parser: parser}, why: "not active"},
		{name: "no parser", h: appArmorHost{enabledFile: enabled, securityFS: securityFS, parser: noParser}, why: "apparmor_parser"},
		{name: "in a container", h: appArmorHost{enabledFile: enabled, securityFS: securityFS, parser: parser, inContainer: true}, why: "inside a container"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := appArmorDecision(tt.h)
			if got != tt.want || !strings.Contains(why, tt.why) {
				t.Fatalf("appArmorDecision = %v, %q; want %v, %q", got, why, tt.want, tt.why)
			}
		})
	}
	// What this host decided, for the log of a test run.
	ok, why := hostAppArmor()
	t.Logf("this host: AppArmor %v %s", ok, why)
}

// isolationReport mirrors e2e/testapp's -isolation output.
type isolationReport struct {
	Seccomp string   `json:"seccomp"`
	CapEff  string   `json:"capEff"`
	Keyctl  string   `json:"keyctl"`
	Errors  []string `json:"errors"`
}

// run runs the test app with args in a container made by the spec builder
// with iso, waits for it to exit and returns its exit code and output.
func (e *env) run(name string, iso Isolation, args ...string) (uint32, string) {
	e.t.Helper()
	ctx := e.ctx()
	spec := e.spec(name)
	spec.Args = args
	spec.Isolation = iso
	if err := e.rt.Create(ctx, spec); err != nil {
		e.t.Fatalf("create: %v", err)
	}
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	ch, err := e.rt.Wait(ctx, spec.ID)
	if err != nil {
		e.t.Fatalf("wait: %v", err)
	}
	es := receive(e.t, ch)
	if es.Err != nil {
		e.t.Fatalf("wait for %s: %v", name, es.Err)
	}
	out, _ := os.ReadFile(spec.LogPath)
	return es.Code, string(out)
}

// probe is run with -isolation: what confines the process, seen from inside.
func (e *env) probe(name string, iso Isolation) isolationReport {
	e.t.Helper()
	code, out := e.run(name, iso, "-isolation")
	if code != 0 {
		e.t.Fatalf("probe exited %d:\n%s", code, out)
	}
	var r isolationReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		e.t.Fatalf("probe output %q: %v", out, err)
	}
	if len(r.Errors) > 0 {
		e.t.Fatalf("probe errors: %v", r.Errors)
	}
	e.t.Logf("%s: %+v", name, r)
	return r
}

// caps decodes CapEff, sorted by name.
func (r isolationReport) caps(t *testing.T) []string {
	t.Helper()
	v, err := strconv.ParseUint(r.CapEff, 16, 64)
	if err != nil {
		t.Fatalf("CapEff %q: %v", r.CapEff, err)
	}
	names, unknown := cap.FromBitmap(v)
	if len(unknown) > 0 {
		t.Fatalf("CapEff %q has unknown bits %v", r.CapEff, unknown)
	}
	return slices.Sorted(slices.Values(names))
}

// TestIsolationInContainer runs real containers (containerd, runc) from
// specs the spec builder makes and checks from inside that the default
// seccomp profile refuses keyctl and the effective capabilities follow
// CapDrop and CapAdd. The unconfined case shows that the probe tells the
// difference: before task isolation every container looked like it.
func TestIsolationInContainer(t *testing.T) {
	e := newEnv(t)
	e.importImage()
	sorted := func(c []string) []string { return slices.Sorted(slices.Values(c)) }

	def := e.probe("default", Isolation{})
	if def.Seccomp != "2" || def.Keyctl != "operation not permitted" {
		t.Errorf("default: seccomp mode %s, keyctl %q; want a filter (2) refusing keyctl with EPERM", def.Seccomp, def.Keyctl)
	}
	if got := def.caps(t); !slices.Equal(got, sorted(defaultCaps)) {
		t.Errorf("default: CapEff %q, want Docker's %q", got, sorted(defaultCaps))
	}

	got := e.probe("adjusted", Isolation{CapDrop: []string{"CAP_NET_RAW"}, CapAdd: []string{"CAP_NET_ADMIN"}}).caps(t)
	if slices.Contains(got, "CAP_NET_RAW") || !slices.Contains(got, "CAP_NET_ADMIN") {
		t.Errorf("drop NET_RAW, add NET_ADMIN: CapEff %q", got)
	}
	if want := sorted(append(without(defaultCaps, "CAP_NET_RAW"), "CAP_NET_ADMIN")); !slices.Equal(got, want) {
		t.Errorf("drop NET_RAW, add NET_ADMIN: CapEff %q, want %q", got, want)
	}

	if got := e.probe("dropall", Isolation{CapDrop: []string{"ALL"}, CapAdd: []string{"CAP_NET_BIND_SERVICE"}}).caps(t); !slices.Equal(got, []string{"CAP_NET_BIND_SERVICE"}) {
		t.Errorf("drop ALL, add NET_BIND_SERVICE: CapEff %q", got)
	}

	unc := e.probe("unconfined", Isolation{SeccompUnconfined: true})
	if unc.Seccomp != "0" || unc.Keyctl == def.Keyctl {
		t.Errorf("unconfined: seccomp mode %s, keyctl %q; want no filter and keyctl not refused", unc.Seccomp, unc.Keyctl)
	}
}

// TestPidsLimitInContainer: the pids cgroup of a task holds the default
// limit, and a lower limit stops the task's threads at the kernel (the
// container cannot see its cgroup: containerd's default spec mounts none,
// so the limit is shown by its effect and read from the host side).
func TestPidsLimitInContainer(t *testing.T) {
	e := newEnv(t)
	e.importImage()
	ctx := e.ctx()

	// A running task of the default spec: pids.max in its own cgroup.
	pidsMax := func(name string, iso Isolation) string {
		t.Helper()
		spec := e.spec(name)
		spec.Isolation = iso
		if err := e.rt.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if _, err := e.rt.Start(ctx, spec.ID); err != nil {
			t.Fatal(err)
		}
		defer e.rt.Delete(ctx, spec.ID) //nolint:errcheck
		for _, d := range cgroupDirs(e.rt.cgroupPath(spec)) {
			if b, err := os.ReadFile(filepath.Join(d, "pids.max")); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		t.Fatalf("no pids.max in the cgroups of %s (%q): is the pids controller mounted?", name, cgroupDirs(e.rt.cgroupPath(spec)))
		return ""
	}
	if got := pidsMax("server", Isolation{}); got != strconv.Itoa(DefaultPidsLimit) {
		t.Errorf("default task: pids.max %q, want %d", got, DefaultPidsLimit)
	}
	if got := pidsMax("unlimited", Isolation{PidsLimit: -1}); got != "max" {
		t.Errorf("PidsLimit -1: pids.max %q, want max", got)
	}

	// 200 threads fit in the default limit...
	if code, out := e.run("threads-default", Isolation{}, "-threads", "200"); code != 0 || !strings.Contains(out, "holding 200 threads") {
		t.Fatalf("200 threads under the default limit: exit %d\n%s", code, out)
	}
	// ...but not in 32: the kernel refuses the clone (EAGAIN, errno 11)
	// and the Go runtime gives up.
	code, out := e.run("threads-32", Isolation{PidsLimit: 32}, "-threads", "200")
	if code == 0 || !strings.Contains(out, "failed to create new OS thread") || !strings.Contains(out, "errno=11") {
		t.Fatalf("200 threads under a limit of 32: exit %d, want the runtime to fail creating a thread with EAGAIN:\n%s", code, out)
	}
	first, _, _ := strings.Cut(out, "\n")
	t.Logf("under pids limit 32: exit %d, %s", code, first)
}

func nsCtx() context.Context {
	return namespaces.WithNamespace(context.Background(), testNamespace)
}
