package runtime

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where cgroup hierarchies are mounted (v1: one directory per
// controller; v2: the unified tree itself).
var cgroupRoot = "/sys/fs/cgroup"

// cgroupDirs lists the directories a container's cgroup path maps to on this
// machine, existing or not: one per v1 hierarchy (including a hybrid
// "unified" one), or the single v2 one.
func cgroupDirs(cgroupPath string) []string {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return []string{filepath.Join(cgroupRoot, cgroupPath)}
	}
	var dirs []string
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return dirs
	}
	seen := map[string]bool{}
	for _, e := range entries {
		hier := filepath.Join(cgroupRoot, e.Name())
		// "cpu" is often a symlink to "cpu,cpuacct"; count each tree once.
		real, err := filepath.EvalSymlinks(hier)
		if err != nil || seen[real] {
			continue
		}
		if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
			continue
		}
		seen[real] = true
		dirs = append(dirs, filepath.Join(real, cgroupPath))
	}
	return dirs
}

// removeCgroup makes sure the container's cgroup directories are gone. runc
// delete normally removes them, but a task killed while containerd was down,
// or a shim that died, can leave empty directories behind, and those pile up
// per restart.
func removeCgroup(cgroupPath, id string) error {
	// Never touch anything but the container's own leaf: a bad spec must not
	// be able to remove a parent that other containers share.
	if cgroupPath == "" || strings.Contains(cgroupPath, ":") || path.Base(path.Clean(cgroupPath)) != id {
		return nil
	}
	var errs []error
	for _, dir := range cgroupDirs(path.Clean(cgroupPath)) {
		if err := rmdirTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove cgroup %s: %w (processes may still be inside; check its cgroup.procs)", cgroupPath, err)
	}
	return nil
}

// rmdirTree removes a cgroup directory and its sub-cgroups, deepest first.
// cgroupfs directories hold only virtual files, which rmdir ignores; EBUSY
// means processes are still exiting, so it retries for a moment.
func rmdirTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("rmdir %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
