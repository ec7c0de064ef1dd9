package cluster

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// initEnv names the host when the test binary is re-executed as a host's
// init process (PID 1 of the host's pid namespace); resolvEnv is the file
// that becomes the host's /etc/resolv.conf.
const (
	initEnv   = "WARREN_E2E_INIT"
	resolvEnv = "WARREN_E2E_RESOLV"
)

// MaybeRunInit turns the process into a host's init when the harness
// started it as one, and never returns then. Call it first in TestMain.
//
// The init gives the host its own /run/containerd (containerd hard-codes
// shim socket paths there) and hostname, then reaps orphans: containerd as
// PID 1 would leave exited shims as zombies forever. On SIGTERM it stops
// everything in the namespace, which the kernel finishes when it exits.
func MaybeRunInit() {
	name := os.Getenv(initEnv)
	if name == "" {
		return
	}
	if err := setupHost(name, os.Getenv(resolvEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "e2e init:", err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	go func() {
		<-sig
		_ = syscall.Kill(-1, syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if syscall.Kill(-1, 0) != nil { // nothing left but us
				os.Exit(0)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-1, syscall.SIGKILL)
		os.Exit(0)
	}()
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); err == syscall.ECHILD {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func setupHost(name, resolv string) error {
	if err := syscall.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	for _, d := range []string{"/run/containerd", "/run/warren"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", d, err)
		}
	}
	// The host's upstream resolver is the harness gateway, where a test
	// can serve names (the machine's own resolvers are unreachable from
	// the hosts' switch anyway).
	if resolv != "" {
		if err := syscall.Mount(resolv, "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on /etc/resolv.conf: %w", resolv, err)
		}
	}
	return nil
}
