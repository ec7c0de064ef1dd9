package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// isolationReport is what -isolation prints: the confinement as the
// process itself sees it.
type isolationReport struct {
	// Seccomp is the Seccomp field of /proc/self/status: 0 none, 2 filter.
	Seccomp string `json:"seccomp"`
	// CapEff is the effective capability bitmap, hex as in /proc/self/status.
	CapEff string `json:"capEff"`
	// Keyctl is "allowed" or the error keyctl(2) failed with. Docker's
	// default seccomp profile refuses the syscall whatever the
	// capabilities (the kernel keyring is not namespaced), so EPERM here
	// means the profile is on.
	Keyctl string   `json:"keyctl"`
	Errors []string `json:"errors,omitempty"`
}

// holdThreads makes n goroutines each hold an OS thread of its own. The
// pids cgroup counts threads, so under a lower pids limit the kernel
// refuses a clone with EAGAIN, and the Go runtime dies saying "failed to
// create new OS thread".
func holdThreads(n int) {
	ready, done := make(chan struct{}), make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread stays this goroutine's
			ready <- struct{}{}
			<-done
		}()
	}
	for i := 0; i < n; i++ {
		<-ready
	}
	fmt.Printf("holding %d threads\n", n)
	close(done)
}

func probeIsolation() isolationReport {
	var r isolationReport
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "Seccomp":
			r.Seccomp = strings.TrimSpace(v)
		case "CapEff":
			r.CapEff = strings.TrimSpace(v)
		}
	}
	const keyctlGetKeyringID, keySpecSessionKeyring = 0, -3
	ring := keySpecSessionKeyring
	_, _, errno := syscall.Syscall(syscall.SYS_KEYCTL, keyctlGetKeyringID, uintptr(ring), 0)
	switch errno {
	case 0, syscall.ENOKEY:
		// ENOKEY: the call ran, the process simply has no session keyring.
		r.Keyctl = "allowed"
	default:
		r.Keyctl = errno.Error()
	}
	return r
}
