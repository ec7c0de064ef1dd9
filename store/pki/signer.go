package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// NodeValidity is how long a node certificate is valid.
const NodeValidity = 5 * 365 * 24 * time.Hour

// SignNode signs what a node asks for when it joins or its role changes:
// its certificate (csrPEM) for role, and for a manager its own
// intermediate CA (signerCSRPEM), whose key it generated and keeps. Only
// certificates come back; no private key is ever part of the answer. A
// worker's intermediate request is ignored.
func (ca *CA) SignNode(nodeID, role string, ips []net.IP, csrPEM, signerCSRPEM []byte) (certPEM, signerPEM []byte, err error) {
	if role == RoleManager {
		if len(signerCSRPEM) == 0 {
			return nil, nil, errors.New("a manager needs its own signing CA, and the request carried no certificate request for one: run the same warren version on this node as on the managers")
		}
		if signerPEM, err = ca.SignIntermediate(signerCSRPEM, nodeID); err != nil {
			return nil, nil, err
		}
	}
	if certPEM, err = ca.SignCSR(csrPEM, nodeID, role, ips, NodeValidity); err != nil {
		return nil, nil, err
	}
	return certPEM, signerPEM, nil
}

// IntermediatePathLen is the path length of an intermediate the root
// signs; each intermediate an intermediate signs gets one less, and one at
// 0 signs leaves only. A chain grows by one when a manager joins (or is
// promoted) through a manager that does not hold the root key. Raft
// clusters run at most 7 managers, so 6 lets every manager of the largest
// cluster join through the one before it; each level costs ~500 bytes on
// every TLS handshake and one signature check, so 7 intermediates stay
// under 4 KB. A manager whose budget is spent refuses to sign
// intermediates with ErrPathExhausted, and the joiner tries another.
const IntermediatePathLen = 6

// File names in a node's cert dir.
const (
	RootCertFile   = "ca.pem"
	RootKeyFile    = "ca-key.pem" // only on the manager that created the cluster
	SignerCertFile = "signer.pem" // a manager's intermediate and the chain above it
	SignerKeyFile  = "signer-key.pem"
)

// ErrPathExhausted: this manager's intermediate may sign leaves only.
var ErrPathExhausted = errors.New("this manager's signing CA is at the end of its chain and signs no manager certificates: join or promote through another manager (the one that created the cluster signs from the root)")

