// Package fakeruntime is an in-memory runtime.Runtime: a fake for tests and
// scale simulation; never the real path in e2e, which runs real containerd.
//
// It keeps images, containers (with their labels) and tasks in memory, with
// containerd's semantics and error values (runtime.ErrAlreadyExists,
// runtime.ErrNotFound, runtime.ErrInvalidArgument), so the worker's actors
// can be tested without root and hundreds of simulated workers can share
// one process. A "process" is only a state: it runs until a test makes it
// exit (Exit), a signal ends it (SIGTERM unless ignored, SIGKILL always),
// or its container is deleted.
//
// Timing is configurable (Config): create and start latency with jitter,
// and a pace for image imports per MB, so that a test can import a large
// image slowly. Test hooks inject failures (Fail), count and list calls
// (Count, Calls) and record the signals each container got (Signals).
package fakeruntime

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warrenorch/warren/runtime"
)

// Op names a Runtime method, for Fail, Count and Calls.
type Op string

// The operations a Runtime performs.
const (
	OpImport Op = "ImportImage"
	OpPull   Op = "PullImage"
	OpEnsure Op = "EnsureImage"
	OpCreate Op = "Create"
	OpStart  Op = "Start"
	OpWait   Op = "Wait"
	OpStop   Op = "Stop"
	OpKill   Op = "Kill"
	OpExec   Op = "Exec"
	OpDelete Op = "Delete"
	OpStatus Op = "Status"
	OpList   Op = "List"
	OpImages Op = "ListImages"
)

// Config sets the fake's timing and what it starts with. The zero value is
// an empty runtime that answers at once.
type Config struct {
	// Images are present from the start (any docker reference; normalized).
	Images []string
	// Pullable images are "in the registry": PullImage, EnsureImage and
	// Create fetch them on first use. Others are not found.
	Pullable []string
	// CreateLatency and StartLatency are added to every Create and Start,
	// plus a uniformly random extra in [0, Jitter).
	CreateLatency, StartLatency, Jitter time.Duration
	// ImportPerMB is how long ImportImage takes per MiB read, so a test can
	// import a "large image" that takes seconds.
	ImportPerMB time.Duration
	// FirstPid is the pid of the first task; later tasks count up. 0: 1000.
	FirstPid uint32
}

// Call is one recorded call.
type Call struct {
	Op  Op
	ID  string // container ID; "" for image and list calls
	At  time.Time
	Err error // what the call returned
}

// Runtime is the in-memory runtime. It is safe for concurrent use.
type Runtime struct {
	cfg Config

	mu         sync.Mutex
	images     map[string]bool
	pullable   map[string]bool
	containers map[string]*container
	nextPid    uint32
	calls      []Call
	faults     []*fault
	execFn     func(id string, cmd []string) (uint32, string, error)
	closed     bool
}

type container struct {
	spec       runtime.ContainerSpec
	task       *process // nil until started
	ignoreTERM bool
	signals    []syscall.Signal
}

