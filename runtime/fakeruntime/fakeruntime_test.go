package fakeruntime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/runtime"
)

var bg = context.Background()

func spec(id string) runtime.ContainerSpec {
	return runtime.ContainerSpec{ID: id, Image: "demo:v1", Labels: map[string]string{"warren.node": "n1"}}
}

// TestContainerLifecycle walks the calls a task actor makes, each step
// checked against what containerd answers in that state.
func TestContainerLifecycle(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		run  func(r *Runtime) error
		want error // errors.Is target; nil: success
	}{
		{"create", func(r *Runtime) error { return r.Create(bg, spec("a")) }, nil},
		{"create taken id", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			return r.Create(bg, spec("a"))
		}, runtime.ErrAlreadyExists},
		{"create missing image", func(r *Runtime) error {
			s := spec("a")
			s.Image = "other:v1"
			return r.Create(bg, s)
		}, runtime.ErrNotFound},
		{"create pullable image", func(r *Runtime) error {
			s := spec("a")
			s.Image = "docker.io/library/pulled:v2"
			return r.Create(bg, s)
		}, nil},
		{"create bad image", func(r *Runtime) error {
			s := spec("a")
			s.Image = "UPPER:bad tag"
			return r.Create(bg, s)
		}, runtime.ErrInvalidArgument},
		{"create injected failure", func(r *Runtime) error {
			r.Fail(OpCreate, "a", 1, boom)
			return r.Create(bg, spec("a"))
		}, boom},
		{"injected failure is used up", func(r *Runtime) error {
			r.Fail(OpCreate, "a", 1, boom)
			_ = r.Create(bg, spec("a"))
			return r.Create(bg, spec("a"))
		}, nil},
		{"injected failure for another id", func(r *Runtime) error {
			r.Fail(OpCreate, "b", -1, boom)
			return r.Create(bg, spec("a"))
		}, nil},
		{"start without container", func(r *Runtime) error { _, err := r.Start(bg, "a"); return err }, runtime.ErrNotFound},
		{"start running", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, _ = r.Start(bg, "a")
			_, err := r.Start(bg, "a")
			return err
		}, runtime.ErrAlreadyExists},
		{"start after exit", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, _ = r.Start(bg, "a")
			_ = r.Exit("a", 1)
			_, err := r.Start(bg, "a")
			return err
		}, nil},
		{"start injected failure, every time", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			r.Fail(OpStart, "", -1, boom)
			_, _ = r.Start(bg, "a")
			_, err := r.Start(bg, "a")
			return err
		}, boom},
		{"wait without task", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, err := r.Wait(bg, "a")
			return err
		}, runtime.ErrNotFound},
		{"kill exited", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, _ = r.Start(bg, "a")
			_ = r.Exit("a", 0)
			return r.Kill(bg, "a", syscall.SIGTERM)
		}, runtime.ErrNotFound},
		{"kill without container", func(r *Runtime) error { return r.Kill(bg, "a", syscall.SIGTERM) }, runtime.ErrNotFound},
		{"stop without container", func(r *Runtime) error { return r.Stop(bg, "a", time.Second) }, nil},
		{"stop exited", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, _ = r.Start(bg, "a")
			_ = r.Exit("a", 0)
			return r.Stop(bg, "a", time.Second)
		}, nil},
		{"delete without container", func(r *Runtime) error { return r.Delete(bg, "a") }, nil},
		{"exec without task", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, _, err := r.Exec(bg, "a", []string{"true"})
			return err
		}, runtime.ErrNotFound},
		{"exec without command", func(r *Runtime) error {
			_ = r.Create(bg, spec("a"))
			_, _ = r.Start(bg, "a")
			_, _, err := r.Exec(bg, "a", nil)
			return err
		}, runtime.ErrInvalidArgument},
		{"exit without task", func(r *Runtime) error { return r.Exit("a", 1) }, runtime.ErrNotFound},
		{"closed", func(r *Runtime) error { _ = r.Close(); _, err := r.List(bg); return err }, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Config{Images: []string{"demo:v1"}, Pullable: []string{"pulled:v2"}})
			err := tt.run(r)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("got %v, want success", err)
			case tt.want == errAny && err == nil:
				t.Fatal("got success, want an error")
			case tt.want != nil && tt.want != errAny && !errors.Is(err, tt.want):
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// errAny: any error will do.
var errAny = errors.New("any error")

