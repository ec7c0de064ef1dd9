package runtime

import (
	"context"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/identifiers"
	"github.com/containerd/containerd/labels"
)

// Errors callers can test for with errors.Is. They are containerd's errdefs
// values, so errors coming straight from containerd match them too.
var (
	// ErrAlreadyExists: Create with an ID that is taken, or Start of a
	// container whose task is still running.
	ErrAlreadyExists = errdefs.ErrAlreadyExists
	// ErrNotFound: no such container, no task, or an image that is neither
	// present nor pullable.
	ErrNotFound = errdefs.ErrNotFound
	// ErrInvalidArgument: a ContainerSpec or image reference that fails
	// validation.
	ErrInvalidArgument = errdefs.ErrInvalidArgument
)

// Runtime is what a task actor needs from the container engine.
// Implementations are safe for concurrent use.
type Runtime interface {
	// ImportImage loads an OCI-layout or docker-save tarball, unpacks it for
	// the snapshotter, and returns the image names imported, normalized
	// (docker.io/library/demo:v1).
	ImportImage(ctx context.Context, r io.Reader) ([]string, error)
	// PullImage pulls ref from a registry and unpacks it.
	PullImage(ctx context.Context, ref string, opts PullOptions) error
	// EnsureImage returns nil if ref (normalized with docker reference rules)
	// is present and unpacked; otherwise it tries to pull it.
	EnsureImage(ctx context.Context, ref string) error
	// ListImages returns the names of all images, sorted.
	ListImages(ctx context.Context) ([]string, error)
	// Create makes a container and its snapshot from spec.Image; the error
	// wraps ErrAlreadyExists if the ID is taken.
	Create(ctx context.Context, spec ContainerSpec) error
	// Start starts a new task for the container, deleting a stopped old task
	// first; stdout and stderr are appended to the spec's LogPath.
	Start(ctx context.Context, id string) (pid uint32, err error)
	// Wait returns a channel that receives one ExitStatus when the current
	// task exits (at once if it already has), then is closed.
	Wait(ctx context.Context, id string) (<-chan ExitStatus, error)
	// Stop sends SIGTERM, waits up to grace, then SIGKILLs; nil if not running.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Kill sends sig to the task's init process.
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	// Exec runs cmd in the running container; exit code and some output.
	Exec(ctx context.Context, id string, cmd []string) (code uint32, output string, err error)
	// Delete removes the task (killed if needed), the container, its snapshot
	// and its cgroups; nil if the container does not exist.
	Delete(ctx context.Context, id string) error
	// Status reports on one container; Exists is false if there is none.
	Status(ctx context.Context, id string) (Status, error)
	// List reports on all containers in this runtime's namespace.
	List(ctx context.Context) ([]Status, error)
	// Close releases the connection; containers keep running.
	Close() error
}

// PullOptions tune PullImage.
type PullOptions struct {
	// PlainHTTP talks http instead of https to the registry (a local test
	// registry). localhost registries use http even when false.
	PlainHTTP bool
}

// ContainerSpec describes a container to Create. Only ID and Image are
// required.
type ContainerSpec struct {
	ID    string
	Image string // any docker reference: "demo:v1", "localhost:5000/x/y@sha256:…"
	// Command overrides the image ENTRYPOINT when set (and then the image CMD
	// is dropped too, as docker does).
	Command []string
	// Args overrides the image CMD when set.
	Args []string
	// Env entries are KEY=VALUE, added to the image env (replacing same keys).
	Env      []string
	WorkDir  string
	User     string // "uid", "uid:gid", "name" or "name:group" resolved in the image
	Hostname string // defaults to ID
	// Labels are stored on the container and returned by Status and List.
	Labels map[string]string
	// MemoryLimitBytes is the cgroup memory limit in bytes; 0 means none.
	MemoryLimitBytes int64
	// CPUMillis is the CFS quota in thousandths of a CPU (1000 = one CPU);
	// 0 means none.
	CPUMillis int64
	// NetNSPath is a network namespace to join (created by netmesh); "" gives
	// the container a new private one with only loopback.
	NetNSPath string
	// LogPath receives stdout and stderr. The shim holds it open, so output
	// keeps flowing while warren restarts. "" discards output.
	LogPath string
	// CgroupParent is the cgroup directory for this node's containers, e.g.
	// "/warren-node1", so several nodes on one machine don't collide. The
	// container's cgroup is CgroupParent/ID. "" means "/<namespace>".
	CgroupParent string
	// Mounts are bind mounts and tmpfs mounts, applied in order.
	Mounts []Mount
	// ResolvConfPath, if set, is bind-mounted read-only at /etc/resolv.conf.
	ResolvConfPath string
	// Isolation adjusts capabilities, pids limit and seccomp; the zero
	// value is Docker's default confinement (see spec_isolation.go).
	Isolation Isolation
}

