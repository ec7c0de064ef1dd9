package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/contrib/apparmor"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/pkg/cap"
)

// Isolation confines a container beyond its namespaces. The zero value is
// the default confinement every task gets: Docker's default capability
// set, Docker's default seccomp profile, AppArmor's default container
// profile where the host runs AppArmor, and DefaultPidsLimit.
type Isolation struct {
	// CapDrop is removed from Docker's default capability set, then CapAdd
	// is added, so that dropping ALL and adding one keeps that one. Names
	// are in CAP_NAME form; CapDrop may hold "ALL".
	CapAdd, CapDrop []string
	// PidsLimit caps the processes and threads in the container's cgroup:
	// 0 means DefaultPidsLimit, -1 no limit.
	PidsLimit int64
	// SeccompUnconfined runs the container without a seccomp filter
	// (Docker's --security-opt seccomp=unconfined).
	SeccompUnconfined bool
}

// DefaultPidsLimit is the pids limit of a container whose spec says 0; it
// equals messages.DefaultPidsLimit, where the choice is explained.
const DefaultPidsLimit = 4096

// AppArmorProfile is the name the default AppArmor profile is loaded under
// (containerd's template, as Docker's docker-default).
const AppArmorProfile = "warren-default"

// defaultCaps is Docker's default capability set (moby's
// oci/caps/defaults.go). containerd's default spec holds the same today;
// naming it here keeps a containerd upgrade from changing what tasks get.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// capabilities applies drop, then add, to Docker's default set.
func capabilities(add, drop []string) []string {
	out := []string{}
	if !slices.Contains(drop, "ALL") {
		for _, c := range defaultCaps {
			if !slices.Contains(drop, c) {
				out = append(out, c)
			}
		}
	}
	for _, c := range add {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// validate checks names and limits; the caller wraps ErrInvalidArgument.
func (iso Isolation) validate() error {
	known := cap.Known()
	for _, c := range iso.CapAdd {
		if !slices.Contains(known, c) {
			return fmt.Errorf("cap-add %q is not a capability name in CAP_NAME form (see man 7 capabilities)", c)
		}
	}
	for _, c := range iso.CapDrop {
		if c != "ALL" && !slices.Contains(known, c) {
			return fmt.Errorf("cap-drop %q is not ALL or a capability name in CAP_NAME form (see man 7 capabilities)", c)
		}
	}
	if iso.PidsLimit < -1 {
		return fmt.Errorf("pids limit %d: use a positive limit, 0 for the default (%d) or -1 for none", iso.PidsLimit, DefaultPidsLimit)
	}
	return nil
}

// isolationOpts turns iso into spec options. Capabilities come before the
// seccomp profile: the profile opens the syscalls an added capability
// needs (mount with CAP_SYS_ADMIN, for one), reading them from the spec.
func isolationOpts(iso Isolation, appArmor bool) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithCapabilities(capabilities(iso.CapAdd, iso.CapDrop))}
	switch {
	case iso.PidsLimit == 0:
		opts = append(opts, oci.WithPidsLimit(DefaultPidsLimit))
	case iso.PidsLimit > 0:
		opts = append(opts, oci.WithPidsLimit(iso.PidsLimit))
	}
	if !iso.SeccompUnconfined {
		opts = append(opts, seccomp.WithDefaultProfile())
	}
	if appArmor {
		// Loads the profile with apparmor_parser unless it is loaded.
		opts = append(opts, apparmor.WithDefaultProfile(AppArmorProfile))
	}
	return opts
}

// appArmorHost is what decides whether tasks get an AppArmor profile; the
// paths are fields so a test can point them at files it wrote.
type appArmorHost struct {
	enabledFile string // "Y" when the LSM is enabled
	securityFS  string // exists when AppArmor is active
	parser      func() (string, error)
	// inContainer: the node itself runs in a container (its "container"
	// environment variable is set), where profiles cannot be loaded.
	inContainer bool
}

// appArmorDecision reports whether to apply AppArmor and, when not, why
// not. It mirrors containerd's and runc's own check.
func appArmorDecision(h appArmorHost) (bool, string) {
	if h.inContainer {
		return false, "warren runs inside a container"
	}
	b, err := os.ReadFile(h.enabledFile)
	if err != nil {
		return false, fmt.Sprintf("AppArmor is not in this kernel (%s: %v)", h.enabledFile, err)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(b)), "Y") {
		return false, fmt.Sprintf("AppArmor is disabled (%s says %q)", h.enabledFile, strings.TrimSpace(string(b)))
	}
	if _, err := os.Stat(h.securityFS); err != nil {
		return false, fmt.Sprintf("AppArmor is not active (%v)", err)
	}
	if _, err := h.parser(); err != nil {
		return false, fmt.Sprintf("apparmor_parser is not installed (%v); install the apparmor package to confine tasks", err)
	}
	return true, ""
}

// hostAppArmor is appArmorDecision on this host, checked once.
var hostAppArmor = sync.OnceValues(func() (bool, string) {
	return appArmorDecision(appArmorHost{
		enabledFile: "/sys/module/apparmor/parameters/enabled",
		securityFS:  "/sys/kernel/security/apparmor",
		parser: func() (string, error) {
			if p, err := exec.LookPath("apparmor_parser"); err == nil {
				return p, nil
			}
			return exec.LookPath("/sbin/apparmor_parser")
		},
		inContainer: os.Getenv("container") != "",
	})
})