// process is a container's task: running until exited is closed.
type process struct {
	pid      uint32
	exited   chan struct{}
	code     uint32
	exitedAt time.Time
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

type fault struct {
	op   Op
	id   string
	left int // < 0: until cleared
	err  error
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns an empty runtime with cfg's images.
func New(cfg Config) *Runtime {
	r := &Runtime{cfg: cfg, images: map[string]bool{}, pullable: map[string]bool{},
		containers: map[string]*container{}, nextPid: cfg.FirstPid}
	if r.nextPid == 0 {
		r.nextPid = 1000
	}
	for _, ref := range cfg.Images {
		r.images[mustNormalize(ref)] = true
	}
	for _, ref := range cfg.Pullable {
		r.pullable[mustNormalize(ref)] = true
	}
	return r
}

func mustNormalize(ref string) string {
	n, err := runtime.NormalizeImageRef(ref)
	if err != nil {
		panic(fmt.Sprintf("fakeruntime: image %q: %v", ref, err))
	}
	return n
}

// Fail makes the next n calls of op on container id ("" any container, and
// the only choice for image and list calls) return err; n < 0 makes every
// such call fail until Fail is called again for the same op and id with
// a nil err.
func (r *Runtime) Fail(op Op, id string, n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.faults[:0]
	for _, f := range r.faults {
		if f.op != op || f.id != id {
			kept = append(kept, f)
		}
	}
	r.faults = kept
	if err != nil && n != 0 {
		r.faults = append(r.faults, &fault{op: op, id: id, left: n, err: err})
	}
}

// SetExec sets what Exec answers for a running container; the default is
// exit code 0 and no output.
func (r *Runtime) SetExec(fn func(id string, cmd []string) (code uint32, output string, err error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.execFn = fn
}

// IgnoreSIGTERM makes container id's processes survive SIGTERM, so Stop
// waits out its grace period and kills them.
func (r *Runtime) IgnoreSIGTERM(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return fmt.Errorf("ignore SIGTERM in %s: no such container: %w", id, runtime.ErrNotFound)
	}
	c.ignoreTERM = true
	return nil
}

// Exit makes container id's running process exit with code, as if it had
// ended by itself.
func (r *Runtime) Exit(id string, code uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil || c.task == nil || !c.task.running() {
		return fmt.Errorf("exit %s: no running task: %w", id, runtime.ErrNotFound)
	}
	c.task.exit(code)
	return nil
}

// AddImage makes images present, as if imported.
func (r *Runtime) AddImage(refs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ref := range refs {
		r.images[mustNormalize(ref)] = true
	}
}

// AddContainer puts a container into the runtime, running a process when
// running is set: what an earlier warren process left behind (adoption,
// orphans). Its image need not be present.
func (r *Runtime) AddContainer(spec runtime.ContainerSpec, running bool) (pid uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &container{spec: spec}
	if spec.Image != "" {
		c.spec.Image = mustNormalize(spec.Image)
	}
	r.containers[spec.ID] = c
	if running {
		c.task = r.newProcess()
		return c.task.pid
	}
	return 0
}

// Count returns how many calls of op were made on container id ("" counts
// calls on every container).
func (r *Runtime) Count(op Op, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c.Op == op && (id == "" || c.ID == id) {
			n++
		}
	}
	return n
}

// Calls returns every call so far, oldest first.
func (r *Runtime) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// Signals returns the signals sent to container id's processes (by Stop
// and Kill), oldest first.
func (r *Runtime) Signals(id string) []syscall.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.containers[id]; c != nil {
		return append([]syscall.Signal(nil), c.signals...)
	}
	return nil
}

// begin records a call and returns the error injected for it, if any.
// Called with r.mu held.
func (r *Runtime) begin(op Op, id string) error {
	if r.closed {
		return fmt.Errorf("%s %s: runtime closed", op, id)
	}
	for i, f := range r.faults {
		if f.op != op || (f.id != "" && f.id != id) {
			continue
		}
		if f.left > 0 {
			if f.left--; f.left == 0 {
				r.faults = append(r.faults[:i], r.faults[i+1:]...)
			}
		}
		return fmt.Errorf("%s %s: %w", op, id, f.err)
	}
	return nil
}

// record appends the call with its outcome; called with r.mu held.
func (r *Runtime) record(op Op, id string, err error) error {
	r.calls = append(r.calls, Call{Op: op, ID: id, At: time.Now(), Err: err})
	return err
}

// call runs fn under the lock unless a fault is injected, and records it.
func (r *Runtime) call(op Op, id string, fn func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.begin(op, id); err != nil {
		return r.record(op, id, err)
	}
	return r.record(op, id, fn())
}

