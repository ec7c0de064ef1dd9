package client

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/store/pki"
)

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

type adminCreds struct {
	ca    *pki.CA
	admin *pki.Identity
}

func newAdminCreds(t *testing.T, cluster string) adminCreds {
	t.Helper()
	ca, err := pki.NewCA(cluster)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ca.Issue("admin", pki.RoleAdmin, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return adminCreds{ca, admin}
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
	c1, c2 := newAdminCreds(t, "c1"), newAdminCreds(t, "c2")
	type save struct {
		cluster    string
		managers   []string
		adminCreds adminCreds
	}
	tests := []struct {
		name  string
		saves []save
		// Expected config after the saves; Dir is relative to the config dir.
		current  string
		managers map[string][]string
		// Which credentials each cluster dir must hold afterwards.
		files map[string]adminCreds
	}{
		{name: "first cluster", saves: []save{{"c1", []string{"10.0.0.1:4710"}, c1}},
			current: "c1", managers: map[string][]string{"c1": {"10.0.0.1:4710"}}, files: map[string]adminCreds{"c1": c1}},
		{name: "two clusters keep both, last is current", saves: []save{
			{"c1", []string{"10.0.0.1:4710"}, c1},
			{"c2", []string{"10.0.1.1:4710"}, c2},
		}, current: "c2", managers: map[string][]string{"c1": {"10.0.0.1:4710"}, "c2": {"10.0.1.1:4710"}}, files: map[string]adminCreds{"c1": c1, "c2": c2}},
		{name: "back to the first cluster", saves: []save{
			{"c1", []string{"10.0.0.1:4710"}, c1},
			{"c2", []string{"10.0.1.1:4710"}, c2},
			{"c1", []string{"10.0.0.1:4710"}, c1},
		}, current: "c1", managers: map[string][]string{"c1": {"10.0.0.1:4710"}, "c2": {"10.0.1.1:4710"}}, files: map[string]adminCreds{"c1": c1, "c2": c2}},
		// A manager seen again is not duplicated; a new one goes first,
		// since the newest knowledge is the likeliest to answer.
		{name: "managers merge without duplicates", saves: []save{
			{"c1", []string{"10.0.0.1:4710"}, c1},
			{"c1", []string{"10.0.0.2:4710", "10.0.0.1:4710"}, c1},
		}, current: "c1", managers: map[string][]string{"c1": {"10.0.0.2:4710", "10.0.0.1:4710"}}, files: map[string]adminCreds{"c1": c1}},
		// The caller lists its own manager first (host.go puts the local
		// address at the front); the CLI tries managers in order, so the
		// order given must survive.
		{name: "managers keep the caller's order", saves: []save{
			{"c1", []string{"10.0.0.1:4710", "10.0.0.2:4710", "10.0.0.3:4710"}, c1},
		}, current: "c1", managers: map[string][]string{"c1": {"10.0.0.1:4710", "10.0.0.2:4710", "10.0.0.3:4710"}}, files: map[string]adminCreds{"c1": c1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, s := range tt.saves {
				if err := SaveAdminCredentials(dir, s.cluster, s.managers, s.adminCreds.ca.PEM, s.adminCreds.admin); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := LoadConfig(dir)
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
			cfg, err := LoadConfig(dir)
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
				c := newAdminCreds(t, "c9")
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
