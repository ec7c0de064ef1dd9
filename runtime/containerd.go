package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes/docker"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// DefaultNamespace is the containerd namespace warren's containers live in
	// when the caller names none.
	DefaultNamespace = "warren"
	// snapshotter is containerd's default; images are unpacked for it on
	// import so that Create never waits on an unpack.
	snapshotter = "overlayfs"
	// internalLabelPrefix marks labels this package keeps for itself on the
	// container (they are hidden from Status.Labels).
	internalLabelPrefix = "warren.runtime/"
	labelLogPath        = internalLabelPrefix + "log-path"
	// killTimeout bounds how long Stop waits after SIGKILL before giving up:
	// only a process stuck in the kernel (D state) takes that long.
	killTimeout = 10 * time.Second
)

// Containerd is the Runtime over a containerd daemon's gRPC API.
type Containerd struct {
	client    *containerd.Client
	namespace string
	log       *zap.Logger
	// locks serializes lifecycle operations (create, start, stop, delete) on
	// one container ID so that two actors racing on the same ID see a
	// consistent container; different IDs never wait on each other.
	locks  keyedMutex
	closed atomic.Bool
	// fifoDir holds exec FIFOs next to the socket: a client in another
	// mount namespace than the daemon (an e2e test, a tool) shares the
	// socket's directory with the shim, not necessarily /run/containerd.
	fifoDir string
	// unpacked remembers, per image name, the manifest digest last found
	// unpacked: checking again costs several round trips on every create.
	// An entry is dropped when a create from it finds a layer missing.
	unpacked sync.Map
	// logging, when set, keeps task output as rotated JSON lines (logs.go).
	logging *LogOptions
}

var _ Runtime = (*Containerd)(nil)

// NewContainerd connects to the containerd at socket and keeps all
// containers in namespace (DefaultNamespace when empty).
func NewContainerd(ctx context.Context, socket, namespace string, log *zap.Logger) (*Containerd, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if log == nil {
		log = zap.NewNop()
	}
	unreachable := func(err error) error {
		return fmt.Errorf("containerd is not reachable at %s: %w; start containerd or omit --containerd to let warren run its own", socket, err)
	}
	if socket == "" {
		return nil, unreachable(errors.New("no socket path given"))
	}
	if _, err := os.Stat(socket); err != nil {
		return nil, unreachable(err)
	}
	client, err := containerd.New(socket,
		containerd.WithDefaultNamespace(namespace),
		containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, unreachable(err)
	}
	v, err := client.Version(ctx)
	if err != nil {
		client.Close()
		return nil, unreachable(err)
	}
	log.Info("connected to containerd",
		zap.String("socket", socket),
		zap.String("namespace", namespace),
		zap.String("version", v.Version))
	if ok, why := hostAppArmor(); ok {
		log.Info("tasks get the default AppArmor profile", zap.String("profile", AppArmorProfile))
	} else {
		log.Debug("tasks run without an AppArmor profile", zap.String("reason", why))
	}
	return &Containerd{client: client, namespace: namespace, log: log, fifoDir: filepath.Join(filepath.Dir(socket), "fifo")}, nil
}

// Close releases the gRPC connection. Containers and tasks keep running in
// their shims.
func (r *Containerd) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("close containerd client: %w", err)
	}
	return nil
}

// ImportImage loads an OCI-layout or docker-save tarball and unpacks every
// image in it.
func (r *Containerd) ImportImage(ctx context.Context, rd io.Reader) ([]string, error) {
	imgs, err := r.client.Import(ctx, rd,
		// An OCI layout that names images only by org.opencontainers.image.ref.name
		// gets them normalized here; bare tags ("v1") name nothing and are dropped.
		containerd.WithImageRefTranslator(func(ref string) string {
			if !strings.ContainsAny(ref, "/:@") {
				return "" // a tag without a repository names nothing
			}
			n, err := NormalizeImageRef(ref)
			if err != nil {
				return ""
			}
			return n
		}))
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w (is it an OCI layout or `docker save` tarball?)", err)
	}
	is := r.client.ImageService()
	var names []string
	seen := map[string]bool{}
	for _, img := range imgs {
		name, err := NormalizeImageRef(img.Name)
		if err != nil {
			r.log.Warn("skipping imported image with an unusable name", zap.String("image", img.Name), zap.Error(err))
			continue
		}
		if name != img.Name {
			// io.containerd.image.name is taken verbatim by containerd; store
			// it under the normalized name EnsureImage and Create look up.
			if err := r.putImage(ctx, images.Image{Name: name, Target: img.Target, Labels: img.Labels}); err != nil {
				return nil, err
			}
			if err := is.Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
				r.log.Warn("could not remove unnormalized image name", zap.String("image", img.Name), zap.Error(err))
			}
			img.Name = name
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		if err := containerd.NewImage(r.client, img).Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack imported image %s for %s: %w", name, snapshotter, err)
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("import image archive: it names no image; tag it before saving (docker save repo:tag, or set the io.containerd.image.name annotation): %w", ErrInvalidArgument)
	}
	sort.Strings(names)
	r.log.Info("imported images", zap.Strings("images", names))
	return names, nil
}

