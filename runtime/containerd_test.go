package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/snapshots"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestContainerLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()

	if err := e.rt.EnsureImage(ctx, "wrt-demo:v1"); err != nil {
		t.Fatalf("EnsureImage of an imported image: %v", err)
	}
	imgs, err := e.rt.ListImages(ctx)
	if err != nil || !slices.Contains(imgs, testImage) {
		t.Fatalf("ListImages = %q, %v; want it to contain %s", imgs, err, testImage)
	}

	resolv := filepath.Join(e.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := e.spec("web")
	spec.Env = []string{"GREETING=hello", "VERSION=v1-env"}
	spec.Labels = map[string]string{"warren.task": "web.1", "warren.service": "web"}
	spec.MemoryLimitBytes = 64 << 20
	spec.CPUMillis = 500
	spec.Hostname = "web-1"
	spec.Mounts = []Mount{{Type: "tmpfs", Target: "/scratch"}}
	spec.ResolvConfPath = resolv
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := e.rt.Create(ctx, spec); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second create: %v, want ErrAlreadyExists", err)
	}
	st, err := e.rt.Status(ctx, spec.ID)
	if err != nil || !st.Exists || st.Running || st.Image != testImage {
		t.Fatalf("status after create = %+v, %v; want existing, not running, image %s", st, err, testImage)
	}

	pid, err := e.rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if pid == 0 {
		t.Fatal("start returned pid 0")
	}
	if _, err := e.rt.Start(ctx, spec.ID); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("start while running: %v, want ErrAlreadyExists", err)
	}
	st, err = e.rt.Status(ctx, spec.ID)
	if err != nil || !st.Running || st.Pid != pid {
		t.Fatalf("status after start = %+v, %v; want running as pid %d", st, err, pid)
	}
	if !maps(st.Labels, spec.Labels) {
		t.Errorf("status labels = %v, want exactly %v", st.Labels, spec.Labels)
	}

	t.Run("log receives output with env and args", func(t *testing.T) {
		log := waitLog(t, spec.LogPath, "listening on :8080")
		for _, want := range []string{
			"testapp starting version=v1-env listen=:8080 hostname=web-1",
			`args=["--listen" ":8080"]`,
			"env GREETING=hello",
			"env VERSION=v1-env", // spec env overrides the image's VERSION=v1
		} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
		}
	})
	t.Run("cgroup limits applied", func(t *testing.T) {
		cg := filepath.Join(cgroupRoot, "memory", e.cgParent, spec.ID, "memory.limit_in_bytes")
		if got := readTrim(t, cg); got != strconv.Itoa(64<<20) {
			t.Errorf("%s = %s, want %d", cg, got, 64<<20)
		}
		cq := filepath.Join(cgroupRoot, "cpu", e.cgParent, spec.ID, "cpu.cfs_quota_us")
		if got := readTrim(t, cq); got != "50000" {
			t.Errorf("%s = %s, want 50000", cq, got)
		}
		procs := readTrim(t, filepath.Join(cgroupRoot, "memory", e.cgParent, spec.ID, "cgroup.procs"))
		if !slices.Contains(strings.Fields(procs), strconv.Itoa(int(pid))) {
			t.Errorf("pid %d not in its cgroup (procs %q)", pid, procs)
		}
	})
	t.Run("hostname, mounts, resolv.conf", func(t *testing.T) {
		root := fmt.Sprintf("/proc/%d/root", pid)
		if got := readTrim(t, root+"/etc/resolv.conf"); got != "nameserver 10.0.0.53" {
			t.Errorf("resolv.conf in container = %q", got)
		}
		mounts := readTrim(t, fmt.Sprintf("/proc/%d/mounts", pid))
		if !strings.Contains(mounts, "tmpfs /scratch tmpfs") {
			t.Errorf("no tmpfs at /scratch in:\n%s", mounts)
		}
		// The hostname lives in the container's UTS namespace; the app
		// prints what it sees at start.
		if log, _ := os.ReadFile(spec.LogPath); !strings.Contains(string(log), "hostname=web-1 ") {
			t.Errorf("app did not see hostname web-1:\n%s", log)
		}
	})

	ch, err := e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := e.rt.Stop(ctx, spec.ID, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if es := receive(t, ch); es.Err != nil || es.Code != 0 || es.ExitedAt.IsZero() {
		t.Fatalf("exit after SIGTERM = %+v, want code 0 with a time", es)
	}
	waitLog(t, spec.LogPath, "testapp received terminated")
	st, _ = e.rt.Status(ctx, spec.ID)
	if st.Running || st.ExitCode != 0 || st.ExitedAt.IsZero() {
		t.Fatalf("status after stop = %+v", st)
	}
	if err := e.rt.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatalf("stop of a stopped container: %v", err)
	}
	// Wait on a stopped task reports its exit at once.
	ch, err = e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if es := receive(t, ch); es.Err != nil || es.Code != 0 {
		t.Fatalf("wait on stopped task = %+v", es)
	}

	// A second start replaces the stopped task and appends to the same log.
	pid2, err := e.rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if pid2 == pid {
		t.Errorf("restart reused pid %d", pid)
	}
	waitFor(t, "second start in log", 20*time.Second, func() bool {
		b, _ := os.ReadFile(spec.LogPath)
		return strings.Count(string(b), "testapp starting") == 2
	})

	// Delete kills the running task and leaves nothing behind.
	if err := e.rt.Delete(ctx, spec.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if alive(pid2) {
		t.Errorf("pid %d still alive after delete", pid2)
	}
	if st, err := e.rt.Status(ctx, spec.ID); err != nil || st.Exists {
		t.Fatalf("status after delete = %+v, %v; want Exists=false", st, err)
	}
	if _, err := e.rt.client.SnapshotService(snapshotter).Stat(ctx, spec.ID); !errdefs.IsNotFound(err) {
		t.Errorf("snapshot %s still there after delete (%v)", spec.ID, err)
	}
	for _, d := range cgroupDirs(filepath.Join(e.cgParent, spec.ID)) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there after delete (%v)", d, err)
		}
	}
	if err := e.rt.Delete(ctx, spec.ID); err != nil {
		t.Errorf("second delete: %v, want nil", err)
	}
	if sts, err := e.rt.List(ctx); err != nil || len(sts) != 0 {
		t.Errorf("list after delete = %+v, %v", sts, err)
	}
	for name, err := range map[string]error{
		"start": func() error { _, err := e.rt.Start(ctx, spec.ID); return err }(),
		"wait":  func() error { _, err := e.rt.Wait(ctx, spec.ID); return err }(),
		"kill":  e.rt.Kill(ctx, spec.ID, syscall.SIGTERM),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of a deleted container: %v, want ErrNotFound", name, err)
		}
	}
	if err := e.rt.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Errorf("stop of a deleted container: %v, want nil", err)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()
	spec := e.spec("stubborn")
	spec.Args = []string{"--ignore-sigterm", "--listen", ":8080"}
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	waitLog(t, spec.LogPath, "ignoring SIGTERM")
	ch, err := e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Stop(ctx, spec.ID, 300*time.Millisecond); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if es := receive(t, ch); es.Err != nil || es.Code != 128+uint32(syscall.SIGKILL) {
		t.Fatalf("exit = %+v, want code 137 (SIGKILL)", es)
	}
}