// sleep waits d plus jitter, or until ctx ends.
func (r *Runtime) sleep(ctx context.Context, d time.Duration) error {
	if r.cfg.Jitter > 0 {
		d += rand.N(r.cfg.Jitter)
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runtime) newProcess() *process {
	p := &process{pid: r.nextPid, exited: make(chan struct{})}
	r.nextPid++
	return p
}

// exit ends the process; called with r.mu held.
func (p *process) exit(code uint32) {
	if p.running() {
		p.code, p.exitedAt = code, time.Now()
		close(p.exited)
	}
}

// ImportImage reads an OCI-layout or docker-save tarball (see image.go) at
// the configured pace and makes the images it names present.
func (r *Runtime) ImportImage(ctx context.Context, rd io.Reader) ([]string, error) {
	r.mu.Lock()
	err := r.begin(OpImport, "")
	r.mu.Unlock()
	var names []string
	if err == nil {
		names, err = readImageNames(ctx, rd, r.cfg.ImportPerMB)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		for _, n := range names {
			r.images[n] = true
		}
	}
	return names, r.record(OpImport, "", err)
}

// PullImage fetches a Pullable image.
func (r *Runtime) PullImage(ctx context.Context, ref string, _ runtime.PullOptions) error {
	return r.call(OpPull, "", func() error { return r.pull(ref) })
}

// EnsureImage is nil for a present image and pulls a Pullable one.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	return r.call(OpEnsure, "", func() error { return r.pull(ref) })
}

// pull is called with r.mu held.
func (r *Runtime) pull(ref string) error {
	name, err := runtime.NormalizeImageRef(ref)
	if err != nil {
		return err
	}
	if r.images[name] {
		return nil
	}
	if !r.pullable[name] {
		return fmt.Errorf("image %s is not on this node and could not be pulled (not in the fake registry): import it or add it to Config.Pullable: %w", name, runtime.ErrNotFound)
	}
	r.images[name] = true
	return nil
}

// ListImages returns the present images, sorted.
func (r *Runtime) ListImages(ctx context.Context) ([]string, error) {
	var out []string
	err := r.call(OpImages, "", func() error {
		for n := range r.images {
			out = append(out, n)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// Create makes a container after CreateLatency; its image must be present
// or pullable.
func (r *Runtime) Create(ctx context.Context, spec runtime.ContainerSpec) error {
	if err := r.sleep(ctx, r.cfg.CreateLatency); err != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.record(OpCreate, spec.ID, fmt.Errorf("create container %s: %w", spec.ID, err))
	}
	return r.call(OpCreate, spec.ID, func() error {
		if spec.ID == "" || strings.ContainsAny(spec.ID, "/ ") {
			return fmt.Errorf("container %q: invalid ID: %w", spec.ID, runtime.ErrInvalidArgument)
		}
		if r.containers[spec.ID] != nil {
			return fmt.Errorf("create container %s: a container with this ID exists; delete it first: %w", spec.ID, runtime.ErrAlreadyExists)
		}
		img, err := runtime.NormalizeImageRef(spec.Image)
		if err != nil {
			return fmt.Errorf("container %q: %w", spec.ID, err)
		}
		if err := r.pull(img); err != nil {
			return fmt.Errorf("create container %s: %w", spec.ID, err)
		}
		spec.Image = img
		lbls := make(map[string]string, len(spec.Labels))
		for k, v := range spec.Labels {
			lbls[k] = v
		}
		spec.Labels = lbls
		r.containers[spec.ID] = &container{spec: spec}
		return nil
	})
}

// Start starts a new process after StartLatency, replacing an exited one;
// a running one makes it fail with ErrAlreadyExists.
func (r *Runtime) Start(ctx context.Context, id string) (uint32, error) {
	if err := r.sleep(ctx, r.cfg.StartLatency); err != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return 0, r.record(OpStart, id, fmt.Errorf("start %s: %w", id, err))
	}
	var pid uint32
	err := r.call(OpStart, id, func() error {
		c := r.containers[id]
		if c == nil {
			return fmt.Errorf("start %s: no container %q; create it first: %w", id, id, runtime.ErrNotFound)
		}
		if c.task != nil && c.task.running() {
			pid = c.task.pid
			return fmt.Errorf("start %s: its task is still running as pid %d; stop it first: %w", id, pid, runtime.ErrAlreadyExists)
		}
		c.task = r.newProcess()
		pid = c.task.pid
		return nil
	})
	return pid, err
}

// Wait delivers the current process's exit once, then closes the channel;
// a cancelled ctx delivers an ExitStatus with Err set.
func (r *Runtime) Wait(ctx context.Context, id string) (<-chan runtime.ExitStatus, error) {
	var p *process
	err := r.call(OpWait, id, func() error {
		c := r.containers[id]
		if c == nil || c.task == nil {
			return fmt.Errorf("wait for %s: no task; start it first: %w", id, runtime.ErrNotFound)
		}
		p = c.task
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(chan runtime.ExitStatus, 1)
	go func() {
		defer close(out)
		select {
		case <-p.exited:
			r.mu.Lock()
			es := runtime.ExitStatus{Code: p.code, ExitedAt: p.exitedAt}
			r.mu.Unlock()
			out <- es
		case <-ctx.Done():
			out <- runtime.ExitStatus{Err: fmt.Errorf("wait for %s: %w", id, ctx.Err())}
		}
	}()
	return out, nil
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs; nil if nothing runs.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	var p *process
	err := r.call(OpStop, id, func() error {
		c := r.containers[id]
		if c == nil || c.task == nil || !c.task.running() {
			return nil
		}
		p = c.task
		r.signal(c, syscall.SIGTERM)
		return nil
	})
	if err != nil || p == nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	case <-t.C:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.containers[id]; c != nil && c.task == p {
		r.signal(c, syscall.SIGKILL)
	}
	return nil
}

// Kill sends sig to the running process: SIGKILL ends it (137), SIGTERM
// and SIGINT too (128+sig) unless the container ignores SIGTERM; other
// signals are only recorded.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	return r.call(OpKill, id, func() error {
		c := r.containers[id]
		if c == nil {
			return fmt.Errorf("kill %s: no container %q: %w", id, id, runtime.ErrNotFound)
		}
		if c.task == nil || !c.task.running() {
			return fmt.Errorf("kill %s with %s: process already finished: %w", id, sig, runtime.ErrNotFound)
		}
		r.signal(c, sig)
		return nil
	})
}

// signal delivers sig to c's process; called with r.mu held.
func (r *Runtime) signal(c *container, sig syscall.Signal) {
	c.signals = append(c.signals, sig)
	switch {
	case sig == syscall.SIGKILL, sig == syscall.SIGINT, sig == syscall.SIGTERM && !c.ignoreTERM:
		c.task.exit(128 + uint32(sig))
	}
}

// Exec answers with the SetExec function for a running container.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string) (uint32, string, error) {
	var fn func(string, []string) (uint32, string, error)
	err := r.call(OpExec, id, func() error {
		if len(cmd) == 0 {
			return fmt.Errorf("exec in %s: no command: %w", id, runtime.ErrInvalidArgument)
		}
		c := r.containers[id]
		if c == nil || c.task == nil || !c.task.running() {
			return fmt.Errorf("exec in %s: no running task: %w", id, runtime.ErrNotFound)
		}
		fn = r.execFn
		return nil
	})
	if err != nil || fn == nil {
		return 0, "", err
	}
	return fn(id, cmd)
}

