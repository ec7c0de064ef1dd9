package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartDaemonErrors(t *testing.T) {
	t.Run("containerd missing", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := StartDaemon(t.Context(), t.TempDir(), nil)
		if err == nil || !strings.Contains(err.Error(), "containerd not found in PATH: install it (apt-get install containerd runc)") {
			t.Fatalf("err = %v, want the install hint", err)
		}
	})
	t.Run("socket path too long", func(t *testing.T) {
		if _, err := exec.LookPath("containerd"); err != nil {
			t.Skip("containerd not installed")
		}
		dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
		_, err := StartDaemon(t.Context(), dir, nil)
		if err == nil || !strings.Contains(err.Error(), "unix sockets allow 107") {
			t.Fatalf("err = %v, want a socket length error", err)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("rejected start created %s", dir)
		}
	})
}

// TestStartDaemonFailureShowsLog runs fake containerd binaries that fail in
// the two ways a real one does at startup; the error must carry the log.
func TestStartDaemonFailureShowsLog(t *testing.T) {
	old := daemonReadyTimeout
	daemonReadyTimeout = 500 * time.Millisecond
	defer func() { daemonReadyTimeout = old }()
	tests := []struct {
		name, script string
		want         []string
	}{
		{
			name:   "exits",
			script: "echo 'level=fatal msg=\"boom: bad config\"' >&2; exit 1",
			want:   []string{"containerd exited during startup", "boom: bad config", "containerd.log"},
		},
		{
			name:   "hangs",
			script: "echo 'level=info msg=\"stuck loading plugins\"' >&2; exec sleep 60",
			want:   []string{"did not answer on", "within 500ms", "stuck loading plugins"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			if err := os.WriteFile(filepath.Join(bin, "containerd"), []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", bin+":/usr/bin:/bin")
			dir := t.TempDir()
			_, err := StartDaemon(t.Context(), dir, nil)
			if err == nil {
				t.Fatal("StartDaemon succeeded with a broken containerd")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "containerd.pid")); !os.IsNotExist(err) {
				t.Errorf("pid file left after failed start (%v)", err)
			}
		})
	}
}

func TestDaemonConfig(t *testing.T) {
	e := newEnv(t)
	b, err := os.ReadFile(filepath.Join(e.dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for _, want := range []string{
		"version = 2",
		`root = "` + e.dir + `/root"`,
		`state = "` + e.dir + `/state"`,
		`address = "` + e.dir + `/containerd.sock"`,
		`address = "` + e.dir + `/containerd.sock.ttrpc"`,
		`"io.containerd.grpc.v1.cri"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
	pid := readTrim(t, filepath.Join(e.dir, "containerd.pid"))
	if pid != strconv.Itoa(e.d.Pid()) {
		t.Errorf("pid file says %s, daemon is %d", pid, e.d.Pid())
	}
	// containerd is in its own process group, so a ^C to warren's group
	// does not reach it.
	if pgid, _ := syscall.Getpgid(e.d.Pid()); pgid != e.d.Pid() {
		t.Errorf("containerd pgid %d, want its own (%d)", pgid, e.d.Pid())
	}
	if err := e.d.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "containerd.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left after stop (%v)", err)
	}
	if err := e.d.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	e.d = nil
}

// TestDaemonStopsOrphan plays a warren that was SIGKILLed and whose
// containerd survived: a containerd for the same directory is running and
// named by the pid file. StartDaemon must stop it and run its own.
func TestDaemonStopsOrphan(t *testing.T) {
	e := newEnv(t)
	e.rt.Close()
	e.rt = nil
	if err := e.d.Stop(); err != nil {
		t.Fatal(err)
	}
	e.d = nil

	orphan := exec.Command("containerd", "--config", filepath.Join(e.dir, "config.toml"))
	orphan.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { orphan.Wait(); close(exited) }()
	t.Cleanup(func() {
		orphan.Process.Kill()
		<-exited
	})
	if err := os.WriteFile(filepath.Join(e.dir, "containerd.pid"), []byte(strconv.Itoa(orphan.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	probe := &Daemon{socket: filepath.Join(e.dir, "containerd.sock")}
	waitFor(t, "orphan containerd serving", 20*time.Second, func() bool { return probe.serving(context.Background()) })

	e.startDaemon()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("orphan containerd still running after StartDaemon")
	}
	if e.d.Pid() == orphan.Process.Pid {
		t.Fatal("StartDaemon adopted the orphan instead of replacing it")
	}
	e.connect()
	if _, err := e.rt.List(e.ctx()); err != nil {
		t.Fatalf("new daemon not usable: %v", err)
	}
}

// TestDaemonRefusesForeignSocket: a live server on the socket that the pid
// file does not name is left alone, with an error.
func TestDaemonRefusesForeignSocket(t *testing.T) {
	e := newEnv(t)
	os.Remove(filepath.Join(e.dir, "containerd.pid"))
	_, err := StartDaemon(e.ctx(), e.dir, e.log)
	if err == nil || !strings.Contains(err.Error(), "already serves") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if !e.d.serving(e.ctx()) {
		t.Fatal("the running daemon was disturbed")
	}
}