func (r *Containerd) putImage(ctx context.Context, img images.Image) error {
	is := r.client.ImageService()
	if _, err := is.Update(ctx, img, "target"); err == nil {
		return nil
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("tag image %s: %w", img.Name, err)
	}
	if _, err := is.Create(ctx, img); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("tag image %s: %w", img.Name, err)
	}
	return nil
}

// PullImage pulls ref and unpacks it.
func (r *Containerd) PullImage(ctx context.Context, ref string, opts PullOptions) error {
	name, err := NormalizeImageRef(ref)
	if err != nil {
		return err
	}
	plainHTTP := docker.MatchLocalhost
	if opts.PlainHTTP {
		plainHTTP = docker.MatchAllHosts
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(plainHTTP)),
	})
	start := time.Now()
	if _, err := r.client.Pull(ctx, name,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter)); err != nil {
		return fmt.Errorf("pull image %s: %w", name, err)
	}
	r.log.Info("pulled image", zap.String("image", name), zap.Duration("took", time.Since(start)))
	return nil
}

// EnsureImage makes sure ref is present and unpacked, pulling it if needed.
func (r *Containerd) EnsureImage(ctx context.Context, ref string) error {
	_, err := r.ensureImage(ctx, ref)
	return err
}

func (r *Containerd) ensureImage(ctx context.Context, ref string) (containerd.Image, error) {
	name, err := NormalizeImageRef(ref)
	if err != nil {
		return nil, err
	}
	img, err := r.client.GetImage(ctx, name)
	if err == nil {
		if d, ok := r.unpacked.Load(name); ok && d == img.Target().Digest {
			return img, nil
		}
		ok, err := img.IsUnpacked(ctx, snapshotter)
		if err != nil {
			return nil, fmt.Errorf("check image %s is unpacked: %w", name, err)
		}
		if !ok {
			if err := img.Unpack(ctx, snapshotter); err != nil {
				return nil, fmt.Errorf("unpack image %s: %w", name, err)
			}
		}
		r.unpacked.Store(name, img.Target().Digest)
		return img, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("look up image %s: %w", name, err)
	}
	if perr := r.PullImage(ctx, name, PullOptions{}); perr != nil {
		return nil, fmt.Errorf("image %s is not on this node and could not be pulled (%v): import it with `warren image import <file.tar>` or check that the registry is reachable: %w", name, perr, ErrNotFound)
	}
	img, err = r.client.GetImage(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("look up image %s after pull: %w", name, err)
	}
	return img, nil
}

// ListImages returns all image names in the namespace.
func (r *Containerd) ListImages(ctx context.Context) ([]string, error) {
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	sort.Strings(names)
	return names, nil
}

// Create makes the container and its writable snapshot.
func (r *Containerd) Create(ctx context.Context, spec ContainerSpec) error {
	spec, err := spec.validate()
	if err != nil {
		return err
	}
	defer r.locks.lock(spec.ID)()

	if _, err := r.client.LoadContainer(ctx, spec.ID); err == nil {
		return fmt.Errorf("create container %s: a container with this ID exists; delete it first: %w", spec.ID, ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	// A snapshot under this key without a container is debris from a create
	// that died half-way; it would make WithNewSnapshot fail forever.
	if err := r.client.SnapshotService(snapshotter).Remove(ctx, spec.ID); err == nil {
		r.log.Warn("removed stale snapshot", zap.String("container", spec.ID))
	}
	lbls := make(map[string]string, len(spec.Labels)+1)
	for k, v := range spec.Labels {
		lbls[k] = v
	}
	if spec.LogPath != "" {
		lbls[labelLogPath] = spec.LogPath
	}
	err = r.newContainer(ctx, spec, lbls)
	if errdefs.IsNotFound(err) {
		// A layer went missing behind our back (snapshots pruned by hand)
		// while the image was remembered as unpacked: check it for real.
		if name, nerr := NormalizeImageRef(spec.Image); nerr == nil {
			if _, had := r.unpacked.LoadAndDelete(name); had {
				err = r.newContainer(ctx, spec, lbls)
			}
		}
	}
	if err != nil {
		return err
	}
	r.log.Debug("created container", zap.String("container", spec.ID), zap.String("image", spec.Image))
	return nil
}

func (r *Containerd) newContainer(ctx context.Context, spec ContainerSpec, lbls map[string]string) error {
	img, err := r.ensureImage(ctx, spec.Image)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	specOpts, err := r.specOpts(ctx, spec, img)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	_, err = r.client.NewContainer(ctx, spec.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(spec.ID, img),
		containerd.WithRuntime(r.client.Runtime(), nil),
		containerd.WithContainerLabels(lbls),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("create container %s: %w", spec.ID, err)
		}
		return fmt.Errorf("create container %s from %s: %w", spec.ID, spec.Image, err)
	}
	return nil
}

// Start starts a new task for the container.
func (r *Containerd) Start(ctx context.Context, id string) (uint32, error) {
	defer r.locks.lock(id)()

	c, err := r.loadContainer(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", id, err)
	}
	if t, err := c.Task(ctx, nil); err == nil {
		st, err := t.Status(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return 0, fmt.Errorf("start %s: status of previous task: %w", id, err)
		}
		switch st.Status {
		case containerd.Running, containerd.Paused, containerd.Pausing:
			return t.Pid(), fmt.Errorf("start %s: its task is still running as pid %d; stop it first: %w", id, t.Pid(), ErrAlreadyExists)
		}
		// Stopped, or Created by a Start that failed half-way: clear it so
		// that the new task can take the container's place.
		if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return 0, fmt.Errorf("start %s: delete previous task: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return 0, fmt.Errorf("start %s: load previous task: %w", id, err)
	}

	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", id, err)
	}
	ioc := cio.NullIO
	if p := info.Labels[labelLogPath]; p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return 0, fmt.Errorf("start %s: create log directory: %w", id, err)
		}
		ioc = r.taskIO(p)
	}
	t, err := c.NewTask(ctx, ioc)
	if errdefs.IsAlreadyExists(err) {
		// Task above found none, so this is a hollow task (dropHollowTask):
		// clear it and create the task again.
		t, err = r.retryNewTask(ctx, c, ioc)
	}
	if err != nil {
		return 0, fmt.Errorf("start %s: create task: %w", id, err)
	}
	if err := t.Start(ctx); err != nil {
		if _, derr := t.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill); derr != nil {
			r.log.Warn("could not clean up task that failed to start", zap.String("container", id), zap.Error(derr))
		}
		return 0, fmt.Errorf("start %s: %w", id, err)
	}
	r.log.Debug("started task", zap.String("container", id), zap.Uint32("pid", t.Pid()))
	return t.Pid(), nil
}

// hollowRetry bounds how long Start waits for containerd to forget a
// hollow task it was told to delete: containerd 1.6 forgets it before the
// delete returns, later versions may only once its shim has exited.
const hollowRetry = 5 * time.Second