// SignIntermediate issues an intermediate CA certificate for the key in
// csrPEM, for manager nodeID, and returns it followed by the chain above
// it. The root signs it when this node holds the root key; else ca does.
func (ca *CA) SignIntermediate(csrPEM []byte, nodeID string) ([]byte, error) {
	pub, err := csrKey(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.signIntermediate(pub, nodeID)
}

func (ca *CA) signIntermediate(pub any, nodeID string) ([]byte, error) {
	s := ca
	if ca.Root != nil {
		s = ca.Root
	}
	pathLen := IntermediatePathLen
	if !s.IsRoot() {
		if s.Cert.MaxPathLen <= 0 {
			return nil, ErrPathExhausted
		}
		pathLen = s.Cert.MaxPathLen - 1
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		// No OU: an intermediate presented as a leaf carries no role, and
		// PeerOf refuses it.
		Subject:               pkix.Name{CommonName: "warren-manager-ca-" + nodeID, Organization: []string{Organization}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              s.Cert.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.Cert, pub, s.Key)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate CA for %s: %w", nodeID, err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), s.Chain...), nil
}

// NewIntermediate makes a signer for manager nodeID under ca, all on this
// node: a fresh key and an intermediate certificate for it.
func (ca *CA) NewIntermediate(nodeID string) (*CA, error) {
	keyPEM, csrPEM, err := NewCSR("warren-manager-ca-" + nodeID)
	if err != nil {
		return nil, err
	}
	chain, err := ca.SignIntermediate(csrPEM, nodeID)
	if err != nil {
		return nil, err
	}
	s, err := SignerFromPEM(ca.PEM, chain, keyPEM)
	if err != nil {
		return nil, err
	}
	if ca.IsRoot() {
		s.Root = ca
	} else {
		s.Root = ca.Root
	}
	return s, nil
}

// SignerFromPEM rebuilds a manager's intermediate from the root
// certificate, the intermediate's chain (itself first) and its key, and
// checks that the chain leads to the root and the key is the certificate's.
func SignerFromPEM(rootPEM, chainPEM, keyPEM []byte) (*CA, error) {
	root, err := ParseCert(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster root certificate: %w", err)
	}
	certs, err := ParseChain(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("signing CA chain: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("signing certificate %q is not a CA", cert.Subject.CommonName)
	}
	if _, err := VerifyChain(root, certs, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("signing CA %q is not from this cluster's root: %w", cert.Subject.CommonName, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("signing key holds no PEM block")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse signing key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("signing key does not belong to the signing certificate")
	}
	return &CA{Cert: cert, Key: key, PEM: rootPEM, Chain: chainPEM, root: root}, nil
}

// SaveSigner writes an intermediate into dir as signer.pem and
// signer-key.pem (0600). The key must be new: an existing signer-key.pem
// is an error, never replaced.
func (ca *CA) SaveSigner(dir string) error {
	if ca.IsRoot() {
		return errors.New("save signer: the root is saved with Save")
	}
	kb, err := marshalKey(ca.Key)
	if err != nil {
		return err
	}
	if err := CreateFile(filepath.Join(dir, SignerKeyFile), kb); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, SignerCertFile), ca.Chain)
}

// RemoveSigner deletes the intermediate and the root key from dir: a node
// that is no longer a manager signs nothing.
func RemoveSigner(dir string) error {
	for _, f := range []string{SignerKeyFile, SignerCertFile, RootKeyFile} {
		if err := RemoveFile(filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	return nil
}

// LoadSigner reads what the manager nodeID signs with from its cert dir:
// its intermediate, and the root when this node holds the root key. A
// manager from before intermediates holds only the root key: it gets its
// intermediate here, made and signed locally, so the upgrade needs nothing
// from the network.
func LoadSigner(dir, nodeID string) (*CA, error) {
	rootPEM, err := os.ReadFile(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	var root *CA
	if keyPEM, err := os.ReadFile(filepath.Join(dir, RootKeyFile)); err == nil {
		if root, err = CAFromPEM(rootPEM, keyPEM); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	chain, cerr := os.ReadFile(filepath.Join(dir, SignerCertFile))
	key, kerr := os.ReadFile(filepath.Join(dir, SignerKeyFile))
	switch {
	case cerr == nil && kerr == nil:
		s, err := SignerFromPEM(rootPEM, chain, key)
		if err != nil {
			return nil, err
		}
		s.Root = root
		return s, nil
	case cerr != nil && !errors.Is(cerr, os.ErrNotExist):
		return nil, fmt.Errorf("read signing CA: %w", cerr)
	case kerr != nil && !errors.Is(kerr, os.ErrNotExist):
		return nil, fmt.Errorf("read signing key: %w", kerr)
	case root == nil:
		return nil, fmt.Errorf("no signing CA (%s, %s) in %s: this manager cannot sign certificates; demote it and promote it again to get one", SignerCertFile, SignerKeyFile, dir)
	}
	// Holding the root and no complete intermediate: an upgrade, or a
	// first start cut short before both files were written.
	if err := RemoveFile(filepath.Join(dir, SignerKeyFile)); err != nil {
		return nil, err
	}
	s, err := root.NewIntermediate(nodeID)
	if err != nil {
		return nil, err
	}
	if err := s.SaveSigner(dir); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadRootCert reads the cluster root certificate from a cert dir.
func LoadRootCert(dir string) (*x509.Certificate, error) {
	p, err := os.ReadFile(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	return ParseCert(p)
}

// VerifyChain verifies certs (the leaf first, then the intermediates that
// may have signed it) against root alone, for usage, and returns the leaf.
func VerifyChain(root *x509.Certificate, certs []*x509.Certificate, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate to verify")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParseChain decodes every PEM certificate in p, in order.
func ParseChain(p []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := p; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}
