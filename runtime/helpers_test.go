package runtime

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/testimage"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// These tests run the real thing: a containerd started by StartDaemon, runc,
// overlayfs, cgroups. They need root and the containerd binaries, and skip
// with the reason otherwise.

const testNamespace = "warren-test"

var (
	imageOnce sync.Once
	imageDir  string
	imagePath string
	imageErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

func requireContainerd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containerd and runc; run `sudo go test ./runtime/`")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not found in PATH: install it (apt-get install containerd runc) or run `go tool task setup`", bin)
		}
	}
}

// testImageTar builds the test app image once per test binary.
func testImageTar(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		imageDir, imageErr = os.MkdirTemp("", "wrt-image")
		if imageErr != nil {
			return
		}
		imagePath = filepath.Join(imageDir, "demo.tar")
		imageErr = testimage.Build(context.Background(), imagePath, "wrt-demo", "v1", "v1")
	})
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
	return imagePath
}

const testImage = "docker.io/library/wrt-demo:v1"

// testLogger logs through t, and drops what background goroutines log after
// the test is over (t.Log would panic then).
func testLogger(t *testing.T) *zap.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	enc := zap.NewDevelopmentEncoderConfig()
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), zap.DebugLevel))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// env is one test's containerd: a daemon in a short /tmp directory (the
// socket path must stay under 108 bytes) and a Runtime on it. Its cleanup
// removes everything the test created even when the test fails half-way:
// containers, the daemon, stray shims, mounts, cgroups, the directory.
type env struct {
	t        *testing.T
	dir      string
	log      *zap.Logger
	d        *Daemon
	rt       *Containerd
	cgParent string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireContainerd(t)
	dir, err := os.MkdirTemp("/tmp", "wrt")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, log: testLogger(t), cgParent: "/warren-test-" + filepath.Base(dir)}
	t.Cleanup(e.cleanup)
	e.startDaemon()
	e.connect()
	return e
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) startDaemon() {
	e.t.Helper()
	d, err := StartDaemon(e.ctx(), e.dir, e.log)
	if err != nil {
		e.t.Fatalf("start containerd: %v", err)
	}
	e.d = d
}

func (e *env) connect() {
	e.t.Helper()
	rt, err := NewContainerd(e.ctx(), e.d.Socket(), testNamespace, e.log)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	e.rt = rt
}

// id makes container IDs unique per test directory: the runc state root
// (/run/containerd/runc/<namespace>) is shared by all daemons on the machine.
func (e *env) id(name string) string { return filepath.Base(e.dir) + "-" + name }

func (e *env) importImage() {
	e.t.Helper()
	f, err := os.Open(testImageTar(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	names, err := e.rt.ImportImage(e.ctx(), f)
	if err != nil {
		e.t.Fatalf("import: %v", err)
	}
	if len(names) != 1 || names[0] != testImage {
		e.t.Fatalf("imported %q, want [%s]", names, testImage)
	}
}

// spec is a container of the test image writing its log into the test dir.
func (e *env) spec(name string) ContainerSpec {
	id := e.id(name)
	return ContainerSpec{
		ID:           id,
		Image:        "wrt-demo:v1",
		Args:         []string{"--listen", ":8080"},
		LogPath:      filepath.Join(e.dir, "logs", id+".log"),
		CgroupParent: e.cgParent,
	}
}

func (e *env) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	socket := filepath.Join(e.dir, "containerd.sock")
	if e.d == nil {
		// The test stopped the daemon; bring one up to delete containers.
		if d, err := StartDaemon(ctx, e.dir, zap.NewNop()); err == nil {
			e.d = d
		}
		if e.rt != nil {
			e.rt.Close()
			e.rt = nil
		}
	}
	if e.rt == nil && e.d != nil {
		e.rt, _ = NewContainerd(ctx, socket, testNamespace, zap.NewNop())
	}
	if e.rt != nil {
		if sts, err := e.rt.List(ctx); err == nil {
			for _, s := range sts {
				if err := e.rt.Delete(ctx, s.ID); err != nil {
					e.t.Logf("cleanup: delete %s: %v", s.ID, err)
				}
			}
		}
		e.rt.Close()
	}
	if e.d != nil {
		if err := e.d.Stop(); err != nil {
			e.t.Logf("cleanup: stop containerd: %v", err)
		}
	}
	killShims(e.t, socket)
	unmountUnder(e.t, e.dir)
	for _, d := range cgroupDirs(e.cgParent) {
		if err := rmdirTree(d); err != nil {
			e.t.Logf("cleanup: %v", err)
		}
	}
	if err := os.RemoveAll(e.dir); err != nil {
		e.t.Logf("cleanup: %v", err)
	}
}

// killShims kills shims still serving containers of this test's daemon:
// they are children of our containerd, found by its socket on their command
// line.
func killShims(t *testing.T, socket string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "containerd-shim") {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == socket {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				t.Logf("cleanup: killing leftover shim pid %d", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// unmountUnder detaches mounts below dir (rootfs overlays of tasks whose
// shim was killed), deepest first.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mps = append(mps, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		t.Logf("cleanup: unmounting %s", mp)
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Logf("cleanup: unmount %s: %v", mp, err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes. A deadline is a
// failure bound, not a performance assertion.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until the container log contains s and returns the log.
func waitLog(t *testing.T, path, s string) string {
	t.Helper()
	var log string
	waitFor(t, fmt.Sprintf("%q in %s", s, path), 20*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		log = string(b)
		return strings.Contains(log, s)
	})
	return log
}

// receive waits for the one ExitStatus of a Wait channel.
func receive(t *testing.T, ch <-chan ExitStatus) ExitStatus {
	t.Helper()
	select {
	case es, ok := <-ch:
		if !ok {
			t.Fatal("wait channel closed without a status")
		}
		return es
	case <-time.After(30 * time.Second):
		t.Fatal("no exit status within 30s")
	}
	return ExitStatus{}
}

func alive(pid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
