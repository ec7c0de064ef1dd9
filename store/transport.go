package store

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/warrenorch/warren/store/pki"
)

// tlsStreamLayer is raft's StreamLayer over mutual TLS: a peer without a
// certificate from the cluster CA cannot open a raft connection.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	cfg       *tls.Config
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

func newTLSStreamLayer(bind, advertise string, cfg *tls.Config) (*tlsStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w (is another warren running? pick another port with --raft-port)", bind, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address %q is not routable: give --advertise an address other nodes can reach", advertise)
	}
	return &tlsStreamLayer{ln: tls.NewListener(ln, managersOnly(cfg)), advertise: adv, cfg: managersOnly(cfg)}, nil
}

// managersOnly narrows a cluster TLS config to peers with the manager role:
// a worker's certificate is from the same CA but has no business in raft.
func managersOnly(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	verify := c.VerifyPeerCertificate
	c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if verify != nil {
			if err := verify(raw, chains); err != nil {
				return err
			}
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		p, err := pki.PeerOf(leaf)
		if err != nil {
			return err
		}
		if p.Role != pki.RoleManager {
			return fmt.Errorf("raft is for managers; %s %q was refused", p.Role, p.Name)
		}
		return nil
	}
	return c
}

func (t *tlsStreamLayer) Accept() (net.Conn, error) { return t.ln.Accept() }
func (t *tlsStreamLayer) Close() error              { return t.ln.Close() }
func (t *tlsStreamLayer) Addr() net.Addr            { return t.advertise }

func (t *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(address), t.cfg)
}