// TestHostNetworkHTTP joins the test's own network namespace by path (as
// netmesh's namespaces are joined), so the app is reachable on loopback and
// the crash and health endpoints can be driven.
func TestHostNetworkHTTP(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()
	port := freePort(t)
	spec := e.spec("http")
	spec.Args = nil
	spec.NetNSPath = fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	spec.Hostname = "web-7"
	spec.Env = []string{"PORT=" + strconv.Itoa(port), "ECHO_ENV=FOO,BAR", "FOO=foo-value", "GREETING=hi", "WARREN_TASK_ID=task-7"}
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var body string
	waitFor(t, "app answering on "+base, 20*time.Second, func() bool {
		b, code, err := get(base + "/")
		body = b
		return err == nil && code == 200
	})
	want := "hostname=web-7\nversion=v1\ntask=task-7\nFOO=foo-value\nBAR=\nGREETING=hi\n"
	if body != want {
		t.Errorf("GET / =\n%s\nwant\n%s", body, want)
	}
	b, _, err := get(base + "/?format=json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Hostname, Version string
		Env               map[string]string
	}
	if err := json.Unmarshal([]byte(b), &doc); err != nil || doc.Hostname != "web-7" || doc.Version != "v1" || doc.Env["GREETING"] != "hi" || doc.Env["FOO"] != "foo-value" {
		t.Errorf("GET /?format=json = %s (%v)", b, err)
	}
	for _, step := range []struct {
		method, path string
		wantHealth   int
	}{
		{"GET", "", 200},
		{"POST", "/healthz/fail", 503},
		{"POST", "/healthz/ok", 200},
	} {
		if step.method == "POST" {
			if _, err := http.Post(base+step.path, "", nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, code, err := get(base + "/healthz"); err != nil || code != step.wantHealth {
			t.Errorf("after %s %s: /healthz = %d, %v; want %d", step.method, step.path, code, err, step.wantHealth)
		}
	}

	ch, err := e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/exit?code=3", "", nil)
	if err != nil {
		t.Fatalf("POST /exit: %v", err)
	}
	resp.Body.Close()
	if es := receive(t, ch); es.Err != nil || es.Code != 3 {
		t.Fatalf("exit = %+v, want code 3", es)
	}
	if st, _ := e.rt.Status(ctx, spec.ID); st.Running || st.ExitCode != 3 {
		t.Errorf("status after crash = %+v, want stopped with code 3", st)
	}

	// Start after a crash, then Kill.
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start after crash: %v", err)
	}
	ch, err = e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Kill(ctx, spec.ID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if es := receive(t, ch); es.Code != 137 {
		t.Fatalf("exit after kill = %+v, want 137", es)
	}
}

func TestImageErrors(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	const missing = "wrt-no-such-image:v9"
	err := e.rt.EnsureImage(ctx, missing)
	if err == nil {
		t.Fatal("EnsureImage of a missing image succeeded")
	}
	for _, want := range []string{"docker.io/library/" + missing, "warren image import"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("error does not wrap ErrNotFound: %v", err)
	}
	spec := e.spec("noimage")
	spec.Image = missing
	if err := e.rt.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("create with missing image: %v; want an error naming it", err)
	}
	if st, _ := e.rt.Status(ctx, spec.ID); st.Exists {
		t.Error("a failed create left a container")
	}
	if _, err := e.rt.ImportImage(ctx, strings.NewReader("not a tarball")); err == nil {
		t.Error("import of garbage succeeded")
	}
}

// TestImportDockerSave imports the test image re-packed in `docker save`
// format, whose names come from RepoTags and must be normalized.
func TestImportDockerSave(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	archive := dockerSave(t, testImageTar(t), "wrt-saved:v2")
	names, err := e.rt.ImportImage(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"docker.io/library/wrt-saved:v2"}; !slices.Equal(names, want) {
		t.Fatalf("imported %q, want %q", names, want)
	}
	spec := e.spec("saved")
	spec.Image = "wrt-saved:v2"
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	waitLog(t, spec.LogPath, "listening on :8080")
}

// TestImportOCINames covers how an OCI layout names its images: containerd's
// own annotation (taken verbatim by containerd, so normalized here), the OCI
// ref name, or nothing usable.
func TestImportOCINames(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	tests := []struct {
		name        string
		annotations map[string]string
		want        []string
		wantErr     string
	}{
		{
			name:        "full containerd name",
			annotations: map[string]string{"io.containerd.image.name": "docker.io/library/wrt-full:v1", ocispec.AnnotationRefName: "v1"},
			want:        []string{"docker.io/library/wrt-full:v1"},
		},
		{
			name:        "short containerd name",
			annotations: map[string]string{"io.containerd.image.name": "wrt-short:v3"},
			want:        []string{"docker.io/library/wrt-short:v3"},
		},
		{
			name:        "ref name only",
			annotations: map[string]string{ocispec.AnnotationRefName: "acme/wrt-ref:v4"},
			want:        []string{"docker.io/acme/wrt-ref:v4"},
		},
		{
			name:        "bare tag only",
			annotations: map[string]string{ocispec.AnnotationRefName: "v5"},
			wantErr:     "names no image",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names, err := e.rt.ImportImage(ctx, bytes.NewReader(retagOCI(t, testImageTar(t), tt.annotations)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("import = %q, %v; want error containing %q", names, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(names, tt.want) {
				t.Fatalf("import = %q, %v; want %q", names, err, tt.want)
			}
			if err := e.rt.EnsureImage(ctx, names[0]); err != nil {
				t.Fatalf("imported image not usable: %v", err)
			}
		})
	}
	imgs, err := e.rt.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"docker.io/acme/wrt-ref:v4", "docker.io/library/wrt-full:v1", "docker.io/library/wrt-short:v3"}; !slices.Equal(imgs, want) {
		t.Errorf("images = %q, want %q (no unnormalized names left)", imgs, want)
	}
	// Importing the same archive again is harmless.
	e.importImage()
	e.importImage()
}

// TestAdoption restarts "warren": the Runtime is closed and the daemon
// stopped while a container runs in its shim; a new daemon and Runtime on the
// same directory must find it and control it.
func TestAdoption(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()
	spec := e.spec("adopted")
	spec.Labels = map[string]string{"warren.task": "adopted.1"}
	spec.MemoryLimitBytes = 32 << 20
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	pid, err := e.rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, spec.LogPath, "listening on :8080")

	if err := e.rt.Close(); err != nil {
		t.Fatal(err)
	}
	e.rt = nil
	if err := e.d.Stop(); err != nil {
		t.Fatal(err)
	}
	e.d = nil
	if !alive(pid) {
		t.Fatalf("container pid %d died with the daemon", pid)
	}

	e.startDaemon()
	e.connect()
	st, err := e.rt.Status(ctx, spec.ID)
	if err != nil || !st.Running || st.Pid != pid || st.Labels["warren.task"] != "adopted.1" {
		t.Fatalf("status after restart = %+v, %v; want running as pid %d with its labels", st, err, pid)
	}
	sts, err := e.rt.List(ctx)
	if err != nil || len(sts) != 1 || sts[0].ID != spec.ID || !sts[0].Running {
		t.Fatalf("list after restart = %+v, %v", sts, err)
	}
	ch, err := e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Stop(ctx, spec.ID, 10*time.Second); err != nil {
		t.Fatalf("stop adopted: %v", err)
	}
	if es := receive(t, ch); es.Err != nil || es.Code != 0 {
		t.Fatalf("exit of adopted task = %+v", es)
	}
	// The shim kept the log open across the restart.
	waitLog(t, spec.LogPath, "testapp received terminated")
	if err := e.rt.Delete(ctx, spec.ID); err != nil {
		t.Fatalf("delete adopted: %v", err)
	}
	if st, _ := e.rt.Status(ctx, spec.ID); st.Exists {
		t.Fatal("adopted container still exists after delete")
	}
	for _, d := range cgroupDirs(filepath.Join(e.cgParent, spec.ID)) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there after delete (%v)", d, err)
		}
	}
}

