package store

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/warrenorch/warren/store/pki"
)

// TestRaftHandshakeDeadline: a peer that opens a TCP connection to the raft
// port and sends nothing is dropped once the handshake deadline passes,
// instead of holding a goroutine and a socket for ever.
func TestRaftHandshakeDeadline(t *testing.T) {
	old := handshakeTimeout
	handshakeTimeout = 300 * time.Millisecond
	t.Cleanup(func() { handshakeTimeout = old })
	dir := t.TempDir()
	addr := freePort(t)
	s := openTest(t, dir, addr)
	defer s.Close()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a silent client still holds its raft connection after %v", time.Since(start).Round(time.Millisecond))
	}
	if err == nil {
		t.Fatal("the raft port sent data to a client that never started a handshake")
	}
	if d := time.Since(start); d < handshakeTimeout/2 {
		t.Errorf("dropped after %v, before the handshake deadline of %v", d, handshakeTimeout)
	}

	// The store still serves: one silent client did not block the accept
	// loop or the leader.
	if res, err := s.Apply(createSvc("after-silent", "after-silent"), 5*time.Second); err != nil || res.Error != nil {
		t.Fatalf("apply after a silent client: %v %v", err, res.GetError())
	}
}

// TestRaftDialDeadline: dialling a raft peer that accepts TCP but never
// answers the handshake fails within the deadline.
func TestRaftDialDeadline(t *testing.T) {
	old := handshakeTimeout
	handshakeTimeout = 300 * time.Millisecond
	t.Cleanup(func() { handshakeTimeout = old })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and stays silent
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	layer, err := newTLSStreamLayer("127.0.0.1:0", "127.0.0.1:1", testTLS(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()
	start := time.Now()
	if _, err := layer.Dial(raft.ServerAddress(ln.Addr().String()), time.Minute); err == nil {
		t.Fatal("handshake with a silent peer succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("dial to a silent peer took %v; the handshake deadline is %v", d, handshakeTimeout)
	}
}

// TestRaftIntermediateLeaves: raft's TLS layer accepts managers whose
// certificates an intermediate signed (presented with the chain), and still
// refuses workers and other clusters.
func TestRaftIntermediateLeaves(t *testing.T) {
	root, err := pki.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	m1, err := root.NewIntermediate("m1")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := m1.NewIntermediate("m2")
	if err != nil {
		t.Fatal(err)
	}
	m2.Root = nil
	m3, err := m2.NewIntermediate("m3") // two levels under the root
	if err != nil {
		t.Fatal(err)
	}
	otherRoot, err := pki.NewCA("c2")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherRoot.NewIntermediate("x")
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(ca *pki.CA, name, role string) *tls.Config {
		id, err := ca.Issue(name, role, nil, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := pki.TLSConfig(root.PEM, id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server, err := newTLSStreamLayer("127.0.0.1:0", "127.0.0.1:1", cfg(m1, "m1", pki.RoleManager))
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go func() {
		for {
			c, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	tests := []struct {
		name    string
		client  *tls.Config
		wantErr string
	}{
		{"manager of a root-signed intermediate", cfg(m1, "m9", pki.RoleManager), ""},
		{"manager two intermediates down", cfg(m3, "m8", pki.RoleManager), ""},
		{"worker of an intermediate", cfg(m3, "w1", pki.RoleWorker), "bad certificate"},
		{"manager of another cluster's intermediate", cfg(foreign, "m7", pki.RoleManager), "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := newTLSStreamLayer("127.0.0.1:0", "127.0.0.1:1", tt.client)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			c, err := client.Dial(raft.ServerAddress(server.ln.Addr().String()), 5*time.Second)
			if err == nil {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err = c.Write([]byte("ping")); err == nil {
					buf := make([]byte, 4)
					if _, err = io.ReadFull(c, buf); err == nil && string(buf) != "ping" {
						err = errors.New("echo " + string(buf))
					}
				}
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("raft connection refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatal("raft connection accepted")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
