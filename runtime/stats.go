package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/snapshots"
)

// TaskStats is what a task's container has used, read from the kernel at
// the moment asked: its cgroup (CPU, memory) and its network namespace.
type TaskStats struct {
	CPUSeconds  float64 // user+system CPU time of the whole cgroup since it was created
	MemoryBytes uint64  // memory charged to the cgroup now (v1 memory.usage_in_bytes, v2 memory.current; page cache included)
	RxBytes     uint64  // bytes received on the netns's interfaces, loopback excluded
	TxBytes     uint64  // bytes sent, loopback excluded
	HasNetwork  bool    // false when the namespace's counters could not be read
}

// procRoot is where /proc is (a test points it elsewhere).
var procRoot = "/proc"

// StatsOf reads the stats of the container whose init process is pid (a
// host pid, as Status.Pid). It finds the cgroups from /proc/<pid>/cgroup,
// so it works wherever the container was placed, on cgroup v1, v2, or a
// hybrid host (v1 controllers plus the unified tree at
// /sys/fs/cgroup/unified, where v1's controllers are the ones that count).
func StatsOf(pid uint32) (TaskStats, error) {
	var s TaskStats
	if pid == 0 {
		return s, errors.New("no process: the task is not running")
	}
	cg, err := os.ReadFile(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return s, fmt.Errorf("read the cgroups of pid %d: %w", pid, err)
	}
	v1, v2 := parseProcCgroup(cg)
	var errs []error
	if s.MemoryBytes, err = memoryBytes(v1, v2); err != nil {
		errs = append(errs, err)
	}
	if s.CPUSeconds, err = cpuSeconds(v1, v2); err != nil {
		errs = append(errs, err)
	}
	if dev, err := os.ReadFile(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "net", "dev")); err == nil {
		s.RxBytes, s.TxBytes, err = parseNetDev(dev)
		s.HasNetwork = err == nil
	}
	return s, errors.Join(errs...)
}

// parseProcCgroup splits /proc/<pid>/cgroup into the v1 paths by controller
// and the v2 (unified) path, "" when none.
func parseProcCgroup(b []byte) (v1 map[string]string, v2 string) {
	v1 = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			v1[c] = parts[2]
		}
		v1["\x00"+parts[1]] = parts[2] // the hierarchy's own name: "cpu,cpuacct"
	}
	return v1, v2
}

// v1File is controller's file of a v1 cgroup path; the hierarchy is
// mounted under its controller's name ("memory") or, for co-mounted ones,
// the joined names ("cpu,cpuacct", with "cpuacct" often a symlink to it).
func v1File(v1 map[string]string, controller, file string) (string, bool) {
	p, ok := v1[controller]
	if !ok {
		return "", false
	}
	for hier, hp := range v1 {
		if strings.HasPrefix(hier, "\x00") && hp == p && strings.Contains(","+hier[1:]+",", ","+controller+",") {
			if f := filepath.Join(cgroupRoot, hier[1:], p, file); exists(f) {
				return f, true
			}
		}
	}
	f := filepath.Join(cgroupRoot, controller, p, file)
	return f, exists(f)
}

// v2File is a file of the unified cgroup path: at the root on a v2 host,
// under "unified" on a hybrid one.
func v2File(v2, file string) (string, bool) {
	for _, root := range []string{cgroupRoot, filepath.Join(cgroupRoot, "unified")} {
		if !exists(filepath.Join(root, "cgroup.controllers")) {
			continue
		}
		f := filepath.Join(root, v2, file)
		return f, exists(f)
	}
	return "", false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func memoryBytes(v1 map[string]string, v2 string) (uint64, error) {
	f, ok := v1File(v1, "memory", "memory.usage_in_bytes")
	if !ok {
		if f, ok = v2File(v2, "memory.current"); !ok {
			return 0, errors.New("memory: no memory cgroup found (neither v1 memory.usage_in_bytes nor v2 memory.current)")
		}
	}
	return readUint(f)
}

func cpuSeconds(v1 map[string]string, v2 string) (float64, error) {
	if f, ok := v1File(v1, "cpuacct", "cpuacct.usage"); ok {
		ns, err := readUint(f)
		return float64(ns) / 1e9, err
	}
	f, ok := v2File(v2, "cpu.stat")
	if !ok {
		return 0, errors.New("cpu: no cpu accounting cgroup found (neither v1 cpuacct.usage nor v2 cpu.stat)")
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == "usage_usec" {
			us, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return float64(us) / 1e6, err
		}
	}
	return 0, fmt.Errorf("cpu: %s has no usage_usec", f)
}

func readUint(f string) (uint64, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", f, err)
	}
	return v, nil
}

// parseNetDev sums the byte counters of /proc/<pid>/net/dev over every
// interface but loopback (traffic a task sends itself is not traffic).
func parseNetDev(b []byte) (rx, tx uint64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	seen := false
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.Contains(name, "|") {
			continue // the two header lines
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			return 0, 0, fmt.Errorf("net/dev: short line for %s", strings.TrimSpace(name))
		}
		seen = true
		if strings.TrimSpace(name) == "lo" {
			continue
		}
		r, err1 := strconv.ParseUint(f[0], 10, 64)
		t, err2 := strconv.ParseUint(f[8], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, fmt.Errorf("net/dev %s: %w", strings.TrimSpace(name), err)
		}
		rx, tx = rx+r, tx+t
	}
	if !seen {
		return 0, 0, errors.New("net/dev: no interfaces")
	}
	return rx, tx, sc.Err()
}

// DiskUsage is what this runtime's namespace holds on disk, in bytes.
type DiskUsage struct {
	ImagesBytes     int64 // image content (compressed blobs) plus unpacked (committed) layers
	Images          int
	ContainersBytes int64 // the containers' writable (active) layers
	Containers      int
}

// DiskUsage adds up the namespace's image content, its snapshots (an
// image's unpacked layers count as images, a container's writable layer
// as the container's) and counts images and containers.
func (r *Containerd) DiskUsage(ctx context.Context) (DiskUsage, error) {
	var u DiskUsage
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return u, fmt.Errorf("list images: %w", err)
	}
	u.Images = len(imgs)
	cs, err := r.client.Containers(ctx)
	if err != nil {
		return u, fmt.Errorf("list containers: %w", err)
	}
	u.Containers = len(cs)
	if err := r.client.ContentStore().Walk(ctx, func(info content.Info) error {
		u.ImagesBytes += info.Size
		return nil
	}); err != nil {
		return u, fmt.Errorf("walk image content: %w", err)
	}
	sn := r.client.SnapshotService(snapshotter)
	var infos []snapshots.Info
	if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		infos = append(infos, info)
		return nil
	}); err != nil {
		return u, fmt.Errorf("walk snapshots: %w", err)
	}
	for _, info := range infos {
		us, err := sn.Usage(ctx, info.Name)
		if err != nil {
			continue // removed since the walk
		}
		if info.Kind == snapshots.KindActive {
			u.ContainersBytes += us.Size
		} else {
			u.ImagesBytes += us.Size
		}
	}
	return u, nil
}

// DirSize is the bytes of the regular files under path (0 when it does not
// exist): a node's log, raft and data directories for `system df`.
func DirSize(path string) (int64, error) {
	var n int64
	err := filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}
