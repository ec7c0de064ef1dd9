package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestDaemonDiedMidStart: warren SIGKILLed while a Start waits on
// containerd takes its own containerd down too (Pdeathsig), here between
// the task's shim starting and runc creating its process. The next
// containerd adopts that shim although it holds no process: the task is
// "not found" yet "already exists". A Start then must clear it and start
// the container (not fail for ever), and a Delete must not leak the shim.
func TestDaemonDiedMidStart(t *testing.T) {
	tests := []struct {
		name string
		then func(t *testing.T, e *env, id string)
	}{
		{"start again", func(t *testing.T, e *env, id string) {
			ctx := e.ctx()
			pid, err := e.rt.Start(ctx, id)
			if err != nil {
				t.Fatalf("start after containerd restarted: %v", err)
			}
			waitLog(t, e.spec("midstart").LogPath, "listening on :8080")
			st, err := e.rt.Status(ctx, id)
			if err != nil || !st.Running || st.Pid != pid {
				t.Fatalf("status = %+v, %v; want running as pid %d", st, err, pid)
			}
		}},
		{"delete", func(t *testing.T, e *env, id string) {
			ctx := e.ctx()
			if err := e.rt.Delete(ctx, id); err != nil {
				t.Fatalf("delete after containerd restarted: %v", err)
			}
			if st, err := e.rt.Status(ctx, id); err != nil || st.Exists {
				t.Fatalf("status after delete = %+v, %v", st, err)
			}
			waitFor(t, "the hollow task's shim gone", 10*time.Second, func() bool { return !shimRuns(id) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			id := hollowTask(t, e)
			tt.then(t, e, id)
		})
	}
}

// hollowTask creates a container, kills containerd (SIGTERM, as Pdeathsig
// does) while runc creates its task, waits for the supervisor's new
// containerd and returns the container's ID.
func hollowTask(t *testing.T, e *env) string {
	t.Helper()
	ctx := e.ctx()
	e.importImage()
	spec := e.spec("midstart")
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// A createRuntime hook holds runc create while the block file exists,
	// so the daemon dies exactly inside the shim's create.
	block := filepath.Join(e.dir, "block-"+spec.ID)
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := e.rt.client.LoadContainer(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh",
		Args: []string{"sh", "-c", "while [ -e " + block + " ]; do sleep 0.05; done"}}}}
	if err := c.Update(ctx, containerd.UpdateContainerOpts(containerd.WithSpec(s))); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		_, err := e.rt.Start(ctx, spec.ID)
		started <- err
	}()
	waitFor(t, "runc create held by the hook", 20*time.Second, func() bool { return hookRuns(block) })

	old := e.d.Pid()
	if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-started:
		if err == nil {
			t.Fatal("start succeeded although containerd died under it")
		}
		t.Logf("start as containerd died: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("start still blocked 30s after containerd died")
	}
	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "containerd restarted by its supervisor", 30*time.Second, func() bool {
		p := e.d.Pid()
		return p != 0 && p != old && e.d.serving(ctx)
	})
	waitFor(t, "status through the reconnected client", 20*time.Second, func() bool {
		st, err := e.rt.Status(ctx, spec.ID)
		return err == nil && st.Exists && !st.Running
	})
	if !shimRuns(spec.ID) {
		t.Fatal("no shim left for the task: the case under test did not happen")
	}
	return spec.ID
}

// shimRuns reports whether a containerd shim serves container id.
func shimRuns(id string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "containerd-shim") && strings.Contains(string(b), "\x00-id\x00"+id+"\x00") {
			return true
		}
	}
	return false
}

// hookRuns reports whether a process whose command line names block runs.
func hookRuns(block string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), block) && strings.HasPrefix(string(b), "sh\x00") {
			return true
		}
	}
	return false
}
