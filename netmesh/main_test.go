package netmesh

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
)

// inNSEnv marks the re-executed test binary that runs inside its own
// network and mount namespace.
const inNSEnv = "NETMESH_IN_NS"

// TestMain re-runs the test binary under `unshare --net --mount` when run as
// root, so the kernel tests build bridges, tables and mounts in a throwaway
// namespace and never touch the machine's real network. Locking one
// goroutine's thread into a new namespace would not do: the Go runtime runs
// other goroutines (and netlink calls) on other threads.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(inNSEnv) == "" {
		os.Exit(reexecInNamespace())
	}
	if os.Getenv(inNSEnv) != "" {
		if err := checkFreshNamespace(); err != nil {
			fmt.Fprintln(os.Stderr, "netmesh tests:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func reexecInNamespace() int {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		fmt.Fprintln(os.Stderr, "netmesh tests: unshare(1) not found (install util-linux); it is needed to run the kernel tests in a throwaway namespace")
		return 1
	}
	args := append([]string{"--net", "--mount", "--propagation", "private", "--", os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), inNSEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		if code := exit.ExitCode(); code > 0 {
			return code
		}
		return 1 // killed by a signal
	case err != nil:
		fmt.Fprintln(os.Stderr, "netmesh tests: re-exec in a new namespace:", err)
		return 1
	}
	return 0
}

// checkFreshNamespace refuses to run kernel tests in a namespace with any
// link but lo, e.g. when NETMESH_IN_NS was set by hand on a real host.
func checkFreshNamespace() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			return fmt.Errorf("%s is set but this network namespace has link %s: refusing to run kernel tests outside a fresh namespace", inNSEnv, l.Attrs().Name)
		}
	}
	return nil
}

// needKernel skips a test that changes kernel state unless it runs in the
// throwaway namespace TestMain made.
func needKernel(t *testing.T) {
	t.Helper()
	if os.Getenv(inNSEnv) == "" {
		t.Skip("kernel test: run as root; the test binary re-executes itself under unshare --net --mount")
	}
}
