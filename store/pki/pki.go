// Package pki owns Warren's cluster certificate authority: the root CA, the
// intermediate CA each manager signs with, node and admin certificates whose
// organizational unit carries the role (manager, worker, admin), loading and
// saving them as PEM (durably, mode 0600), and the mutual-TLS configurations
// every connection uses. Identity is the leaf certificate: common name =
// node id (or "admin"), OU = role.
//
// Trust: every node trusts the root certificate (ca.pem) only. The root key
// (ca-key.pem) stays on the manager that created the cluster and signs
// intermediates only; every manager has its own intermediate (signer.pem,
// signer-key.pem), whose key it generated itself, and signs leaves with it.
// No private key ever crosses the network: a joining or promoted manager
// sends a certificate request for its intermediate, like any node for its
// leaf. Leaves are stored and presented with their chain (leaf first, then
// the intermediates up to the root, root excluded).
package pki

import (
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
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Roles carried in a certificate's OU.
const (
	RoleManager = "manager"
	RoleWorker  = "worker"
	RoleAdmin   = "admin"
)

// Organization every Warren certificate carries.
const Organization = "warren"

// CA signs certificates: the cluster root CA, or a manager's intermediate.
type CA struct {
	Cert *x509.Certificate // the certificate this CA signs with
	Key  *ecdsa.PrivateKey // its key; never leaves the node
	PEM  []byte            // the cluster root certificate (ca.pem): the trust anchor
	// Chain is Cert and the intermediates between it and the root, PEM,
	// Cert first; empty when Cert is the root. Everything this CA signs is
	// handed out with it, so a peer can build the path to the root.
	Chain []byte
	// Root, on the manager that holds the root key, signs intermediates so
	// they hang right under the root; nil elsewhere.
	Root *CA
	root *x509.Certificate // parsed PEM
}

// IsRoot reports whether ca is the cluster root itself.
func (ca *CA) IsRoot() bool { return len(ca.Chain) == 0 }

// Identity is a certificate with its key, ready for TLS.
type Identity struct {
	CertPEM []byte
	KeyPEM  []byte
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a CA for cluster id, valid for 10 years.
func NewCA(clusterID string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "warren-ca-" + clusterID, Organization: []string{Organization}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), root: cert}, nil
}

// Fingerprint is the sha256 of the cluster root certificate, hex, as join
// tokens carry it (also for an intermediate: the cluster is its root).
func (ca *CA) Fingerprint() string {
	if ca.root == nil {
		if c, err := ParseCert(ca.PEM); err == nil {
			ca.root = c
		} else {
			ca.root = ca.Cert
		}
	}
	return Fingerprint(ca.root)
}

// Fingerprint of any certificate.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Issue signs a certificate for name with role, valid as TLS server and
// client; CertPEM holds it and then ca's chain. ips and dnsNames are
// informational SANs: peers verify the chain and the role, not the
// address, because a node or CLI reaches a manager by whatever address its
// network gives it (a NAT, an `ssh -L` tunnel).
func (ca *CA) Issue(name, role string, ips []net.IP, dnsNames []string, validity time.Duration) (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", name, err)
	}
	certPEM, err := ca.sign(&key.PublicKey, name, role, ips, dnsNames, validity)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Identity{
		CertPEM: certPEM,
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}, nil
}

// Save writes the root CA certificate and key (0600) into dir as ca.pem,
// ca-key.pem. The key must be new: an existing ca-key.pem (another
// cluster's root) is never replaced.
func (ca *CA) Save(dir string) error {
	if !ca.IsRoot() {
		return errors.New("save CA: an intermediate is saved with SaveSigner")
	}
	kb, err := marshalKey(ca.Key)
	if err != nil {
		return err
	}
	if err := WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM); err != nil {
		return err
	}
	return CreateFile(filepath.Join(dir, "ca-key.pem"), kb)
}

func marshalKey(k *ecdsa.PrivateKey) ([]byte, error) {
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// LoadCA reads what Save wrote.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	return CAFromPEM(certPEM, keyPEM)
}

// Save writes the identity as <prefix>.pem and <prefix>-key.pem (0600),
// replacing what is there (a role change replaces the node's pair).
func (id *Identity) Save(dir, prefix string) error {
	if err := WriteFile(filepath.Join(dir, prefix+".pem"), id.CertPEM); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, prefix+"-key.pem"), id.KeyPEM)
}

// SaveNew is Save for a pair that must be new (a node's first): an
// existing key file is an error, not overwritten.
func (id *Identity) SaveNew(dir, prefix string) error {
	if err := CreateFile(filepath.Join(dir, prefix+"-key.pem"), id.KeyPEM); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, prefix+".pem"), id.CertPEM)
}

// LoadIdentity reads what Identity.Save wrote.
func LoadIdentity(dir, prefix string) (*Identity, error) {
	c, err := os.ReadFile(filepath.Join(dir, prefix+".pem"))
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	k, err := os.ReadFile(filepath.Join(dir, prefix+"-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	return &Identity{CertPEM: c, KeyPEM: k}, nil
}

// ParseCert decodes the first PEM certificate.
func ParseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate found")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// Peer is who is at the other end of a verified connection.
type Peer struct {
	Name string // node id or "admin"
	Role string // manager, worker, admin
}

// PeerOf reads the identity of a verified certificate.
func PeerOf(c *x509.Certificate) (Peer, error) {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return Peer{}, fmt.Errorf("certificate %q carries no Warren role", c.Subject.CommonName)
	}
	switch r := c.Subject.OrganizationalUnit[0]; r {
	case RoleManager, RoleWorker, RoleAdmin:
		return Peer{Name: c.Subject.CommonName, Role: r}, nil
	default:
		return Peer{}, fmt.Errorf("certificate %q has unknown role %q", c.Subject.CommonName, r)
	}
}

// TLSConfig returns the mutual-TLS configuration for both directions: as a
// server it requires a client certificate from the cluster CA; as a client it
// verifies the server's chain against the same CA and its Warren role.
func TLSConfig(caPEM []byte, id *Identity) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("cluster CA certificate is not valid PEM: the credentials are damaged; copy them again from the manager's data dir")
	}
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("peer presented no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, r := range raw[1:] {
			if c, err := x509.ParseCertificate(r); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("peer certificate is not from this cluster's CA: %w", err)
		}
		_, err = PeerOf(leaf)
		return err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		RootCAs:      pool,
		// The chain is verified in VerifyPeerCertificate; host names are not,
		// since identity is the certificate's name and role, not its address.
		InsecureSkipVerify:    true, //nolint:gosec // verified above
		VerifyPeerCertificate: verify,
	}, nil
}

// sign issues a certificate for pub with name and role, valid as TLS server
// and client: the one place Warren's leaf certificates are shaped. It
// returns the certificate followed by ca's chain.
func (ca *CA) sign(pub any, name, role string, ips []net.IP, dnsNames []string, validity time.Duration) ([]byte, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{role}, Organization: []string{Organization}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter(ca.Cert, validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.Chain...), nil
}

// notAfter is now+validity, but never past the issuer's own expiry: a
// certificate outliving its issuer would stop verifying early anyway.
func notAfter(issuer *x509.Certificate, validity time.Duration) time.Time {
	t := time.Now().Add(validity)
	if t.After(issuer.NotAfter) {
		return issuer.NotAfter
	}
	return t
}
