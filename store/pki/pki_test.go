package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T, id string) *CA {
	t.Helper()
	ca, err := NewCA(id)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, name, role string) *Identity {
	t.Helper()
	id, err := ca.Issue(name, role, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// issueRaw signs a leaf with an arbitrary subject, for certificates Issue
// never makes (no OU, several OUs) but a careless or hostile CA holder could.
func issueRaw(t *testing.T, ca *CA, subject pkix.Name) *Identity {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := serial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Identity{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}
}

func mustParse(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseCert(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCARoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "c1")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(loaded.PEM, ca.PEM) || !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("loaded CA certificate differs from the saved one")
	}
	if !loaded.Key.Equal(ca.Key) {
		t.Fatal("loaded CA key differs from the saved one")
	}
	if got, want := loaded.Cert.Subject.CommonName, "warren-ca-c1"; got != want {
		t.Errorf("CA common name = %q, want %q", got, want)
	}
	if !loaded.Cert.IsCA {
		t.Error("CA certificate is not marked as a CA")
	}
	// Keys are secrets: both files must be private to the owner, and the
	// atomic write must not leave its temp file behind.
	for _, f := range []string{"ca.pem", "ca-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, st.Mode().Perm())
		}
		if _, err := os.Stat(filepath.Join(dir, f+".tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s.tmp left behind (stat err %v)", f, err)
		}
	}

	// A certificate the reloaded CA issues must verify against the original
	// CA: the reloaded key is the one that signs for the cluster.
	id := issue(t, loaded, "node-1", RoleWorker)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	leaf := mustParse(t, id.CertPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("leaf from reloaded CA does not verify against the original: %v", err)
	}

	if err := id.Save(dir, "node"); err != nil {
		t.Fatal(err)
	}
	back, err := LoadIdentity(dir, "node")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.CertPEM, id.CertPEM) || !bytes.Equal(back.KeyPEM, id.KeyPEM) {
		t.Fatal("loaded identity differs from the saved one")
	}
	for _, f := range []string{"node.pem", "node-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, st.Mode().Perm())
		}
	}
	if _, err := tls.X509KeyPair(back.CertPEM, back.KeyPEM); err != nil {
		t.Fatalf("loaded identity is not a usable key pair: %v", err)
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t, "c1")
	ip := net.ParseIP("10.0.0.7")
	id, err := ca.Issue("node-7", RoleManager, []net.IP{ip}, []string{"n7.example"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, id.CertPEM)
	if c.Subject.CommonName != "node-7" {
		t.Errorf("CN = %q, want node-7", c.Subject.CommonName)
	}
	if len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != Organization {
		t.Errorf("O = %v, want [%s]", c.Subject.Organization, Organization)
	}
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(ip) {
		t.Errorf("IP SANs = %v, want [%v]", c.IPAddresses, ip)
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != "n7.example" {
		t.Errorf("DNS SANs = %v, want [n7.example]", c.DNSNames)
	}
	// Every certificate serves both ends of a mutual-TLS connection.
	var server, client bool
	for _, u := range c.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !server || !client {
		t.Errorf("ext key usage = %v, want server and client auth", c.ExtKeyUsage)
	}
	if d := time.Until(c.NotAfter); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
		t.Errorf("NotAfter is %v from now, want about 2h", d)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("leaf not signed by its CA: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	ca := newCA(t, "c1")
	tests := []struct {
		name  string
		files map[string][]byte
		load  func(dir string) error
		want  string
	}{
		{"CA missing", nil, func(d string) error { _, err := LoadCA(d); return err }, "read CA certificate"},
		{"CA key missing", map[string][]byte{"ca.pem": ca.PEM}, func(d string) error { _, err := LoadCA(d); return err }, "read CA key"},
		{"CA cert not PEM", map[string][]byte{"ca.pem": []byte("junk"), "ca-key.pem": []byte("junk")}, func(d string) error { _, err := LoadCA(d); return err }, "no PEM certificate"},
		{"CA key not PEM", map[string][]byte{"ca.pem": ca.PEM, "ca-key.pem": []byte("junk")}, func(d string) error { _, err := LoadCA(d); return err }, "no PEM block"},
		{"CA key garbage DER", map[string][]byte{"ca.pem": ca.PEM, "ca-key.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("x")})}, func(d string) error { _, err := LoadCA(d); return err }, "parse CA key"},
		{"identity cert missing", nil, func(d string) error { _, err := LoadIdentity(d, "node"); return err }, "read certificate"},
		{"identity key missing", map[string][]byte{"node.pem": ca.PEM}, func(d string) error { _, err := LoadIdentity(d, "node"); return err }, "read key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := tt.load(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestPeerOf(t *testing.T) {
	ca := newCA(t, "c1")
	tests := []struct {
		name    string
		id      *Identity
		want    Peer
		wantErr string
	}{
		{"manager", issue(t, ca, "m1", RoleManager), Peer{Name: "m1", Role: RoleManager}, ""},
		{"worker", issue(t, ca, "w1", RoleWorker), Peer{Name: "w1", Role: RoleWorker}, ""},
		{"admin", issue(t, ca, "admin", RoleAdmin), Peer{Name: "admin", Role: RoleAdmin}, ""},
		{"unknown role", issue(t, ca, "r1", "root"), Peer{}, `unknown role "root"`},
		{"empty role", issue(t, ca, "e1", ""), Peer{}, `unknown role ""`},
		// Roles are exact: a case variant is not an admin.
		{"role case differs", issue(t, ca, "a2", "Admin"), Peer{}, `unknown role "Admin"`},
		{"no OU", issueRaw(t, ca, pkix.Name{CommonName: "x1", Organization: []string{Organization}}), Peer{}, "carries no Warren role"},
		// Two OUs are ambiguous; a verifier must not pick one.
		{"two OUs", issueRaw(t, ca, pkix.Name{CommonName: "x2", OrganizationalUnit: []string{RoleWorker, RoleAdmin}}), Peer{}, "carries no Warren role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeerOf(mustParse(t, tt.id.CertPEM))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PeerOf = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("PeerOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func tlsConfig(t *testing.T, caPEM []byte, id *Identity) *tls.Config {
	t.Helper()
	c, err := TLSConfig(caPEM, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exchange runs a real TLS connection over loopback TCP: a handshake, then
// "ping" from the client and "pong" back. In TLS 1.3 the client finishes its
// handshake before the server has judged the client's certificate, so a
// refusal by the server shows on the client only when it reads; the round
// trip makes each side's verdict visible to both.
func exchange(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil {
			done <- err
			return
		}
		if string(buf) != "ping" {
			done <- errors.New("server read " + string(buf))
			return
		}
		_, err = tc.Write([]byte("pong"))
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	clientErr = func() error {
		if err := tc.Handshake(); err != nil {
			return err
		}
		if _, err := tc.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil {
			return err
		}
		if string(buf) != "pong" {
			return errors.New("client read " + string(buf))
		}
		return nil
	}()
	// A refused client stops reading; closing unblocks a server still
	// waiting on it.
	c.Close()
	return <-done, clientErr
}

func TestTLSConfigHandshake(t *testing.T) {
	ca := newCA(t, "c1")
	other := newCA(t, "c2")
	mgr := issue(t, ca, "m1", RoleManager)
	wrk := issue(t, ca, "w1", RoleWorker)
	adm := issue(t, ca, "admin", RoleAdmin)
	foreign := issue(t, other, "m9", RoleManager)
	noRole := issueRaw(t, ca, pkix.Name{CommonName: "x1", Organization: []string{Organization}})
	badRole := issue(t, ca, "r1", "root")

	tests := []struct {
		name           string
		server, client *tls.Config
		// Which side must refuse; empty strings mean the exchange succeeds.
		serverErr, clientErr string
	}{
		{name: "manager serves worker", server: tlsConfig(t, ca.PEM, mgr), client: tlsConfig(t, ca.PEM, wrk)},
		{name: "worker serves manager", server: tlsConfig(t, ca.PEM, wrk), client: tlsConfig(t, ca.PEM, mgr)},
		{name: "manager serves admin", server: tlsConfig(t, ca.PEM, mgr), client: tlsConfig(t, ca.PEM, adm)},
		{name: "admin serves manager", server: tlsConfig(t, ca.PEM, adm), client: tlsConfig(t, ca.PEM, mgr)},
		// The client trusts the cluster CA but presents another CA's leaf:
		// the server's chain check refuses it.
		{name: "client leaf from another CA", server: tlsConfig(t, ca.PEM, mgr), client: tlsConfig(t, ca.PEM, foreign), serverErr: "certificate"},
		// The server presents another CA's leaf: the client refuses it
		// even though it skips host name checks.
		{name: "server leaf from another CA", server: tlsConfig(t, ca.PEM, foreign), client: tlsConfig(t, ca.PEM, wrk), clientErr: "not from this cluster's CA"},
		{name: "client without role", server: tlsConfig(t, ca.PEM, mgr), client: tlsConfig(t, ca.PEM, noRole), serverErr: "carries no Warren role"},
		{name: "server without role", server: tlsConfig(t, ca.PEM, noRole), client: tlsConfig(t, ca.PEM, wrk), clientErr: "carries no Warren role"},
		{name: "client with unknown role", server: tlsConfig(t, ca.PEM, mgr), client: tlsConfig(t, ca.PEM, badRole), serverErr: "unknown role"},
		{name: "server with unknown role", server: tlsConfig(t, ca.PEM, badRole), client: tlsConfig(t, ca.PEM, wrk), clientErr: "unknown role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr := exchange(t, tt.server, tt.client)
			checkExchange(t, serr, cerr, tt.serverErr, tt.clientErr)
		})
	}
}

// checkExchange: with no error wanted, both ends must succeed; otherwise a
// refusal must stop the exchange on both ends, and the side that judged
// must say why.
func checkExchange(t *testing.T, serr, cerr error, serverErr, clientErr string) {
	t.Helper()
	if serverErr == "" && clientErr == "" {
		if serr != nil || cerr != nil {
			t.Fatalf("exchange failed: server %v, client %v", serr, cerr)
		}
		return
	}
	if serr == nil || cerr == nil {
		t.Fatalf("exchange not refused on both ends: server %v, client %v", serr, cerr)
	}
	if serverErr != "" && !strings.Contains(serr.Error(), serverErr) {
		t.Errorf("server error = %v, want one containing %q", serr, serverErr)
	}
	if clientErr != "" && !strings.Contains(cerr.Error(), clientErr) {
		t.Errorf("client error = %v, want one containing %q", cerr, clientErr)
	}
}

func TestTLSConfigSettings(t *testing.T) {
	ca := newCA(t, "c1")
	id := issue(t, ca, "m1", RoleManager)
	c := tlsConfig(t, ca.PEM, id)
	if c.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion = %x, want TLS 1.3", c.MinVersion)
	}
	if c.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("ClientAuth = %v, want RequireAndVerifyClientCert", c.ClientAuth)
	}
	// InsecureSkipVerify is only safe with our own verifier in its place.
	if c.InsecureSkipVerify && c.VerifyPeerCertificate == nil {
		t.Error("host verification skipped with no peer verifier")
	}
	if err := c.VerifyPeerCertificate(nil, nil); err == nil {
		t.Error("verifier accepted a peer with no certificate")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := newCA(t, "c1")
	id := issue(t, ca, "m1", RoleManager)
	other := issue(t, ca, "m2", RoleManager)
	tests := []struct {
		name  string
		caPEM []byte
		id    *Identity
		want  string
	}{
		{"CA not PEM", []byte("junk"), id, "damaged"},
		{"CA empty", nil, id, "damaged"},
		{"key not PEM", ca.PEM, &Identity{CertPEM: id.CertPEM, KeyPEM: []byte("junk")}, "load TLS key pair"},
		{"key of another cert", ca.PEM, &Identity{CertPEM: id.CertPEM, KeyPEM: other.KeyPEM}, "load TLS key pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := TLSConfig(tt.caPEM, tt.id)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	ca := newCA(t, "c1")
	other := newCA(t, "c1") // same cluster id, new key: a different CA
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	fp := ca.Fingerprint()
	sum := sha256.Sum256(mustParse(t, ca.PEM).Raw)
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"stable across calls", ca.Fingerprint(), fp},
		{"stable across save and load", loaded.Fingerprint(), fp},
		{"package function agrees", Fingerprint(ca.Cert), fp},
		{"sha256 of the DER in ca.pem", hex.EncodeToString(sum[:]), fp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("fingerprint = %s, want %s", tt.got, tt.want)
			}
		})
	}
	if len(fp) != 64 {
		t.Errorf("fingerprint %q has %d chars, want 64", fp, len(fp))
	}
	if _, err := hex.DecodeString(fp); err != nil || strings.ToLower(fp) != fp {
		t.Errorf("fingerprint %q is not lower-case hex", fp)
	}
	if other.Fingerprint() == fp {
		t.Error("two CAs share a fingerprint")
	}
}
