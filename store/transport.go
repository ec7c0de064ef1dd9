package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/warrenorch/warren/store/pki"
)

// handshakeTimeout bounds a raft connection's TLS handshake, both ways: a
// peer that connects and sends nothing (or trickles) is dropped after it
// instead of holding a goroutine and a socket forever. A handshake is two
// round trips; 5 s is ample on any network raft can run over. A variable
// so tests can shorten it.
var handshakeTimeout = 5 * time.Second

// tlsStreamLayer is raft's StreamLayer over mutual TLS: a peer without a
// certificate from the cluster CA cannot open a raft connection.
type tlsStreamLayer struct {
	ln        net.Listener // plain TCP; Accept wraps each connection
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
	return &tlsStreamLayer{ln: ln, advertise: adv, cfg: managersOnly(cfg)}, nil
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

// Accept returns at once: raft's accept loop is one goroutine, so the
// handshake runs on the connection's first read or write (in raft's
// per-connection goroutine), bounded by handshakeTimeout.
func (t *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := t.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: tls.Server(c, t.cfg)}, nil
}

func (t *tlsStreamLayer) Close() error   { return t.ln.Close() }
func (t *tlsStreamLayer) Addr() net.Addr { return t.advertise }

// Dial connects and completes the handshake within timeout (raft's) and
// never more than handshakeTimeout.
func (t *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > handshakeTimeout {
		timeout = handshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: t.cfg}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft connection to %s: %w", address, err)
	}
	return c, nil
}

// serverConn is an accepted raft connection whose handshake runs, with a
// deadline, before its first read or write. HandshakeContext leaves the
// connection's own deadlines alone, so raft's are kept.
type serverConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *serverConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if c.err = c.Conn.HandshakeContext(ctx); c.err != nil {
			c.err = fmt.Errorf("raft connection from %s: TLS handshake: %w", c.RemoteAddr(), c.err)
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
