package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func intermediate(t *testing.T, parent *CA, node string) *CA {
	t.Helper()
	s, err := parent.NewIntermediate(node)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func chainLen(t *testing.T, p []byte) int {
	t.Helper()
	certs, err := ParseChain(p)
	if err != nil {
		t.Fatal(err)
	}
	return len(certs)
}

// TestIntermediateChain: the root signs a manager's intermediate, which
// signs leaves handed out with their chain; a manager without the root key
// signs the next manager's intermediate one level down, with one less path
// length; the role is the leaf's.
func TestIntermediateChain(t *testing.T) {
	root := newCA(t, "c1")
	m1 := intermediate(t, root, "m1") // on the founder: holds the root too
	if m1.Root != root {
		t.Fatal("the founder's signer does not keep the root to sign intermediates")
	}
	m2csrKey, m2csr, err := NewCSR("m2")
	if err != nil {
		t.Fatal(err)
	}
	m2chain, err := m1.SignIntermediate(m2csr, "m2")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := SignerFromPEM(root.PEM, m2chain, m2csrKey) // a joined manager: no root key
	if err != nil {
		t.Fatal(err)
	}
	m3 := intermediate(t, m2, "m3")

	tests := []struct {
		name        string
		signer      *CA
		wantChain   int // certificates in a leaf's PEM
		wantPathLen int
	}{
		{"founder's intermediate (signed by the root)", m1, 2, IntermediatePathLen},
		// m1 holds the root: m2 hangs right under it, not under m1.
		{"intermediate the founder signs", m2, 2, IntermediatePathLen},
		{"intermediate a joined manager signs", m3, 3, IntermediatePathLen - 1},
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.signer.Cert.MaxPathLen; got != tt.wantPathLen {
				t.Errorf("path length = %d, want %d", got, tt.wantPathLen)
			}
			if !tt.signer.Cert.IsCA || tt.signer.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Error("intermediate is not a CA that may sign certificates")
			}
			if len(tt.signer.Cert.Subject.OrganizationalUnit) != 0 {
				t.Error("intermediate carries a role: presented as a leaf it would pass as a node")
			}
			if tt.signer.Fingerprint() != root.Fingerprint() {
				t.Error("an intermediate's fingerprint is not its cluster's (the root's)")
			}
			id := issue(t, tt.signer, "n1", RoleWorker)
			if got := chainLen(t, id.CertPEM); got != tt.wantChain {
				t.Fatalf("leaf PEM holds %d certificates, want %d (leaf + intermediates)", got, tt.wantChain)
			}
			certs, _ := ParseChain(id.CertPEM)
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Fatalf("leaf does not verify against the root with its chain: %v", err)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Fatal("leaf verifies without its chain: it was signed by the root, not the intermediate")
			}
			if p, err := PeerOf(certs[0]); err != nil || p.Role != RoleWorker || p.Name != "n1" {
				t.Fatalf("PeerOf(leaf) = %+v, %v", p, err)
			}
		})
	}
}

// TestPathExhausted: an intermediate at the end of its path length signs
// leaves (which verify) but no further intermediates.
func TestPathExhausted(t *testing.T) {
	root := newCA(t, "c1")
	s := intermediate(t, root, "m0")
	s.Root = nil // a joined manager: it signs with its intermediate only
	for i := IntermediatePathLen; i > 0; i-- {
		s = intermediate(t, s, "m")
	}
	if s.Cert.MaxPathLen != 0 || !s.Cert.MaxPathLenZero {
		t.Fatalf("deepest intermediate has path length %d", s.Cert.MaxPathLen)
	}
	_, csr, err := NewCSR("late")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SignIntermediate(csr, "late"); !errors.Is(err, ErrPathExhausted) {
		t.Fatalf("SignIntermediate at path length 0 = %v, want ErrPathExhausted", err)
	}
	serr, cerr := exchange(t, tlsConfig(t, root.PEM, issue(t, s, "m9", RoleManager)), tlsConfig(t, root.PEM, issue(t, root, "w", RoleWorker)))
	if serr != nil || cerr != nil {
		t.Fatalf("leaf of the deepest intermediate refused: server %v, client %v", serr, cerr)
	}
}

