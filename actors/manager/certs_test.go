package manager

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// startSigningManager is a real manager (raft on disk, the actor tree,
// mTLS remoting) signing as managers do: with its own intermediate, under
// a root whose key it holds, like the manager that ran `cluster init`.
// Peers get leaves of that intermediate, presented with their chain.
func startSigningManager(t *testing.T) (*cluster, *pki.CA) {
	t.Helper()
	root, err := pki.NewCA("certs")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := root.NewIntermediate("mgr-1")
	if err != nil {
		t.Fatal(err)
	}
	return startManagerWith(t, root, signer), root
}

// verifyChain parses a PEM chain (leaf first) and verifies it against root
// alone, for the given usage.
func verifyChain(t *testing.T, root *pki.CA, chain []byte, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	certs, err := pki.ParseChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) < 2 {
		t.Fatalf("chain holds %d certificates: a leaf without the intermediate that signed it", len(certs))
	}
	leaf, err := pki.VerifyChain(root.Cert, certs, usage)
	if err != nil {
		t.Fatalf("chain does not verify against the cluster root: %v", err)
	}
	return leaf
}

// TestCertificateRequestNeverYieldsAKey: every answer to a
// CertificateRequest, for every role, over real mTLS remoting from the
// node's own certificate, carries certificates only. A node the admin
// promoted gets a manager certificate and its own intermediate CA for the
// key it made, both chaining to the root; never the root key (b7bdeb6 sent
// it in ca_key_pem). The role is the state's, not the asker's.
func TestCertificateRequestNeverYieldsAKey(t *testing.T) {
	c, root := startSigningManager(t)
	c.register(t, "wrk-1")
	c.register(t, "wrk-2")
	if r := c.local(t, NameAPI, &messages.PromoteNodeRequest{Node: "wrk-2"}).(*messages.NodeReply); r.Error != nil {
		t.Fatalf("promote wrk-2: %v", r.Error)
	}
	waitFor(t, "wrk-2 is a manager in the state", func() bool {
		return c.st.State.Node("wrk-2").GetSpec().GetRole() == messages.NodeRole_NODE_ROLE_MANAGER
	})
	// The peers hold the certificates they joined with: workers'.
	wrk1 := c.peer(t, "wrk-1", pki.RoleWorker)
	wrk2 := c.peer(t, "wrk-2", pki.RoleWorker)

	tests := []struct {
		name       string
		from       *peer
		req        *messages.CertificateRequest
		wantRole   messages.NodeRole
		wantSigner bool
		wantErr    string
	}{
		{name: "worker, with a CA request it has no right to", from: wrk1,
			req:      &messages.CertificateRequest{NodeId: "wrk-1", CsrPem: csr(t, "wrk-1"), SignerCsrPem: csr(t, "ca")},
			wantRole: messages.NodeRole_NODE_ROLE_WORKER},
		{name: "worker", from: wrk1, req: &messages.CertificateRequest{NodeId: "wrk-1", CsrPem: csr(t, "wrk-1")},
			wantRole: messages.NodeRole_NODE_ROLE_WORKER},
		{name: "promoted manager", from: wrk2,
			req:      &messages.CertificateRequest{NodeId: "wrk-2", CsrPem: csr(t, "wrk-2"), SignerCsrPem: csr(t, "ca")},
			wantRole: messages.NodeRole_NODE_ROLE_MANAGER, wantSigner: true},
		{name: "promoted manager without a CA request", from: wrk2, req: &messages.CertificateRequest{NodeId: "wrk-2", CsrPem: csr(t, "wrk-2")},
			wantErr: "needs its own signing CA"},
		{name: "worker asks for the manager's", from: wrk1,
			req:     &messages.CertificateRequest{NodeId: "wrk-2", CsrPem: csr(t, "wrk-2"), SignerCsrPem: csr(t, "ca")},
			wantErr: "may not ask"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.from.ask(NameAPI, tt.req, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			r, ok := res.(*messages.CertificateReply)
			if !ok {
				t.Fatalf("reply %T", res)
			}
			wire, err := proto.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(wire, []byte("PRIVATE KEY")) {
				t.Fatal("a certificate reply carries a private key")
			}
			if tt.wantErr != "" {
				if r.Error == nil || !strings.Contains(r.Error.Message, tt.wantErr) || len(r.CertPem) > 0 {
					t.Fatalf("reply = error %v, %d bytes of certificate; want the error %q and no certificate", r.Error, len(r.CertPem), tt.wantErr)
				}
				return
			}
			if r.Error != nil {
				t.Fatal(r.Error)
			}
			if r.Role != tt.wantRole {
				t.Fatalf("role = %v, want %v", r.Role, tt.wantRole)
			}
			if !bytes.Equal(r.CaPem, root.PEM) {
				t.Error("ca_pem is not the cluster root")
			}
			leaf := verifyChain(t, root, r.CertPem, x509.ExtKeyUsageClientAuth)
			p, err := pki.PeerOf(leaf)
			if err != nil || p.Name != tt.req.NodeId || p.Role != map[messages.NodeRole]string{messages.NodeRole_NODE_ROLE_WORKER: pki.RoleWorker, messages.NodeRole_NODE_ROLE_MANAGER: pki.RoleManager}[tt.wantRole] {
				t.Fatalf("leaf identity = %+v, %v", p, err)
			}
			if !tt.wantSigner {
				if len(r.SignerCertPem) > 0 {
					t.Fatal("a worker was issued a CA certificate")
				}
				return
			}
			inter := verifyChain(t, root, append(append([]byte{}, r.SignerCertPem...), c.ca.Chain...), x509.ExtKeyUsageAny)
			if !inter.IsCA || inter.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Fatal("the manager's signing certificate is not a CA")
			}
		})
	}
}
