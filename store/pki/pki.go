// Package pki owns Warren's cluster certificate authority: creating the CA,
// issuing node and admin certificates whose organizational unit carries the
// role (manager, worker, admin), loading and saving them as PEM, and the
// mutual-TLS configurations every connection uses. Identity is the
// certificate: common name = node id (or "admin"), OU = role.
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

// CA is a cluster certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

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
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Fingerprint is the sha256 of the CA certificate, hex, as join tokens carry it.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint of any certificate.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Issue signs a certificate for name with role, valid as TLS server and
// client. ips and dnsNames are informational SANs: peers verify the chain
// and the role, not the address, because a CLI's reply endpoint listens on
// whatever address its route to the manager has.
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

// Save writes the CA certificate and key (0600) into dir as ca.pem, ca-key.pem.
func (ca *CA) Save(dir string) error {
	kb, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
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

// Save writes the identity as <prefix>.pem and <prefix>-key.pem (0600).
func (id *Identity) Save(dir, prefix string) error {
	if err := WriteFile(filepath.Join(dir, prefix+".pem"), id.CertPEM); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, prefix+"-key.pem"), id.KeyPEM)
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

// WriteFile writes data with mode 0600 atomically (temp file + rename), so
// a crash never leaves half a key behind.
func WriteFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
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
// and client: the one place Warren's leaf certificates are shaped.
func (ca *CA) sign(pub any, name, role string, ips []net.IP, dnsNames []string, validity time.Duration) ([]byte, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{role}, Organization: []string{Organization}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
