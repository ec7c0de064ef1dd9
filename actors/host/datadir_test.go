package host

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func validNodeFile() *NodeFile {
	return &NodeFile{
		Format: 1, ClusterID: "c1", NodeID: "n1", Role: "manager",
		Advertise: "10.0.0.1", Port: 4710, RaftPort: 4711, JoinPort: 4712,
		Hostname: "host-a", Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Managers: []string{"10.0.0.1:4710"}, Bootstrapped: true,
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func nodeJSON(t *testing.T, mutate func(*NodeFile)) string {
	t.Helper()
	nf := validNodeFile()
	if mutate != nil {
		mutate(nf)
	}
	b, err := json.Marshal(nf)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReadNodeFile(t *testing.T) {
	cert := "certs/node.pem"
	tests := []struct {
		name string
		// setup prepares dataDir (which does not exist yet) and may return
		// another path to read.
		setup   func(t *testing.T, dataDir string) string
		want    *NodeFile
		wantErr []string
	}{
		{name: "missing dir", setup: func(t *testing.T, d string) string { return d }},
		{name: "empty dir", setup: func(t *testing.T, d string) string { mkdir(t, d); return d }},
		// A lock left by a node that died before writing node.json is not
		// a foreign dir.
		{name: "only a lock", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"lock": "123\n"})
			return d
		}},
		{name: "foreign dir", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"lock": "", "photos.tar": "x"})
			return d
		}, wantErr: []string{"not Warren's", "nothing was changed"}},
		{name: "foreign dir with a subdir only", setup: func(t *testing.T, d string) string { mkdir(t, filepath.Join(d, "certs")); return d }, wantErr: []string{"not Warren's"}},
		{name: "data dir is a file", setup: func(t *testing.T, d string) string {
			writeFiles(t, filepath.Dir(d), map[string]string{filepath.Base(d): "x"})
			return d
		}, wantErr: []string{"read data dir"}},
		{name: "garbage node.json", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"node.json": "{not json", cert: "c"})
			return d
		}, wantErr: []string{"damaged", "node.json"}},
		{name: "empty node.json", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"node.json": "", cert: "c"})
			return d
		}, wantErr: []string{"damaged"}},
		{name: "unknown format", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"node.json": nodeJSON(t, func(nf *NodeFile) { nf.Format = 2 }), cert: "c"})
			return d
		}, wantErr: []string{"damaged"}},
		{name: "no node id", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"node.json": nodeJSON(t, func(nf *NodeFile) { nf.NodeID = "" }), cert: "c"})
			return d
		}, wantErr: []string{"damaged"}},
		{name: "no cluster id", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"node.json": nodeJSON(t, func(nf *NodeFile) { nf.ClusterID = "" }), cert: "c"})
			return d
		}, wantErr: []string{"damaged"}},
		{name: "node certificate missing", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{"node.json": nodeJSON(t, nil)})
			return d
		}, wantErr: []string{"damaged", "certificate is missing"}},
		{name: "node.json unreadable", setup: func(t *testing.T, d string) string { mkdir(t, filepath.Join(d, "node.json")); return d }, wantErr: []string{"read ", "node.json"}},
		{name: "valid", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			writeFiles(t, d, map[string]string{cert: "c"})
			if err := writeNodeFile(d, validNodeFile()); err != nil {
				t.Fatal(err)
			}
			return d
		}, want: validNodeFile()},
		// Fields a newer version added are ignored, not a damage.
		{name: "valid with unknown field", setup: func(t *testing.T, d string) string {
			mkdir(t, d)
			js := strings.Replace(nodeJSON(t, nil), "{", `{"future":true,`, 1)
			writeFiles(t, d, map[string]string{"node.json": js, cert: "c"})
			return d
		}, want: validNodeFile()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			p := tt.setup(t, dir)
			got, err := ReadNodeFile(p)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ReadNodeFile = %+v, nil; want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if got != nil {
					t.Errorf("ReadNodeFile returned %+v with its error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ReadNodeFile = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func mkdir(t *testing.T, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
}

func TestWriteNodeFilePrivate(t *testing.T) {
	d := t.TempDir()
	if err := writeNodeFile(d, validNodeFile()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(d, nodeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("node.json mode = %v, want 0600", st.Mode().Perm())
	}
}

func TestLockDataDir(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		name string
		run  func(t *testing.T, dir string)
	}{
		{"creates a missing dir and records the pid", func(t *testing.T, dir string) {
			l, err := lockDataDir(filepath.Join(dir, "new", "data"))
			if err != nil {
				t.Fatal(err)
			}
			defer l.release()
			b, err := os.ReadFile(filepath.Join(dir, "new", "data", "lock"))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != pid+"\n" {
				t.Fatalf("lock file holds %q, want %q", b, pid+"\n")
			}
			// A lock and nothing else is still an empty data dir.
			if nf, err := ReadNodeFile(filepath.Join(dir, "new", "data")); nf != nil || err != nil {
				t.Fatalf("ReadNodeFile on a just-locked dir = %v, %v; want nil, nil", nf, err)
			}
		}},
		{"second lock is refused naming the holder", func(t *testing.T, dir string) {
			l, err := lockDataDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer l.release()
			l2, err := lockDataDir(dir)
			if err == nil {
				l2.release()
				t.Fatal("second lock on the same data dir succeeded")
			}
			for _, w := range []string{"in use", "pid " + pid, dir} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// The refused attempt must not have clobbered the holder's pid.
			if b, _ := os.ReadFile(filepath.Join(dir, "lock")); string(b) != pid+"\n" {
				t.Errorf("lock file holds %q after a refused lock, want %q", b, pid+"\n")
			}
		}},
		{"released lock can be taken again", func(t *testing.T, dir string) {
			l, err := lockDataDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			l.release()
			l.release() // twice is harmless: shutdown paths may both release
			l2, err := lockDataDir(dir)
			if err != nil {
				t.Fatalf("lock after release: %v", err)
			}
			l2.release()
		}},
		{"a stale pid from a dead holder is overwritten", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{"lock": "999999999\nextra junk that is longer\n"})
			l, err := lockDataDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer l.release()
			if b, _ := os.ReadFile(filepath.Join(dir, "lock")); string(b) != pid+"\n" {
				t.Fatalf("lock file holds %q, want %q", b, pid+"\n")
			}
		}},
		{"holder without a pid is reported as unknown", func(t *testing.T, dir string) {
			// Another program holding the flock on an empty file.
			f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
				t.Fatal(err)
			}
			_, err = lockDataDir(dir)
			if err == nil || !strings.Contains(err.Error(), "pid unknown") {
				t.Fatalf("error = %v, want one naming pid unknown", err)
			}
		}},
		{"a file system without locks is not blamed on a running warren", func(t *testing.T, dir string) {
			// ENOLCK comes from NFS without a lock daemon, which this
			// machine has not: only here is flock replaced.
			old := flock
			flock = func(int, int) error { return syscall.ENOLCK }
			defer func() { flock = old }()
			_, err := lockDataDir(dir)
			if err == nil || strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "does not support file locks") {
				t.Fatalf("error = %v, want one saying the file system cannot lock", err)
			}
		}},
		{"data dir path is a file", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{"file": "x"})
			_, err := lockDataDir(filepath.Join(dir, "file"))
			if err == nil || !strings.Contains(err.Error(), "create data dir") {
				t.Fatalf("error = %v, want one about creating the data dir", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, t.TempDir())
		})
	}
}