// TestExits: how a process ends decides the code Wait delivers and Status
// shows, and the signals recorded.
func TestExits(t *testing.T) {
	tests := []struct {
		name        string
		ignoreTERM  bool
		end         func(r *Runtime) error
		wantCode    uint32
		wantSignals []syscall.Signal
	}{
		{"exits by itself", false, func(r *Runtime) error { return r.Exit("a", 3) }, 3, nil},
		{"stop, SIGTERM honoured", false, func(r *Runtime) error { return r.Stop(bg, "a", time.Minute) }, 143, []syscall.Signal{syscall.SIGTERM}},
		{"stop, SIGTERM ignored", true, func(r *Runtime) error { return r.Stop(bg, "a", 20*time.Millisecond) }, 137, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}},
		{"kill", true, func(r *Runtime) error { return r.Kill(bg, "a", syscall.SIGKILL) }, 137, []syscall.Signal{syscall.SIGKILL}},
		{"delete kills", false, func(r *Runtime) error { return r.Delete(bg, "a") }, 137, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Config{Images: []string{"demo:v1"}})
			if err := r.Create(bg, spec("a")); err != nil {
				t.Fatal(err)
			}
			pid, err := r.Start(bg, "a")
			if err != nil || pid == 0 {
				t.Fatalf("start: %d %v", pid, err)
			}
			if tt.ignoreTERM {
				_ = r.IgnoreSIGTERM("a")
			}
			ch, err := r.Wait(bg, "a")
			if err != nil {
				t.Fatal(err)
			}
			if st, _ := r.Status(bg, "a"); !st.Running || st.Pid != pid {
				t.Fatalf("status before the end %+v", st)
			}
			if err := tt.end(r); err != nil {
				t.Fatal(err)
			}
			select {
			case es := <-ch:
				if es.Err != nil || es.Code != tt.wantCode {
					t.Fatalf("exit %+v, want code %d", es, tt.wantCode)
				}
			case <-time.After(time.Second):
				t.Fatal("no exit delivered")
			}
			if _, open := <-ch; open {
				t.Fatal("wait channel not closed after its one status")
			}
			if got := r.Signals("a"); !slices.Equal(got, tt.wantSignals) {
				t.Fatalf("signals %v, want %v", got, tt.wantSignals)
			}
			// A wait after the exit answers at once (containerd keeps the
			// exit status until the task is deleted).
			if ch, err := r.Wait(bg, "a"); err == nil {
				if es := <-ch; es.Code != tt.wantCode {
					t.Fatalf("second wait %+v", es)
				}
			}
		})
	}
}

func TestWaitCancelled(t *testing.T) {
	r := New(Config{Images: []string{"demo:v1"}})
	_ = r.Create(bg, spec("a"))
	_, _ = r.Start(bg, "a")
	c, cancel := context.WithCancel(bg)
	ch, err := r.Wait(c, "a")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if es := <-ch; !errors.Is(es.Err, context.Canceled) {
		t.Fatalf("exit %+v, want a cancelled wait", es)
	}
}

func TestStatusListAndCounts(t *testing.T) {
	r := New(Config{Images: []string{"demo:v1"}})
	_ = r.Create(bg, spec("b"))
	_ = r.Create(bg, spec("a"))
	pid, _ := r.Start(bg, "a")
	r.AddContainer(runtime.ContainerSpec{ID: "left", Image: "gone:v1", Labels: map[string]string{"warren.node": "n2"}}, true)
	list, err := r.List(bg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "left"}) {
		t.Fatalf("list %v", ids)
	}
	a := list[0]
	if !a.Exists || !a.Running || a.Pid != pid || a.Labels["warren.node"] != "n1" || a.Image != "docker.io/library/demo:v1" {
		t.Fatalf("status of a %+v", a)
	}
	if b := list[1]; !b.Exists || b.Running || b.Pid != 0 {
		t.Fatalf("status of b %+v", b)
	}
	if !list[2].Running || list[2].Image != "docker.io/library/gone:v1" {
		t.Fatalf("added container %+v", list[2])
	}
	if st, err := r.Status(bg, "none"); err != nil || st.Exists {
		t.Fatalf("status of a missing container %+v %v", st, err)
	}
	if n := r.Count(OpCreate, ""); n != 2 {
		t.Fatalf("%d creates counted, want 2", n)
	}
	if n := r.Count(OpStart, "a"); n != 1 {
		t.Fatalf("%d starts of a counted, want 1", n)
	}
}

