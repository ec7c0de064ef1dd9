package netmesh

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A named network namespace is an nsfs bind mount on a file, as `ip netns
// add` makes them: the mount keeps the namespace alive without a process in
// it, and the path is what the runtime hands to runc.

// threadNetNS is the calling thread's own namespace file. thread-self (not
// /proc/self) matters: after unshare only this thread is in the new
// namespace, and /proc/self/ns/net names the thread group leader's.
const threadNetNS = "/proc/thread-self/ns/net"

// ensureNetNSDir creates dir and makes it a mount point with shared
// propagation, as iproute2 does for /run/netns. Shared, so that namespace
// mounts made later also appear in mount namespaces cloned from this one
// afterwards (a runtime shim, `ip netns exec`), and unmounts reach them too.
//
// When dir is not yet a mount point (MS_SHARED fails with EINVAL), a small
// tmpfs is mounted there rather than iproute2's bind mount of dir onto
// itself. The difference shows when several Warren nodes run in their own
// mount namespaces on one machine (the e2e harness): with a self bind mount
// they would all see the same directory on the root filesystem, so one
// node's GC would find another node's namespace files, and unlinking a file
// that is a mount point elsewhere detaches that mount (Linux >= 3.18). A
// tmpfs gives every mount namespace its own directory, and like /run it
// starts empty after a reboot, when no namespace survives anyway.
func ensureNetNSDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create netns dir %s: %w", dir, err)
	}
	for mounted := false; ; mounted = true {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || mounted {
			return fmt.Errorf("make netns dir %s a shared mount: %w", dir, err)
		}
		if err := unix.Mount("warren-netns", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
			return fmt.Errorf("mount tmpfs on netns dir %s: %w", dir, err)
		}
	}
}

// isNetNSMount reports whether path is a mounted network namespace (nsfs).
func isNetNSMount(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// createNetNS makes path a named network namespace; if it already is one it
// is left alone.
func createNetNS(path string) error {
	if ok, err := isNetNSMount(path); err != nil || ok {
		return err
	}
	// The file may be left over from a crash before the mount; reuse it.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file %s: %w", path, err)
	}
	_ = f.Close()

	// unshare(CLONE_NEWNET) moves only the calling thread, so the thread is
	// locked for the whole dance and returned to the runtime only once it is
	// back in its original namespace.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		mountErr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// The thread is stuck in the task's namespace: keep it locked so
			// the runtime kills it when this goroutine returns, instead of
			// letting other goroutines run in the wrong namespace.
			errc <- fmt.Errorf("return to original netns after creating %s: %w", path, err)
			return
		}
		runtime.UnlockOSThread()
		if mountErr != nil {
			mountErr = fmt.Errorf("bind mount new netns onto %s: %w", path, mountErr)
		}
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// removeNetNS unmounts the named namespace at path (every stacked mount, in
// case an earlier run mounted twice) and removes the file. The namespace
// itself lives on while a process is still in it.
func removeNetNS(path string) error {
	for i := 0; ; i++ {
		ok, err := isNetNSMount(path)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if i == 16 {
			return fmt.Errorf("unmount netns %s: still mounted after %d unmounts", path, i)
		}
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount netns %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file %s: %w", path, err)
	}
	return nil
}

// withNetNS runs fn on a locked OS thread inside the namespace at path.
// Sockets fn creates stay in that namespace after fn returns.
func withNetNS(path string, fn func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime kills the thread when we return.
			errc <- fmt.Errorf("leave netns %s: %w", path, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// mountPoints returns the mount points in this mount namespace at or below
// dir, from /proc/self/mountinfo.
func mountPoints(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	// mountinfo shows resolved paths (/run, not /var/run).
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// Field 5 is the mount point, with space, tab, newline and
		// backslash octal-escaped.
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
