package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// TokenPrefix starts every join token: WRN-1-<CA fingerprint>-<secret>.
// The fingerprint lets a joining node trust the manager it has never met;
// the secret (different for workers and managers) proves it was invited.
const TokenPrefix = "WRN-1-"

// NewSecret returns a random join-token secret.
func NewSecret() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Token builds a join token from the CA fingerprint and a secret.
func Token(fingerprint, secret string) string { return TokenPrefix + fingerprint + "-" + secret }

// ParseToken splits a token into the CA fingerprint and the secret.
func ParseToken(tok string) (fingerprint, secret string, err error) {
	bad := fmt.Errorf("invalid join token: expected %s<64 hex>-<32 hex> as printed by `warren cluster join-token`", TokenPrefix)
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), TokenPrefix)
	if !ok {
		return "", "", bad
	}
	fingerprint, secret, ok = strings.Cut(rest, "-")
	if !ok || len(fingerprint) != 64 || len(secret) != 32 {
		return "", "", bad
	}
	if _, err := hex.DecodeString(fingerprint + secret); err != nil {
		return "", "", bad
	}
	return fingerprint, secret, nil
}

// SecretMatches compares secrets in constant time.
func SecretMatches(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// NewCSR makes a key pair on the node (the private key never leaves it) and
// a certificate request for it.
func NewCSR(name string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// SignCSR issues a certificate for the key in csrPEM with the given name and
// role, followed by ca's chain; the name and role come from the CA's
// decision, not from the request.
func (ca *CA) SignCSR(csrPEM []byte, name, role string, ips []net.IP, validity time.Duration) ([]byte, error) {
	pub, err := csrKey(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.sign(pub, name, role, ips, nil, validity)
}

// csrKey returns the public key of a PEM certificate request whose
// signature proves the requester holds the private key.
func csrKey(csrPEM []byte) (any, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request found")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr.PublicKey, nil
}

// CAFromPEM rebuilds a CA from its certificate and key.
func CAFromPEM(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key holds no PEM block")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not belong to the CA certificate: the data dir is damaged")
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM, root: cert}, nil
}