func TestExec(t *testing.T) {
	r := New(Config{Images: []string{"demo:v1"}})
	_ = r.Create(bg, spec("a"))
	_, _ = r.Start(bg, "a")
	if code, _, err := r.Exec(bg, "a", []string{"true"}); code != 0 || err != nil {
		t.Fatalf("default exec: %d %v", code, err)
	}
	r.SetExec(func(id string, cmd []string) (uint32, string, error) { return 7, id + ":" + cmd[0], nil })
	if code, out, err := r.Exec(bg, "a", []string{"check"}); code != 7 || out != "a:check" || err != nil {
		t.Fatalf("hooked exec: %d %q %v", code, out, err)
	}
}

func TestLatency(t *testing.T) {
	r := New(Config{Images: []string{"demo:v1"}, CreateLatency: 50 * time.Millisecond, StartLatency: 30 * time.Millisecond, Jitter: 10 * time.Millisecond})
	start := time.Now()
	_ = r.Create(bg, spec("a"))
	_, _ = r.Start(bg, "a")
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("create and start took %s, want at least 80ms", d)
	}
	c, cancel := context.WithTimeout(bg, 5*time.Millisecond)
	defer cancel()
	if err := r.Create(c, spec("b")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("create past its deadline: %v", err)
	}
	if st, _ := r.Status(bg, "b"); st.Exists {
		t.Fatal("a create that timed out left a container")
	}
}

// dockerSave is a `docker save` tarball naming images in manifest.json.
func dockerSave(t *testing.T, tags ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := []byte(`[{"Config":"c.json","RepoTags":["` + tags[0] + `"],"Layers":[]}]`)
	if len(tags) > 1 {
		data = []byte(`[{"RepoTags":["` + tags[0] + `"]},{"RepoTags":["` + tags[1] + `"]}]`)
	}
	_ = tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(data))})
	_, _ = tw.Write(data)
	_ = tw.Close()
	return buf.Bytes()
}

func TestImportImage(t *testing.T) {
	oci := func(padding int, names ...string) []byte {
		b, err := ImageTar(padding, names...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		tar     []byte
		want    []string
		wantErr error
	}{
		{"oci layout", oci(10, "demo:v2", "registry.local:5000/x/y:1"), []string{"docker.io/library/demo:v2", "registry.local:5000/x/y:1"}, nil},
		{"oci bare tag names nothing", oci(0, "v1"), nil, runtime.ErrInvalidArgument},
		{"docker save", dockerSave(t, "demo:v3", "other:v1"), []string{"docker.io/library/demo:v3", "docker.io/library/other:v1"}, nil},
		{"not a tar", []byte("hello, this is not a tarball at all, not even close"), nil, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Config{})
			got, err := r.ImportImage(bg, bytes.NewReader(tt.tar))
			switch {
			case tt.wantErr == errAny:
				if err == nil {
					t.Fatalf("imported %v, want an error", got)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v %v, want %v", got, err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("imported %v, want %v", got, tt.want)
			}
			if imgs, _ := r.ListImages(bg); !slices.Equal(imgs, tt.want) {
				t.Fatalf("images %v, want %v", imgs, tt.want)
			}
		})
	}
}

// TestImportPace: a large image takes ImportPerMB per MiB, and a cancelled
// import stops early.
func TestImportPace(t *testing.T) {
	big, err := ImageTar(4<<20, "big:v1")
	if err != nil {
		t.Fatal(err)
	}
	r := New(Config{ImportPerMB: 50 * time.Millisecond})
	start := time.Now()
	if _, err := r.ImportImage(bg, bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Fatalf("4 MiB at 50ms/MiB took %s, want at least 200ms", d)
	}
	c, cancel := context.WithTimeout(bg, 30*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := r.ImportImage(c, bytes.NewReader(big)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled import: %v", err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("cancelled import took %s", d)
	}
}
