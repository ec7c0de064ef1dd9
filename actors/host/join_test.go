package host

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// joinFixture is a manager's join endpoint on 127.0.0.1: a real raft store
// on disk holding the cluster info, the manager's intermediate signer under
// the cluster root, and the HTTPS server joins go to.
type joinFixture struct {
	root, signer *pki.CA
	st           *store.Store
	addr         string
	ci           *messages.ClusterInfo
}

// startJoinFixture serves joins with a certificate of serverRole (a
// manager's, or a worker's posing as one). edit changes the cluster info
// before it is recorded.
func startJoinFixture(t *testing.T, serverRole string, edit func(*messages.ClusterInfo)) *joinFixture {
	t.Helper()
	root, err := pki.NewCA("joins")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := root.NewIntermediate("mgr-1")
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := signer.Issue("mgr-1", pki.RoleManager, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.TLSConfig(root.PEM, mgr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := l.Addr().String()
	l.Close()
	st, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "raft"), NodeID: "mgr-1", Bind: raftAddr, Advertise: raftAddr, TLS: tlsCfg, Log: zap.NewNop()}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ci := &messages.ClusterInfo{ClusterId: "c-joins", Name: "warren", CaFingerprint: root.Fingerprint(), WorkerToken: pki.NewSecret(), ManagerToken: pki.NewSecret()}
	if edit != nil {
		edit(ci)
	}
	res, err := st.Apply(&messages.Command{Op: &messages.Command_SetClusterInfo{SetClusterInfo: &messages.SetClusterInfo{Info: ci}}}, 10*time.Second)
	if err != nil || res.Error != nil {
		t.Fatalf("record cluster info: %v %v", err, res.GetError())
	}
	id := mgr
	if serverRole != pki.RoleManager {
		if id, err = signer.Issue("wrk-1", serverRole, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	js, err := startJoinServer(ln, st, signer, id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.srv.Close() })
	return &joinFixture{root: root, signer: signer, st: st, addr: ln.Addr().String(), ci: ci}
}

func (f *joinFixture) token(role string) string {
	if role == pki.RoleManager {
		return pki.Token(f.ci.CaFingerprint, f.ci.ManagerToken)
	}
	return pki.Token(f.ci.CaFingerprint, f.ci.WorkerToken)
}

// verifyPEMChain verifies a PEM chain (first certificate first) against
// root alone.
func verifyPEMChain(t *testing.T, root *pki.CA, chain []byte, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	certs, err := pki.ParseChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) == 0 {
		t.Fatal("no certificate in the chain")
	}
	leaf, err := pki.VerifyChain(root.Cert, certs, usage)
	if err != nil {
		t.Fatalf("chain does not verify against the cluster root: %v", err)
	}
	return leaf
}