// TestTLSConfigIntermediates: the mutual-TLS config every port uses
// (remoting, raft, join) accepts leaves signed by intermediates, presented
// with their chain, verifies them against the root only, and takes the role
// from the leaf.
func TestTLSConfigIntermediates(t *testing.T) {
	root := newCA(t, "c1")
	m1 := intermediate(t, root, "m1")
	m2 := intermediate(t, m1, "m2")
	m2.Root = nil
	m3 := intermediate(t, m2, "m3") // two intermediates deep
	foreign := intermediate(t, newCA(t, "c2"), "x")

	mgr := issue(t, m1, "n1", RoleManager)
	wrk := issue(t, m3, "n2", RoleWorker)
	certs, _ := ParseChain(wrk.CertPEM)
	bare := &Identity{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw}), KeyPEM: wrk.KeyPEM}
	kb, err := marshalKey(m3.Key)
	if err != nil {
		t.Fatal(err)
	}
	asLeaf := &Identity{CertPEM: m3.Chain, KeyPEM: kb} // an intermediate posing as a node

	tests := []struct {
		name                 string
		server, client       *Identity
		serverErr, clientErr string
	}{
		{name: "leaves of intermediates, both ways", server: mgr, client: wrk},
		{name: "worker serves manager", server: wrk, client: mgr},
		{name: "root-signed leaf still accepted", server: mgr, client: issue(t, root, "old", RoleWorker)},
		{name: "client leaf without its chain", server: mgr, client: bare, serverErr: "certificate"},
		{name: "server leaf without its chain", server: bare, client: mgr, clientErr: "not from this cluster's CA"},
		{name: "client from another cluster's intermediate", server: mgr, client: issue(t, foreign, "n9", RoleAdmin), serverErr: "certificate"},
		{name: "server from another cluster's intermediate", server: issue(t, foreign, "n9", RoleManager), client: wrk, clientErr: "not from this cluster's CA"},
		{name: "intermediate presented as a client leaf", server: mgr, client: asLeaf, serverErr: "carries no Warren role"},
		{name: "intermediate presented as a server leaf", server: asLeaf, client: mgr, clientErr: "carries no Warren role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr := exchange(t, tlsConfig(t, root.PEM, tt.server), tlsConfig(t, root.PEM, tt.client))
			checkExchange(t, serr, cerr, tt.serverErr, tt.clientErr)
		})
	}
}