// retryNewTask deletes the hollow task in the container's way, then
// creates the task again until containerd has forgotten the hollow one.
func (r *Containerd) retryNewTask(ctx context.Context, c containerd.Container, ioc cio.Creator) (containerd.Task, error) {
	r.log.Warn("clearing a task a previous containerd left half-created", zap.String("container", c.ID()))
	if err := r.dropHollowTask(ctx, c.ID()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, hollowRetry)
	defer cancel()
	for {
		t, err := c.NewTask(ctx, ioc)
		if !errdefs.IsAlreadyExists(err) {
			return t, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("containerd still holds the half-created task %s after deleting it: %w", c.ID(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dropHollowTask deletes a task that containerd lists but whose shim
// holds no process. A containerd that dies between starting a task's shim
// and the shim's create (warren SIGKILLed mid-start takes its own
// containerd down with it) leaves that shim running, and the next
// containerd adopts it: then Task says the task is not found while
// NewTask says it already exists, so the container could never start
// again, and deleting the container would leak the shim. Nil when there is
// no task.
func (r *Containerd) dropHollowTask(ctx context.Context, id string) error {
	_, err := r.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	// A hollow task's shim answers not found for the process it never
	// made, while containerd removes the task all the same.
	if err = errdefs.FromGRPC(err); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete the task a previous containerd left half-created: %w", err)
	}
	return nil
}

// Wait reports the current task's exit once.
func (r *Containerd) Wait(ctx context.Context, id string) (<-chan ExitStatus, error) {
	t, err := r.loadTask(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("wait for %s: %w", id, err)
	}
	ch, err := t.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for %s: %w", id, err)
	}
	out := make(chan ExitStatus, 1)
	go func() {
		defer close(out)
		out <- r.awaitExit(ctx, id, t.Pid(), ch)
	}()
	return out, nil
}

// awaitExit turns containerd's exit channel into an ExitStatus. The Wait RPC
// breaks when containerd restarts (the supervised daemon, an upgrade) while
// the task lives on in its shim; then it waits again on the reloaded task
// rather than report a bogus exit to the actor.
func (r *Containerd) awaitExit(ctx context.Context, id string, pid uint32, ch <-chan containerd.ExitStatus) ExitStatus {
	backoff := 100 * time.Millisecond
	for {
		es := <-ch
		code, at, err := es.Result()
		if err == nil {
			return ExitStatus{Code: code, ExitedAt: at}
		}
		if !isUnavailable(err) || ctx.Err() != nil || r.closed.Load() {
			return ExitStatus{Err: fmt.Errorf("wait for %s: %w", id, err)}
		}
		r.log.Debug("containerd went away while waiting; waiting again", zap.String("container", id), zap.Error(err))
		for {
			select {
			case <-ctx.Done():
				return ExitStatus{Err: fmt.Errorf("wait for %s: %w", id, ctx.Err())}
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 3*time.Second)
			t, err := r.loadTask(ctx, id)
			if err != nil {
				if isUnavailable(err) && !r.closed.Load() {
					continue
				}
				return ExitStatus{Err: fmt.Errorf("wait for %s: task lost while containerd was away: %w", id, err)}
			}
			if t.Pid() != pid {
				// Someone started a new task meanwhile; the awaited one is
				// gone and its exit code with it.
				return ExitStatus{Err: fmt.Errorf("wait for %s: task pid %d was replaced by pid %d while containerd was away: %w", id, pid, t.Pid(), ErrNotFound)}
			}
			if ch, err = t.Wait(ctx); err != nil {
				return ExitStatus{Err: fmt.Errorf("wait for %s: %w", id, err)}
			}
			break
		}
	}
}

func isUnavailable(err error) bool {
	// The Wait RPC returns raw gRPC errors; other calls convert to errdefs.
	return errdefs.IsUnavailable(err) || status.Code(err) == codes.Unavailable
}

// Stop asks the task to exit with SIGTERM and SIGKILLs it after grace.
func (r *Containerd) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.locks.lock(id)()

	t, err := r.loadTask(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	st, err := t.Status(ctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	if st.Status == containerd.Stopped {
		return nil
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := t.Wait(waitCtx)
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	exited := make(chan ExitStatus, 1)
	go func() { exited <- r.awaitExit(waitCtx, id, t.Pid(), ch) }()

	if err := t.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop %s: send SIGTERM: %w", id, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case es := <-exited:
		return es.Err
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	case <-timer.C:
	}
	r.log.Info("task did not exit within grace period; killing it",
		zap.String("container", id), zap.Duration("grace", grace))
	if err := t.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop %s: send SIGKILL: %w", id, err)
	}
	select {
	case es := <-exited:
		return es.Err
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	case <-time.After(killTimeout):
		return fmt.Errorf("stop %s: still running %s after SIGKILL (stuck in the kernel?); check pid %d", id, killTimeout, t.Pid())
	}
}

// Kill sends sig to the task's init process.
func (r *Containerd) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	t, err := r.loadTask(ctx, id)
	if err != nil {
		return fmt.Errorf("kill %s: %w", id, err)
	}
	if err := t.Kill(ctx, sig); err != nil {
		return fmt.Errorf("kill %s with %s: %w", id, sig, err)
	}
	return nil
}

// Delete removes task, container, snapshot and cgroups. It is idempotent.
func (r *Containerd) Delete(ctx context.Context, id string) error {
	defer r.locks.lock(id)()

	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	var cgroupPath string
	if s, err := c.Spec(ctx); err == nil && s.Linux != nil {
		cgroupPath = s.Linux.CgroupsPath
	}
	t, err := c.Task(ctx, nil)
	switch {
	case err == nil:
		if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete %s: delete task: %w", id, err)
		}
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("delete %s: load task: %w", id, err)
	default:
		// No task as far as Task can see; a hollow one would outlive the
		// container with its shim.
		if err := r.dropHollowTask(ctx, id); err != nil {
			return fmt.Errorf("delete %s: %w", id, err)
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	if err := removeCgroup(cgroupPath, id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	r.log.Debug("deleted container", zap.String("container", id))
	return nil
}

// Status reports one container.
func (r *Containerd) Status(ctx context.Context, id string) (Status, error) {
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return Status{ID: id}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", id, err)
	}
	s, err := r.status(ctx, c)
	if errdefs.IsNotFound(err) {
		return Status{ID: id}, nil
	}
	return s, err
}

// List reports every container in the namespace.
func (r *Containerd) List(ctx context.Context) ([]Status, error) {
	cs, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]Status, 0, len(cs))
	for _, c := range cs {
		s, err := r.status(ctx, c)
		if errdefs.IsNotFound(err) {
			continue // deleted while we listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (r *Containerd) status(ctx context.Context, c containerd.Container) (Status, error) {
	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", c.ID(), err)
	}
	s := Status{ID: c.ID(), Exists: true, Image: info.Image, Labels: map[string]string{}}
	for k, v := range info.Labels {
		if !strings.HasPrefix(k, internalLabelPrefix) {
			s.Labels[k] = v
		}
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return s, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: load task: %w", c.ID(), err)
	}
	ts, err := t.Status(ctx)
	if errdefs.IsNotFound(err) {
		return s, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: task status: %w", c.ID(), err)
	}
	s.Pid = t.Pid()
	switch ts.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		s.Running = true
	case containerd.Stopped:
		s.ExitCode = ts.ExitStatus
		s.ExitedAt = ts.ExitTime
	}
	return s, nil
}

// loadContainer wraps not-found with advice.
func (r *Containerd) loadContainer(ctx context.Context, id string) (containerd.Container, error) {
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("no container %q in namespace %s; create it first: %w", id, r.namespace, ErrNotFound)
	}
	return c, err
}