// TestJoinIssuesCertificatesOnly: a join with either token brings back
// certificates that chain to the root and never a private key; a manager
// gets its own intermediate CA for the key it made (b7bdeb6 sent it the
// root key in ca_key_pem). The data dir a join writes holds the node's
// pair, and for a manager its intermediate, never the root key.
func TestJoinIssuesCertificatesOnly(t *testing.T) {
	f := startJoinFixture(t, pki.RoleManager, nil)
	for _, role := range []string{pki.RoleWorker, pki.RoleManager} {
		t.Run(role, func(t *testing.T) {
			j, err := requestJoin(context.Background(), f.token(role), []string{f.addr}, "node-"+role, "127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			wire, err := proto.Marshal(j.resp)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(wire, []byte("PRIVATE KEY")) {
				t.Fatal("the join response carries a private key")
			}
			leaf := verifyPEMChain(t, f.root, j.resp.CertPem, x509.ExtKeyUsageClientAuth)
			if p, err := pki.PeerOf(leaf); err != nil || p.Role != role || p.Name != j.resp.NodeId {
				t.Fatalf("leaf identity = %+v, %v; want %s %s", p, err, role, j.resp.NodeId)
			}
			if _, err := tls.X509KeyPair(j.resp.CertPem, j.keyPEM); err != nil {
				t.Fatalf("certificate is not for the key the node made: %v", err)
			}
			if role == pki.RoleWorker {
				if len(j.resp.SignerCertPem) > 0 {
					t.Fatal("a worker was issued a CA certificate")
				}
			} else {
				inter := verifyPEMChain(t, f.root, j.resp.SignerCertPem, x509.ExtKeyUsageAny)
				if !inter.IsCA || inter.KeyUsage&x509.KeyUsageCertSign == 0 {
					t.Fatal("the manager's signing certificate is not a CA")
				}
				if _, err := pki.SignerFromPEM(j.resp.CaPem, j.resp.SignerCertPem, j.signerKey); err != nil {
					t.Fatalf("intermediate unusable with the key the node made: %v", err)
				}
			}

			// The whole join, into a data dir.
			dir := t.TempDir()
			n := &Node{cfg: Config{DataDir: dir, Advertise: "127.0.0.1", Hostname: "dir-" + role, Port: 1, RaftPort: 2, JoinPort: 3,
				Join: &JoinConfig{Token: f.token(role), Addrs: []string{f.addr}}}}
			nf, err := n.joinCluster(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			cd := certDir(dir)
			want := map[string]bool{"ca.pem": true, "node.pem": true, "node-key.pem": true, pki.SignerCertFile: role == pki.RoleManager, pki.SignerKeyFile: role == pki.RoleManager, pki.RootKeyFile: false}
			for file, present := range want {
				st, err := os.Stat(filepath.Join(cd, file))
				if (err == nil) != present {
					t.Errorf("%s present = %v, want %v", file, err == nil, present)
				}
				if err == nil && st.Mode().Perm() != 0o600 {
					t.Errorf("%s mode %v, want 0600", file, st.Mode().Perm())
				}
			}
			if role == pki.RoleManager {
				s, err := pki.LoadSigner(cd, nf.NodeID)
				if err != nil {
					t.Fatal(err)
				}
				if s.Root != nil {
					t.Fatal("a joined manager can sign from the root")
				}
				// What it signs is trusted by everyone, through the root.
				id, err := s.Issue("admin", pki.RoleAdmin, nil, nil, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				verifyPEMChain(t, f.root, id.CertPEM, x509.ExtKeyUsageClientAuth)
			}
		})
	}
}

// TestJoinRefusesWorkerServer: a worker holds a certificate of the same
// cluster; posing as a manager's join endpoint it would collect join
// tokens. The joining node refuses any join server whose leaf is not a
// manager's (b7bdeb6 accepted any certificate of the cluster).
func TestJoinRefusesWorkerServer(t *testing.T) {
	for _, role := range []string{pki.RoleWorker, pki.RoleAdmin} {
		t.Run(role, func(t *testing.T) {
			f := startJoinFixture(t, role, nil)
			_, err := requestJoin(context.Background(), f.token(pki.RoleWorker), []string{f.addr}, "victim", "127.0.0.1")
			if err == nil || !strings.Contains(err.Error(), "not a manager's") {
				t.Fatalf("join through a %s's endpoint = %v, want a refusal of its certificate", role, err)
			}
		})
	}
}

// insecureClient speaks to a join endpoint as anyone on the network can.
func insecureClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a hostile client
	}}
}

// TestJoinRateLimit: one address gets joinBurst tries, then 429 with a
// Retry-After and an error a joining node shows; a real join from it is
// refused too until its bucket refills.
func TestJoinRateLimit(t *testing.T) {
	f := startJoinFixture(t, pki.RoleManager, nil)
	cl := insecureClient()
	for i := range joinBurst {
		r, err := cl.Post("https://"+f.addr+joinPath, "application/x-protobuf", strings.NewReader("junk"))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d: status %d, want 400 (within the burst)", i+1, r.StatusCode)
		}
	}
	r, err := cl.Post("https://"+f.addr+joinPath, "application/x-protobuf", strings.NewReader("junk"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("request %d: status %d (Retry-After %q), want 429 with Retry-After", joinBurst+1, r.StatusCode, r.Header.Get("Retry-After"))
	}
	resp := &messages.JoinResponse{}
	if err := proto.Unmarshal(body, resp); err != nil || !strings.Contains(resp.GetError().GetMessage(), "too many join requests") {
		t.Fatalf("429 body = %v (%v), want a JoinResponse saying why", resp.GetError(), err)
	}
	if _, err := requestJoin(context.Background(), f.token(pki.RoleWorker), []string{f.addr}, "late", "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("join while limited = %v, want a refusal", err)
	}
}

