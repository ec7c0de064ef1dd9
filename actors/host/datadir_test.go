package host

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/store/pki"
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

type creds struct {
	ca    *pki.CA
	admin *pki.Identity
}

func newCreds(t *testing.T, cluster string) creds {
	t.Helper()
	ca, err := pki.NewCA(cluster)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ca.Issue("admin", pki.RoleAdmin, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return creds{ca, admin}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSaveAdminCredentials(t *testing.T) {
	c1, c2 := newCreds(t, "c1"), newCreds(t, "c2")
	type save struct {
		cluster  string
		managers []string
		creds    creds
	}
	tests := []struct {
		name  string
		saves []save
		// Expected config after the saves; Dir is relative to the config dir.
		current  string
		managers map[string][]string
		// Which credentials each cluster dir must hold afterwards.
		files map[string]creds
	}{
		{name: "first cluster", saves: []save{{"c1", []string{"10.0.0.1:4710"}, c1}},
			current: "c1", managers: map[string][]string{"c1": {"10.0.0.1:4710"}}, files: map[string]creds{"c1": c1}},
		{name: "two clusters keep both, last is current", saves: []save{
			{"c1", []string{"10.0.0.1:4710"}, c1},
			{"c2", []string{"10.0.1.1:4710"}, c2},
		}, current: "c2", managers: map[string][]string{"c1": {"10.0.0.1:4710"}, "c2": {"10.0.1.1:4710"}}, files: map[string]creds{"c1": c1, "c2": c2}},
		{name: "back to the first cluster", saves: []save{
			{"c1", []string{"10.0.0.1:4710"}, c1},
			{"c2", []string{"10.0.1.1:4710"}, c2},
			{"c1", []string{"10.0.0.1:4710"}, c1},
		}, current: "c1", managers: map[string][]string{"c1": {"10.0.0.1:4710"}, "c2": {"10.0.1.1:4710"}}, files: map[string]creds{"c1": c1, "c2": c2}},
		// A manager seen again is not duplicated; a new one goes first,
		// since the newest knowledge is the likeliest to answer.
		{name: "managers merge without duplicates", saves: []save{
			{"c1", []string{"10.0.0.1:4710"}, c1},
			{"c1", []string{"10.0.0.2:4710", "10.0.0.1:4710"}, c1},
		}, current: "c1", managers: map[string][]string{"c1": {"10.0.0.2:4710", "10.0.0.1:4710"}}, files: map[string]creds{"c1": c1}},
		// The caller lists its own manager first (host.go puts the local
		// address at the front); the CLI tries managers in order, so the
		// order given must survive.
		{name: "managers keep the caller's order", saves: []save{
			{"c1", []string{"10.0.0.1:4710", "10.0.0.2:4710", "10.0.0.3:4710"}, c1},
		}, current: "c1", managers: map[string][]string{"c1": {"10.0.0.1:4710", "10.0.0.2:4710", "10.0.0.3:4710"}}, files: map[string]creds{"c1": c1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, s := range tt.saves {
				if err := SaveAdminCredentials(dir, s.cluster, s.managers, s.creds.ca.PEM, s.creds.admin); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := LoadClientConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Current != tt.current {
				t.Errorf("current = %q, want %q", cfg.Current, tt.current)
			}
			if len(cfg.Clusters) != len(tt.managers) {
				t.Errorf("config knows %d clusters, want %d", len(cfg.Clusters), len(tt.managers))
			}
			for id, ms := range tt.managers {
				e := cfg.Clusters[id]
				if e == nil {
					t.Errorf("cluster %s missing from config", id)
					continue
				}
				if !reflect.DeepEqual(e.Managers, ms) {
					t.Errorf("cluster %s managers = %v, want %v", id, e.Managers, ms)
				}
				if want := filepath.Join(dir, "clusters", id); e.Dir != want {
					t.Errorf("cluster %s dir = %q, want %q", id, e.Dir, want)
				}
			}
			// Each cluster's files hold its own credentials: saving another
			// cluster never overwrote them.
			for id, c := range tt.files {
				cdir := filepath.Join(dir, "clusters", id)
				if !bytes.Equal(readFile(t, filepath.Join(cdir, "ca.pem")), c.ca.PEM) {
					t.Errorf("cluster %s ca.pem is not its CA", id)
				}
				got, err := pki.LoadIdentity(cdir, "admin")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.CertPEM, c.admin.CertPEM) || !bytes.Equal(got.KeyPEM, c.admin.KeyPEM) {
					t.Errorf("cluster %s admin credentials are not its own", id)
				}
				// What the CLI does with them: they must make a TLS config.
				if _, err := pki.TLSConfig(readFile(t, filepath.Join(cdir, "ca.pem")), got); err != nil {
					t.Errorf("cluster %s credentials unusable: %v", id, err)
				}
				st, err := os.Stat(filepath.Join(cdir, "admin-key.pem"))
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("cluster %s admin key mode = %v, want 0600", id, st.Mode().Perm())
				}
			}
		})
	}
}

func TestLoadClientConfig(t *testing.T) {
	tests := []struct {
		name    string
		config  *string // nil: no config.json
		wantErr string
		// wantNotExist: the error is os.ErrNotExist, which the CLI turns
		// into "run warren cluster init".
		wantNotExist bool
		current      string
	}{
		{name: "missing", wantNotExist: true},
		{name: "damaged", config: ptr(`{"current": "c1", "clusters": {`), wantErr: "is damaged"},
		{name: "wrong shape", config: ptr(`{"clusters": ["c1"]}`), wantErr: "is damaged"},
		{name: "empty file", config: ptr(``), wantErr: "is damaged"},
		// A config written by hand without clusters still loads, with an
		// empty map a later save can fill.
		{name: "no clusters", config: ptr(`{"current": "c1"}`), current: "c1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.config != nil {
				writeFiles(t, dir, map[string]string{ConfigFile: *tt.config})
			}
			cfg, err := LoadClientConfig(dir)
			switch {
			case tt.wantNotExist:
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("error = %v, want os.ErrNotExist", err)
				}
				if cfg == nil || cfg.Clusters == nil {
					t.Fatalf("config = %+v, want an empty config to fill", cfg)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), ConfigFile) {
					t.Fatalf("error = %v, want one containing %q and the file name", err, tt.wantErr)
				}
				if cfg != nil {
					t.Fatalf("config = %+v with a damaged file, want nil", cfg)
				}
				// A damaged config is the user's to fix: saving credentials
				// must refuse rather than replace it.
				c := newCreds(t, "c9")
				if err := SaveAdminCredentials(dir, "c9", []string{"10.0.9.1:4710"}, c.ca.PEM, c.admin); err == nil {
					t.Fatal("SaveAdminCredentials succeeded over a damaged config")
				}
				if got := readFile(t, filepath.Join(dir, ConfigFile)); string(got) != *tt.config {
					t.Fatalf("config.json was rewritten to %q", got)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Current != tt.current || cfg.Clusters == nil {
					t.Fatalf("config = %+v, want current %q and a cluster map", cfg, tt.current)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }
