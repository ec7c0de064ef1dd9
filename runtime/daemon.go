package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"go.uber.org/zap"
)

// Daemon timing. Variables so tests can shorten them.
var (
	daemonReadyTimeout = 20 * time.Second
	daemonStopTimeout  = 10 * time.Second
	restartBackoffMin  = 500 * time.Millisecond
	restartBackoffMax  = 30 * time.Second
	// healthyUptime is how long a daemon must have run for its next crash to
	// restart it without delay, instead of continuing the backoff.
	healthyUptime = time.Minute
)

// maxSocketPath is the longest path a unix socket can bind to: sun_path is
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// Daemon is a containerd that warren runs as its own child when the user
// names no socket. It is restarted with backoff if it dies. Containers live
// in shims (containerd-shim-runc-v2) that are not the daemon's children for
// long: they keep running when the daemon stops or restarts, and a new
// daemon on the same directory adopts them.
type Daemon struct {
	dir, bin  string
	socket    string
	config    string
	pidFile   string
	logFile   string
	log       *zap.Logger
	stopCh    chan struct{} // closed by Stop
	supervise chan struct{} // closed when the supervisor goroutine returns

	stopOnce sync.Once
	stopErr  error // written by the supervisor before it closes supervise

	mu  sync.Mutex
	cur *daemonProc // the live process, nil while restarting; guarded by mu
}

// daemonProc is one run of the containerd binary.
type daemonProc struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{} // closed after Wait returns; err is then set
	err     error
}

// StartDaemon writes <dir>/config.toml, starts containerd with it and waits
// until its socket answers. dir holds everything: root and state
// directories, the socket, containerd.log and containerd.pid.
func StartDaemon(ctx context.Context, dir string, log *zap.Logger) (*Daemon, error) {
	if log == nil {
		log = zap.NewNop()
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("containerd not found in PATH: install it (apt-get install containerd runc) or run `go tool task setup`: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("containerd directory: %w", err)
	}
	d := &Daemon{
		dir:       dir,
		bin:       bin,
		socket:    filepath.Join(dir, "containerd.sock"),
		config:    filepath.Join(dir, "config.toml"),
		pidFile:   filepath.Join(dir, "containerd.pid"),
		logFile:   filepath.Join(dir, "containerd.log"),
		log:       log.With(zap.String("component", "containerd")),
		stopCh:    make(chan struct{}),
		supervise: make(chan struct{}),
	}
	// The ttrpc socket is the grpc one plus ".ttrpc", the longest path bound.
	if n := len(d.socket + ".ttrpc"); n > maxSocketPath {
		return nil, fmt.Errorf("containerd socket path %s.ttrpc is %d bytes but unix sockets allow %d: use a shorter data directory", d.socket, n, maxSocketPath)
	}
	for _, sub := range []string{"root", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o711); err != nil {
			return nil, fmt.Errorf("create containerd directory: %w", err)
		}
	}
	if err := os.WriteFile(d.config, []byte(d.configTOML()), 0o644); err != nil {
		return nil, fmt.Errorf("write containerd config: %w", err)
	}
	if err := d.stopOrphan(); err != nil {
		return nil, err
	}
	if conn, err := net.DialTimeout("unix", d.socket, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("something already serves %s but it is not the containerd recorded in %s; stop it or use another data directory", d.socket, d.pidFile)
	}
	// A socket file left by a killed daemon would make bind fail.
	for _, s := range []string{d.socket, d.socket + ".ttrpc"} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale containerd socket: %w", err)
		}
	}

	p, err := d.spawn()
	if err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx, p); err != nil {
		d.kill(p)
		os.Remove(d.pidFile)
		return nil, err
	}
	go d.superviseLoop(p)
	d.log.Info("containerd started", zap.String("socket", d.socket), zap.Int("pid", p.cmd.Process.Pid))
	return d, nil
}

// Socket is the address to give NewContainerd.
func (d *Daemon) Socket() string { return d.socket }

// Pid is the current containerd process id, 0 while it is being restarted.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return 0
	}
	return d.cur.cmd.Process.Pid
}

// Stop stops containerd: SIGTERM, up to 10s, then SIGKILL. Containers keep
// running in their shims. Stop is idempotent.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() { close(d.stopCh) })
	// The supervisor owns the process; it terminates it on seeing stopCh.
	<-d.supervise
	if err := os.Remove(d.pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove containerd pid file: %w", err)
	}
	return d.stopErr
}

// terminate asks p to exit and kills it if it will not.
func (d *Daemon) terminate(p *daemonProc) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop containerd: %w", err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(daemonStopTimeout):
	}
	d.log.Warn("containerd did not exit after SIGTERM; killing it", zap.Duration("waited", daemonStopTimeout))
	d.kill(p)
	return nil
}

func (d *Daemon) kill(p *daemonProc) {
	p.cmd.Process.Kill()
	<-p.exited
}

// configTOML is the daemon config. Every path lives under dir so that several
// warren nodes can share one machine; the CRI plugin (kubelet's API) and the
// snapshotters this machine cannot use are off to keep startup fast and the
// log quiet.
func (d *Daemon) configTOML() string {
	q := strconv.Quote
	return fmt.Sprintf(`# Written by warren; rewritten on every start.
version = 2
root = %s
state = %s
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %s
`, q(filepath.Join(d.dir, "root")), q(filepath.Join(d.dir, "state")),
		q(d.socket), q(d.socket+".ttrpc"), q(filepath.Join(d.dir, "opt")))
}