// loadTask returns the container's current task; not-found errors (for the
// container or the task) wrap ErrNotFound.
func (r *Containerd) loadTask(ctx context.Context, id string) (containerd.Task, error) {
	c, err := r.loadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("container %s has no task; start it first: %w", id, ErrNotFound)
	}
	return t, err
}

// keyedMutex is a set of mutexes created on demand, one per key, freed when
// nobody holds or waits for them.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

// lock locks key and returns the unlock function.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*refMutex{}
	}
	m := k.m[key]
	if m == nil {
		m = &refMutex{}
		k.m[key] = m
	}
	m.refs++
	k.mu.Unlock()

	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		m.refs--
		if m.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// Exec runs cmd inside the container's running task (health checks) and
// returns its exit code and up to 4 KiB of its combined output. The context
// bounds it; a command still running then is killed.
func (r *Containerd) Exec(ctx context.Context, id string, cmd []string) (uint32, string, error) {
	if len(cmd) == 0 {
		return 0, "", fmt.Errorf("exec in %s: no command: %w", id, ErrInvalidArgument)
	}
	c, err := r.loadContainer(ctx, id)
	if err != nil {
		return 0, "", fmt.Errorf("exec in %s: %w", id, err)
	}
	t, err := r.loadTask(ctx, id)
	if err != nil {
		return 0, "", fmt.Errorf("exec in %s: %w", id, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("exec in %s: read spec: %w", id, err)
	}
	ps := *spec.Process
	ps.Args, ps.Terminal = cmd, false
	out := &capped{max: 4096}
	execID := fmt.Sprintf("exec-%d", time.Now().UnixNano())
	// Cleanup must outlive a cancelled ctx.
	bg := context.WithoutCancel(ctx)
	if err := os.MkdirAll(r.fifoDir, 0o700); err != nil {
		return 0, "", fmt.Errorf("exec in %s: fifo dir: %w", id, err)
	}
	p, err := t.Exec(ctx, execID, &ps, cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(r.fifoDir)))
	if err != nil {
		return 0, "", fmt.Errorf("exec in %s: %w", id, err)
	}
	defer p.Delete(bg, containerd.WithProcessKill) //nolint:errcheck
	ch, err := p.Wait(bg)
	if err != nil {
		return 0, "", fmt.Errorf("exec in %s: wait: %w", id, err)
	}
	if err := p.Start(ctx); err != nil {
		return 0, "", fmt.Errorf("exec %q in %s: %w", cmd[0], id, err)
	}
	select {
	case st := <-ch:
		code, _, err := st.Result()
		// The exit can arrive before the output is copied out of the FIFOs.
		if io := p.IO(); io != nil {
			io.Wait()
		}
		return code, out.String(), err
	case <-ctx.Done():
		_ = p.Kill(bg, syscall.SIGKILL)
		<-ch
		return 0, out.String(), fmt.Errorf("exec %q in %s: %w", cmd[0], id, ctx.Err())
	}
}

// capped keeps the first max bytes written to it.
type capped struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}