// TestJoinTokenExpiry: a token past its expiry (recorded in the replicated
// cluster info) is refused with what to do; one before it, or without one,
// is accepted.
func TestJoinTokenExpiry(t *testing.T) {
	now := time.Now()
	f := startJoinFixture(t, pki.RoleManager, func(ci *messages.ClusterInfo) {
		ci.WorkerTokenExpiresUnixNano = now.Add(-time.Minute).UnixNano()
		ci.ManagerTokenExpiresUnixNano = now.Add(time.Hour).UnixNano()
	})
	g := startJoinFixture(t, pki.RoleManager, nil)
	tests := []struct {
		name    string
		f       *joinFixture
		role    string
		wantErr string
	}{
		{"expired worker token", f, pki.RoleWorker, "expired at"},
		{"manager token before its expiry", f, pki.RoleManager, ""},
		{"token without expiry", g, pki.RoleWorker, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := requestJoin(context.Background(), tt.f.token(tt.role), []string{tt.f.addr}, "n", "127.0.0.1")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "warren cluster join-token "+tt.role) {
				t.Fatalf("join = %v, want a refusal containing %q that says to run `warren cluster join-token %s`", err, tt.wantErr, tt.role)
			}
		})
	}
}

// TestJoinServerLimits: a body over the limit is refused without being
// read whole; a client that connects and says nothing, or trickles its
// request, is dropped once its deadline passes.
func TestJoinServerLimits(t *testing.T) {
	old := joinTimeouts
	joinTimeouts.header, joinTimeouts.read = 300*time.Millisecond, time.Second
	t.Cleanup(func() { joinTimeouts = old })
	f := startJoinFixture(t, pki.RoleManager, nil)
	t.Run("oversized body", func(t *testing.T) {
		r, err := insecureClient().Post("https://"+f.addr+joinPath, "application/x-protobuf", bytes.NewReader(make([]byte, joinBodyLimit+1)))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", r.StatusCode)
		}
	})

	// dropped reads from c until the server closes it, and says how long
	// that took; a read timeout means the server still holds it.
	dropped := func(t *testing.T, c net.Conn, start time.Time) time.Duration {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(6 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the join endpoint still holds the connection after %v", time.Since(start).Round(time.Millisecond))
		}
		return time.Since(start)
	}
	t.Run("silent client", func(t *testing.T) {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dropped(t, c, time.Now())
	})
	t.Run("trickled body", func(t *testing.T) {
		tc, err := tls.Dial("tcp", f.addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a hostile client
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		start := time.Now()
		if _, err := io.WriteString(tc, "POST "+joinPath+" HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		defer close(stop)
		go func() { // a byte every 100 ms: never done, never idle
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					if _, err := tc.Write([]byte("x")); err != nil {
						return
					}
				}
			}
		}()
		if d := dropped(t, tc, start); d < joinTimeouts.read/2 {
			t.Errorf("dropped after %v, before the read deadline of %v", d, joinTimeouts.read)
		}
	})
}

// TestJoinLimiter: the token bucket per address, step by step.
func TestJoinLimiter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	l := newJoinLimiter(3, time.Second)
	steps := []struct {
		ip        string
		at        time.Duration
		ok, first bool
	}{
		{"a", 0, true, false},
		{"a", 0, true, false},
		{"a", 0, true, false},
		{"a", 0, false, true}, // burst spent: refused, logged
		{"a", 0, false, false},
		{"b", 0, true, false},                                      // another address has its own bucket
		{"a", time.Second, true, false},                            // one token back after an interval
		{"a", time.Second, false, true},                            // and no more
		{"a", 10 * time.Second, true, false},                       // refilled, capped at the burst
		{"a", 10 * time.Second, true, false},                       //
		{"a", 10 * time.Second, true, false},                       //
		{"a", 10 * time.Second, false, true},                       //
		{"a", 10*time.Second + 500*time.Millisecond, false, false}, // half a token is none
	}
	for i, s := range steps {
		ok, first := l.allow(s.ip, t0.Add(s.at))
		if ok != s.ok || first != s.first {
			t.Fatalf("step %d (%s at +%v): allow = %v, first refusal = %v; want %v, %v", i, s.ip, s.at, ok, first, s.ok, s.first)
		}
	}
	// A flood of addresses fills the table; addresses whose buckets
	// refilled make room again.
	full := newJoinLimiter(1, time.Second)
	for i := range maxBuckets {
		full.allow(string(rune(i+0x1000)), t0)
	}
	if ok, _ := full.allow("new", t0); ok {
		t.Fatal("a full table took one more address")
	}
	if ok, _ := full.allow("new", t0.Add(time.Minute)); !ok {
		t.Fatal("a full table of refilled buckets was not swept")
	}
}