// stopOrphan stops a containerd left running for this directory by a warren
// that was SIGKILLed before it could stop its daemon (and whose death signal
// did not reach it).
func (d *Daemon) stopOrphan() error {
	b, err := os.ReadFile(d.pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read containerd pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !d.isOurs(pid) {
		// A stale file whose pid was reused by something else: not ours.
		return os.Remove(d.pidFile)
	}
	d.log.Warn("stopping containerd left running by a previous warren", zap.Int("pid", pid))
	proc, _ := os.FindProcess(pid)
	proc.Signal(syscall.SIGTERM)
	if !waitGone(pid, daemonStopTimeout) {
		proc.Signal(syscall.SIGKILL)
		if !waitGone(pid, 5*time.Second) {
			return fmt.Errorf("containerd pid %d from a previous warren does not exit; kill it by hand", pid)
		}
	}
	return os.Remove(d.pidFile)
}

// isOurs reports whether pid is a containerd started with this dir's config.
func (d *Daemon) isOurs(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != "containerd" {
		return false
	}
	for i, a := range args {
		if a == "--config="+d.config || (a == "--config" && i+1 < len(args) && args[i+1] == d.config) {
			return true
		}
	}
	return false
}

// waitGone polls until pid has exited (or is a zombie someone else must
// reap) or the timeout passes.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// The state follows the parenthesised command name.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spawn starts one containerd process and records it as current.
//
// Pdeathsig fires when the *thread* that forked the child exits, not the
// process, and Go may retire idle threads. So the child is started and
// waited for on one goroutine locked to its thread for the child's whole
// life: the signal then fires only when warren itself dies.
func (d *Daemon) spawn() (*daemonProc, error) {
	logf, err := os.OpenFile(d.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open containerd log: %w", err)
	}
	p := &daemonProc{exited: make(chan struct{})}
	p.cmd = exec.Command(d.bin, "--config", d.config)
	p.cmd.Dir = d.dir
	p.cmd.Stdout = logf
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a ^C at warren's terminal must not reach
		// containerd before warren has decided what to do.
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	started := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		defer logf.Close()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		p.started = time.Now()
		started <- nil
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}

	d.mu.Lock()
	d.cur = p
	d.mu.Unlock()
	if err := os.WriteFile(d.pidFile, []byte(strconv.Itoa(p.cmd.Process.Pid)+"\n"), 0o644); err != nil {
		d.log.Warn("could not write containerd pid file", zap.Error(err))
	}
	return p, nil
}

// waitReady polls until containerd serves on its socket.
func (d *Daemon) waitReady(ctx context.Context, p *daemonProc) error {
	ctx, cancel := context.WithTimeout(ctx, daemonReadyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if d.serving(ctx) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("containerd exited during startup (%v); its log %s ends with:\n%s", p.err, d.logFile, d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("containerd did not answer on %s within %s; its log %s ends with:\n%s", d.socket, daemonReadyTimeout, d.logFile, d.logTail())
		case <-tick.C:
		}
	}
}

func (d *Daemon) serving(ctx context.Context) bool {
	if _, err := os.Stat(d.socket); err != nil {
		return false
	}
	c, err := containerd.New(d.socket, containerd.WithTimeout(time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	ok, err := c.IsServing(ctx)
	return err == nil && ok
}

// logTail returns the last lines of containerd.log for error messages.
func (d *Daemon) logTail() string {
	b, err := os.ReadFile(d.logFile)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 2048
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(bytes.TrimRight(b, "\n"))
}

// superviseLoop owns the containerd process: it restarts it whenever it
// exits without Stop, with exponential backoff that resets after a healthy
// run, and terminates it when Stop is called.
func (d *Daemon) superviseLoop(p *daemonProc) {
	defer close(d.supervise)
	backoff := restartBackoffMin
	for {
		select {
		case <-p.exited:
		case <-d.stopCh:
			d.stopErr = d.terminate(p)
			d.log.Info("containerd stopped")
			return
		}
		d.mu.Lock()
		d.cur = nil
		d.mu.Unlock()
		if time.Since(p.started) > healthyUptime {
			backoff = restartBackoffMin
		}
		d.log.Error("containerd exited unexpectedly; restarting it",
			zap.Error(p.err), zap.Duration("backoff", backoff), zap.String("log_tail", d.logTail()))
		for {
			select {
			case <-time.After(backoff):
			case <-d.stopCh:
				return
			}
			backoff = min(2*backoff, restartBackoffMax)
			np, err := d.spawn()
			if err != nil {
				d.log.Error("could not restart containerd", zap.Error(err))
				continue
			}
			p = np
			break
		}
		// Readiness is only logged: clients reconnect on their own.
		go func(p *daemonProc) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				select {
				case <-d.stopCh:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := d.waitReady(ctx, p); err != nil {
				select {
				case <-d.stopCh: // stopped while starting: nothing to report
				default:
					d.log.Error("restarted containerd is not answering", zap.Error(err))
				}
				return
			}
			d.log.Info("containerd restarted", zap.Int("pid", p.cmd.Process.Pid))
		}(p)
	}
}
