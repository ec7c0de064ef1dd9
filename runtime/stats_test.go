package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0
  eth0: 1048576     900    0    0    0     0          0         0    20480     100    0    0    0     0       0          0
  wg0:       24       1    0    0    0     0          0         0       76       1    0    0    0     0       0          0
`

// TestStatsOf reads a task's stats from fake /proc and cgroup trees laid out
// as each kind of host lays them out: the container's cgroups are found from
// its /proc/<pid>/cgroup, not guessed.
func TestStatsOf(t *testing.T) {
	const path = "/warren-node1/task1"
	write := func(t *testing.T, root, rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		cgroup  string            // /proc/<pid>/cgroup
		files   map[string]string // under the cgroup root
		wantCPU float64
		wantMem uint64
		wantErr bool
	}{
		{"v1, cpu and cpuacct co-mounted",
			"5:memory:" + path + "\n3:cpu,cpuacct:" + path + "\n0::/\n",
			map[string]string{"memory" + path + "/memory.usage_in_bytes": "52428800\n", "cpu,cpuacct" + path + "/cpuacct.usage": "1500000000\n"},
			1.5, 52428800, false},
		{"v1, cpuacct mounted alone",
			"4:memory:" + path + "\n2:cpuacct:" + path + "\n1:cpu:" + path + "\n",
			map[string]string{"memory" + path + "/memory.usage_in_bytes": "1000\n", "cpuacct" + path + "/cpuacct.usage": "2000000000\n"},
			2, 1000, false},
		{"hybrid: v1 controllers count, unified has none",
			"4:memory:" + path + "\n2:cpuacct:" + path + "\n0::" + path + "\n",
			map[string]string{"memory" + path + "/memory.usage_in_bytes": "7\n", "cpuacct" + path + "/cpuacct.usage": "3000000000\n",
				"unified/cgroup.controllers": "", "unified" + path + "/cpu.stat": "usage_usec 1\n"},
			3, 7, false},
		{"v2",
			"0::" + path + "\n",
			map[string]string{"cgroup.controllers": "cpu memory pids\n", path[1:] + "/memory.current": "60000000\n",
				path[1:] + "/cpu.stat": "usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n"},
			0.25, 60000000, false},
		{"no cgroup files (the task is gone)",
			"0::" + path + "\n",
			map[string]string{"cgroup.controllers": ""},
			0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg, proc := t.TempDir(), t.TempDir()
			oldCg, oldProc := cgroupRoot, procRoot
			cgroupRoot, procRoot = cg, proc
			t.Cleanup(func() { cgroupRoot, procRoot = oldCg, oldProc })
			for rel, c := range tt.files {
				write(t, cg, rel, c)
			}
			write(t, proc, "42/cgroup", tt.cgroup)
			write(t, proc, "42/net/dev", netDev)
			s, err := StatsOf(42)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if s.CPUSeconds != tt.wantCPU || s.MemoryBytes != tt.wantMem {
				t.Errorf("cpu %v s, memory %d B; want %v s, %d B", s.CPUSeconds, s.MemoryBytes, tt.wantCPU, tt.wantMem)
			}
			if !s.HasNetwork || s.RxBytes != 1048576+24 || s.TxBytes != 20480+76 {
				t.Errorf("network rx %d tx %d (read %v), want rx %d tx %d without loopback", s.RxBytes, s.TxBytes, s.HasNetwork, 1048576+24, 20480+76)
			}
		})
	}
}

// TestStatsOfThisProcess reads this test process's own cgroup on the real
// host, whatever its cgroup layout: it uses memory and has run.
func TestStatsOfThisProcess(t *testing.T) {
	s, err := StatsOf(uint32(os.Getpid()))
	if err != nil {
		t.Skipf("this host exposes no readable cgroup accounting: %v", err)
	}
	if s.MemoryBytes == 0 || s.CPUSeconds <= 0 || !s.HasNetwork {
		t.Errorf("stats of this process = %+v: want memory and CPU used, and network counters", s)
	}
}