// TestWaitAcrossDaemonCrash kills containerd under a pending Wait: the
// supervisor restarts it, and the Wait must report the task's real exit, not
// the broken RPC.
func TestWaitAcrossDaemonCrash(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()
	spec := e.spec("survivor")
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	pid, err := e.rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := e.rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	old := e.d.Pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "containerd restarted by its supervisor", 30*time.Second, func() bool {
		p := e.d.Pid()
		return p != 0 && p != old && e.d.serving(ctx)
	})
	var st Status
	waitFor(t, "status through the reconnected client", 20*time.Second, func() bool {
		st, err = e.rt.Status(ctx, spec.ID)
		return err == nil
	})
	if !st.Running || st.Pid != pid {
		t.Fatalf("status after daemon crash = %+v, want running as %d", st, pid)
	}
	select {
	case es := <-ch:
		t.Fatalf("wait fired on daemon crash with %+v", es)
	default:
	}
	if err := e.rt.Stop(ctx, spec.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if es := receive(t, ch); es.Err != nil || es.Code != 0 {
		t.Fatalf("exit = %+v, want code 0", es)
	}
}

// TestConcurrentContainers drives several containers through their life at
// once, as many task actors would.
func TestConcurrentContainers(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec := e.spec(fmt.Sprintf("c%d", i))
			step := func(what string, err error) bool {
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", what, spec.ID, err)
					return false
				}
				return true
			}
			if !step("create", e.rt.Create(ctx, spec)) {
				return
			}
			_, err := e.rt.Start(ctx, spec.ID)
			if !step("start", err) {
				return
			}
			st, err := e.rt.Status(ctx, spec.ID)
			if !step("status", err) || !st.Running {
				errs <- fmt.Errorf("%s not running: %+v", spec.ID, st)
				return
			}
			step("stop", e.rt.Stop(ctx, spec.ID, 10*time.Second))
			step("delete", e.rt.Delete(ctx, spec.ID))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if sts, err := e.rt.List(ctx); err != nil || len(sts) != 0 {
		t.Errorf("left over: %+v, %v", sts, err)
	}
}

func TestNewContainerdUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nothing.sock")
	_, err := NewContainerd(t.Context(), sock, "", nil)
	if err == nil {
		t.Fatal("connected to a missing socket")
	}
	for _, want := range []string{"containerd is not reachable at " + sock, "omit --containerd"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func get(url string) (string, int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// retagOCI returns the OCI layout tarball with its manifest annotations
// replaced.
func retagOCI(t *testing.T, ociTar string, annotations map[string]string) []byte {
	t.Helper()
	f, err := os.Open(ociTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(f), tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Name == "index.json" {
			var index ocispec.Index
			if err := json.Unmarshal(b, &index); err != nil {
				t.Fatal(err)
			}
			index.Manifests[0].Annotations = annotations
			b, _ = json.Marshal(index)
			h.Size = int64(len(b))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	return buf.Bytes()
}

// dockerSave re-packs an OCI layout tarball in `docker save` format
// (manifest.json with RepoTags, config and layer as files).
func dockerSave(t *testing.T, ociTar, repoTag string) []byte {
	t.Helper()
	f, err := os.Open(ociTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	blob := func(d ocispec.Descriptor) []byte { return files["blobs/sha256/"+d.Digest.Encoded()] }
	var index ocispec.Index
	var manifest ocispec.Manifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(index.Manifests[0]), &manifest); err != nil {
		t.Fatal(err)
	}
	cfgName := manifest.Config.Digest.Encoded() + ".json"
	layerName := manifest.Layers[0].Digest.Encoded() + "/layer.tar"
	mj, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{repoTag}, "Layers": []string{layerName}}})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, fe := range []struct {
		name string
		data []byte
	}{
		{cfgName, blob(manifest.Config)},
		{layerName, blob(manifest.Layers[0])}, // gzip is accepted and detected
		{"manifest.json", mj},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: fe.name, Mode: 0o644, Size: int64(len(fe.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(fe.data)
	}
	tw.Close()
	return buf.Bytes()
}

// TestCreateAfterLayersPruned removes an image's unpacked layers behind
// the runtime's back after it remembered the image as unpacked: the next
// create must notice and unpack again instead of failing.
func TestCreateAfterLayersPruned(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	e.importImage()
	first := e.spec("before-prune")
	if err := e.rt.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Delete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	sn := e.rt.client.SnapshotService(snapshotter)
	// Committed layers chain parent to child: remove children first.
	for {
		var leaves []string
		parents := map[string]bool{}
		var all []string
		err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			all = append(all, info.Name)
			if info.Parent != "" {
				parents[info.Parent] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range all {
			if !parents[n] {
				leaves = append(leaves, n)
			}
		}
		if len(leaves) == 0 {
			break
		}
		for _, n := range leaves {
			if err := sn.Remove(ctx, n); err != nil {
				t.Fatalf("remove snapshot %s: %v", n, err)
			}
		}
	}
	second := e.spec("after-prune")
	if err := e.rt.Create(ctx, second); err != nil {
		t.Fatalf("create after the layers were pruned: %v", err)
	}
	if err := e.rt.Delete(ctx, second.ID); err != nil {
		t.Fatal(err)
	}
}