// Mount is a bind or tmpfs mount into a container.
type Mount struct {
	Type     string // "bind" (the default when empty) or "tmpfs"
	Source   string // host path for bind; ignored for tmpfs
	Target   string // absolute path inside the container
	ReadOnly bool
}

// Status is a container's state as containerd reports it.
type Status struct {
	ID      string
	Exists  bool
	Running bool   // a task exists and its process is alive (running or paused)
	Pid     uint32 // host pid of the task's init process; 0 without a task
	// ExitCode and ExitedAt are set once the task has stopped; a signal death
	// shows as 128+signal (137 for SIGKILL).
	ExitCode uint32
	ExitedAt time.Time
	Labels   map[string]string // the labels given in ContainerSpec
	Image    string            // normalized image name
}

// ExitStatus is what Wait delivers once.
type ExitStatus struct {
	Code     uint32
	ExitedAt time.Time
	// Err is set when the exit could not be observed (containerd went away
	// for good, the context was cancelled); Code is then meaningless.
	Err error
}

// minMemoryLimit is the smallest limit runc and the kernel can start a
// container under; below it the container is OOM-killed before exec.
const minMemoryLimit = 6 << 20

// validate checks a spec before anything is sent to containerd and returns
// a copy with the image reference normalized. Errors wrap ErrInvalidArgument
// and name the offending field.
func (s ContainerSpec) validate() (ContainerSpec, error) {
	bad := func(format string, args ...any) (ContainerSpec, error) {
		return ContainerSpec{}, fmt.Errorf("container %q: %s: %w", s.ID, fmt.Sprintf(format, args...), ErrInvalidArgument)
	}
	if err := identifiers.Validate(s.ID); err != nil {
		return bad("invalid ID (letters, digits and ._- separators, at most 76 characters): %v", err)
	}
	img, err := NormalizeImageRef(s.Image)
	if err != nil {
		return bad("%v", err)
	}
	s.Image = img
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return bad("env entry %q must be KEY=VALUE", kv)
		}
	}
	for k, v := range s.Labels {
		if strings.HasPrefix(k, internalLabelPrefix) {
			return bad("label %q uses the reserved prefix %q", k, internalLabelPrefix)
		}
		if labels.IsReserved(k) {
			return bad("label %q uses a prefix reserved for containerd", k)
		}
		if err := labels.Validate(k, v); err != nil {
			return bad("label %q: %v", k, err)
		}
	}
	if s.MemoryLimitBytes < 0 {
		return bad("memory limit %d is negative", s.MemoryLimitBytes)
	}
	if s.MemoryLimitBytes > 0 && s.MemoryLimitBytes < minMemoryLimit {
		return bad("memory limit %d bytes is below the 6MiB a container needs to start", s.MemoryLimitBytes)
	}
	if s.CPUMillis < 0 {
		return bad("CPU limit %d millis is negative", s.CPUMillis)
	}
	for field, p := range map[string]string{"NetNSPath": s.NetNSPath, "LogPath": s.LogPath, "ResolvConfPath": s.ResolvConfPath, "WorkDir": s.WorkDir} {
		if p != "" && !filepath.IsAbs(p) {
			return bad("%s %q must be an absolute path", field, p)
		}
	}
	if s.CgroupParent != "" {
		if !path.IsAbs(s.CgroupParent) || path.Clean(s.CgroupParent) != s.CgroupParent || strings.Contains(s.CgroupParent, ":") {
			return bad("cgroup parent %q must be a clean absolute cgroupfs path like /warren-node1", s.CgroupParent)
		}
	}
	if err := s.Isolation.validate(); err != nil {
		return bad("%v", err)
	}
	if len(s.Hostname) > 64 {
		return bad("hostname %q is longer than 64 characters", s.Hostname)
	}
	for i, m := range s.Mounts {
		if !path.IsAbs(m.Target) {
			return bad("mount %d: target %q must be an absolute path in the container", i, m.Target)
		}
		switch m.Type {
		case "", "bind":
			if !filepath.IsAbs(m.Source) {
				return bad("mount %d: bind source %q must be an absolute host path", i, m.Source)
			}
		case "tmpfs":
		default:
			return bad("mount %d: type %q is not supported (use bind or tmpfs)", i, m.Type)
		}
	}
	return s, nil
}