// TestLoadSigner: what a manager signs with, from its cert dir, on each
// kind of manager, and the upgrade of one that holds only the root key.
func TestLoadSigner(t *testing.T) {
	root := newCA(t, "c1")
	joined := intermediate(t, root, "m2")
	joinedKey, err := marshalKey(joined.Key)
	if err != nil {
		t.Fatal(err)
	}
	other := intermediate(t, newCA(t, "c2"), "m2")
	otherKey, _ := marshalKey(other.Key)
	rootKey, _ := marshalKey(root.Key)
	tests := []struct {
		name     string
		files    map[string][]byte
		wantErr  string
		wantRoot bool // the loaded signer may sign from the root
		created  bool // LoadSigner wrote a new intermediate
	}{
		{name: "manager from before intermediates (root key only)", files: map[string][]byte{RootCertFile: root.PEM, RootKeyFile: rootKey}, wantRoot: true, created: true},
		{name: "founder after the upgrade", files: map[string][]byte{RootCertFile: root.PEM, RootKeyFile: rootKey, SignerCertFile: joined.Chain, SignerKeyFile: joinedKey}, wantRoot: true},
		{name: "joined manager", files: map[string][]byte{RootCertFile: root.PEM, SignerCertFile: joined.Chain, SignerKeyFile: joinedKey}},
		{name: "founder cut short before the signer cert", files: map[string][]byte{RootCertFile: root.PEM, RootKeyFile: rootKey, SignerKeyFile: joinedKey}, wantRoot: true, created: true},
		{name: "no signing key", files: map[string][]byte{RootCertFile: root.PEM}, wantErr: "no signing CA"},
		{name: "signer of another cluster", files: map[string][]byte{RootCertFile: root.PEM, SignerCertFile: other.Chain, SignerKeyFile: otherKey}, wantErr: "not from this cluster's root"},
		{name: "signer key of another certificate", files: map[string][]byte{RootCertFile: root.PEM, SignerCertFile: joined.Chain, SignerKeyFile: otherKey}, wantErr: "does not belong"},
		{name: "no root certificate", files: map[string][]byte{SignerCertFile: joined.Chain, SignerKeyFile: joinedKey}, wantErr: "read CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s, err := LoadSigner(dir, "m2")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.IsRoot() {
				t.Fatal("a manager signs leaves with the root, not an intermediate")
			}
			if (s.Root != nil) != tt.wantRoot {
				t.Errorf("signer holds the root = %v, want %v", s.Root != nil, tt.wantRoot)
			}
			if tt.created == s.Key.Equal(joined.Key) {
				t.Errorf("intermediate created = %v, want %v", !s.Key.Equal(joined.Key), tt.created)
			}
			again, err := LoadSigner(dir, "m2")
			if err != nil || !again.Key.Equal(s.Key) {
				t.Fatalf("second load: %v (same key %v): the intermediate is not kept", err, err == nil && again.Key.Equal(s.Key))
			}
			for _, f := range []string{SignerCertFile, SignerKeyFile} {
				st, err := os.Stat(filepath.Join(dir, f))
				if err != nil || st.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v mode %v, want 0600", f, err, st.Mode().Perm())
				}
			}
		})
	}
}

// TestKeyFiles: keys that must be new are never overwritten; replaced files
// are replaced whole; nothing is left behind; mode 0600; a link planted at
// the temp name is not followed.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "c1")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, RootKeyFile)
	before, _ := os.ReadFile(keyPath)
	if err := newCA(t, "c2").Save(dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("saving a second root over the first = %v, want a refusal", err)
	}
	if after, _ := os.ReadFile(keyPath); !bytes.Equal(before, after) {
		t.Fatal("the cluster's root key was overwritten")
	}
	s := intermediate(t, ca, "m1")
	if err := s.SaveSigner(dir); err != nil {
		t.Fatal(err)
	}
	if err := intermediate(t, ca, "m1").SaveSigner(dir); err == nil {
		t.Fatal("a second intermediate key replaced the first")
	}
	id := issue(t, s, "n1", RoleWorker)
	if err := id.SaveNew(dir, "node"); err != nil {
		t.Fatal(err)
	}
	if err := issue(t, s, "n1", RoleWorker).SaveNew(dir, "node"); err == nil {
		t.Fatal("SaveNew replaced an existing node key")
	}

	// A planted symlink at the temp name: the write must not go through it.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "node-key.pem")
	if err := os.Symlink(victim, target+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(target, []byte("new key")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "untouched" {
		t.Fatal("WriteFile wrote through a link planted at its temp name")
	}
	if got, _ := os.ReadFile(target); string(got) != "new key" {
		t.Fatalf("replaced file holds %q", got)
	}

	if err := RemoveSigner(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		st, _ := os.Stat(filepath.Join(dir, e.Name()))
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), st.Mode().Perm())
		}
	}
	if got := strings.Join(names, " "); got != "ca.pem node-key.pem node.pem" {
		t.Errorf("files left = %q, want the root cert and the node pair only (no signer, no root key, no temp files)", got)
	}
}
