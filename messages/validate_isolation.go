package messages

import (
	"fmt"
	"strings"
)

// Task isolation settings of a ServiceSpec: capabilities, pids limit and
// seccomp. The runtime's spec builder applies them; this file only says
// which values a spec may hold.

const (
	// DefaultPidsLimit is the pids cgroup limit of a task whose spec says 0.
	// The pids controller counts threads as well as processes, so the
	// default has to leave room for thread-heavy runtimes (a JVM starts
	// dozens of threads, a Go server one per blocked syscall) while still
	// stopping a fork bomb long before it exhausts the node's pid space
	// (pid_max is 4 million on 64-bit; many hosts keep the old 32768).
	// Podman and CRI-O ship 2048 and 1024; 4096 errs on the side of not
	// breaking real workloads.
	DefaultPidsLimit = 4096
	// PidsUnlimited in pids_limit lifts the limit (Docker's --pids-limit -1).
	PidsUnlimited = -1
	// MaxPidsLimit is the kernel's largest pid_max: a larger limit is a typo.
	MaxPidsLimit = 1 << 22

	// SeccompDefault and SeccompUnconfined are the values of spec.seccomp
	// besides "" (which means SeccompDefault).
	SeccompDefault    = "default"
	SeccompUnconfined = "unconfined"

	// CapabilityAll in cap_drop drops every capability.
	CapabilityAll = "ALL"
)

// capabilityNames are the Linux capabilities up to kernel 5.9, in the
// kernel's numbering (capability.h), as Docker and containerd know them.
var capabilityNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

var knownCapability = func() map[string]bool {
	m := make(map[string]bool, len(capabilityNames))
	for _, c := range capabilityNames {
		m[c] = true
	}
	return m
}()

// Capabilities returns every capability name Warren knows, CAP_ prefixed.
func Capabilities() []string { return append([]string(nil), capabilityNames...) }

// NormalizeCapability turns a capability name as Docker accepts it
// ("net_admin", "NET_ADMIN", "CAP_NET_ADMIN") into the CAP_ form; "all"
// becomes ALL. Unknown names are an error that says where to look.
func NormalizeCapability(name string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if n == CapabilityAll {
		return n, nil
	}
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	if !knownCapability[n] {
		return "", fmt.Errorf("unknown capability %q: use a name from `man 7 capabilities`, with or without the CAP_ prefix (e.g. NET_ADMIN or CAP_NET_ADMIN), up to CAP_CHECKPOINT_RESTORE", name)
	}
	return n, nil
}

// NormalizeCapabilities normalizes each name (see NormalizeCapability) and
// drops repeats, keeping the first.
func NormalizeCapabilities(names []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		c, err := NormalizeCapability(n)
		if err != nil {
			return nil, err
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// validateIsolation checks cap_add, cap_drop, pids_limit and seccomp and
// returns one message per problem.
func validateIsolation(s *ServiceSpec) []string {
	var errs []string
	add, err := NormalizeCapabilities(s.GetCapAdd())
	if err != nil {
		errs = append(errs, "--cap-add: "+err.Error())
	}
	drop, err := NormalizeCapabilities(s.GetCapDrop())
	if err != nil {
		errs = append(errs, "--cap-drop: "+err.Error())
	}
	dropped := map[string]bool{}
	for _, c := range drop {
		dropped[c] = true
	}
	for _, c := range add {
		switch {
		case c == CapabilityAll:
			// Docker allows it; it is a privileged container in all but
			// name, and the seccomp profile then opens up with it.
			errs = append(errs, "--cap-add ALL is not supported: name the capabilities the task needs")
		case dropped[c]:
			errs = append(errs, fmt.Sprintf("capability %s is both added and dropped: keep it in one of --cap-add or --cap-drop", c))
		}
	}
	if p := s.GetPidsLimit(); p < PidsUnlimited || p > MaxPidsLimit {
		errs = append(errs, fmt.Sprintf("invalid pids limit %d: give 1 to %d, 0 for the default (%d) or -1 for unlimited", p, MaxPidsLimit, DefaultPidsLimit))
	}
	switch s.GetSeccomp() {
	case "", SeccompDefault, SeccompUnconfined:
	default:
		errs = append(errs, fmt.Sprintf("invalid seccomp setting %q: use %s or %s (custom profiles are not supported)", s.GetSeccomp(), SeccompDefault, SeccompUnconfined))
	}
	return errs
}

// CanonicalCapabilities is NormalizeCapabilities for a consumer that checks
// the names again (the runtime): a name that is no capability is kept as
// given, so it is refused there instead of silently dropped. A validated
// spec has none.
func CanonicalCapabilities(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if c, err := NormalizeCapability(n); err == nil {
			n = c
		}
		out = append(out, n)
	}
	return out
}