// Delete kills a running process and removes the container; nil if there
// is none.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	return r.call(OpDelete, id, func() error {
		c := r.containers[id]
		if c == nil {
			return nil
		}
		if c.task != nil {
			c.task.exit(128 + uint32(syscall.SIGKILL))
		}
		delete(r.containers, id)
		return nil
	})
}

// Status reports one container; Exists is false if there is none.
func (r *Runtime) Status(ctx context.Context, id string) (runtime.Status, error) {
	var s runtime.Status
	err := r.call(OpStatus, id, func() error {
		s = r.status(id)
		return nil
	})
	return s, err
}

// status is called with r.mu held.
func (r *Runtime) status(id string) runtime.Status {
	c := r.containers[id]
	if c == nil {
		return runtime.Status{ID: id}
	}
	s := runtime.Status{ID: id, Exists: true, Image: c.spec.Image, Labels: map[string]string{}}
	for k, v := range c.spec.Labels {
		s.Labels[k] = v
	}
	if p := c.task; p != nil {
		s.Pid = p.pid
		if s.Running = p.running(); !s.Running {
			s.ExitCode, s.ExitedAt = p.code, p.exitedAt
		}
	}
	return s
}

// List reports every container, sorted by ID.
func (r *Runtime) List(ctx context.Context) ([]runtime.Status, error) {
	var out []runtime.Status
	err := r.call(OpList, "", func() error {
		for id := range r.containers {
			out = append(out, r.status(id))
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// Close makes every later call fail; processes keep their state, as
// containers outlive a closed containerd connection.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}
