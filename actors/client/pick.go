package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/warrenorch/warren/store/pki"
)

// Choosing a manager. A TCP connect proves little: the kernel of a host
// that is going down, or of one whose warren hangs, still completes TCP
// handshakes on 4280, and a request sent there waits on protoactor's
// endpoint writer, which retries a failed connection five times, two
// seconds apart, before the request becomes a dead letter and the client
// tries the next manager: ~10 s (issue 10's "first command after the
// leader's host lost power took 10.2 s"). So the probe is the cluster's
// mutual-TLS handshake, which only a running warren with a certificate of
// this cluster completes, under a short deadline; and the managers are
// probed staggered in config order (as happy eyeballs does, RFC 8305), so
// a first manager that is dead or silent costs probeStagger, not
// probeTimeout, and never the writer's retries.
const (
	// probeTimeout bounds one manager's TCP and TLS handshakes; a live
	// manager answers in milliseconds.
	probeTimeout = time.Second
	// probeStagger is how long a probe has alone before the next manager
	// is probed too; a probe that fails starts the next at once.
	probeStagger = 150 * time.Millisecond
)

// picked is the manager a client talks to.
type picked struct {
	index int    // in the managers list
	local string // the local IP of the route to it (what the probe left from)
}

// pickManager probes managers, staggered in order, and returns the first
// that completes the cluster's TLS handshake as a manager. skip, if not
// negative, is an index not to probe (the manager that just failed).
func pickManager(managers []string, skip int, tlsCfg *tls.Config, log *zap.Logger) (picked, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // the slower probes still under way are abandoned
	type result struct {
		i     int
		local string
		took  time.Duration
		err   error
	}
	results := make(chan result, len(managers))
	order := make([]int, 0, len(managers))
	for k := range managers {
		if i := (skip + 1 + k) % len(managers); i != skip {
			order = append(order, i)
		}
	}
	next, pending := 0, 0
	launch := func() {
		i := order[next]
		next++
		pending++
		go func() {
			t0 := time.Now()
			local, err := probe(ctx, managers[i], tlsCfg)
			results <- result{i: i, local: local, took: time.Since(t0), err: err}
		}()
	}
	errs := make([]error, len(managers))
	if len(order) > 0 {
		launch()
	}
	for pending > 0 {
		var stagger <-chan time.Time
		if next < len(order) {
			stagger = time.After(probeStagger)
		}
		select {
		case r := <-results:
			pending--
			log.Debug("probe manager", zap.String("manager", managers[r.i]), zap.Duration("took", r.took), zap.Error(r.err))
			if r.err == nil {
				return picked{index: r.i, local: r.local}, nil
			}
			errs[r.i] = fmt.Errorf("%s: %w", managers[r.i], r.err)
			if next < len(order) {
				launch()
			}
		case <-stagger:
			launch()
		}
	}
	return picked{}, errors.Join(errs...)
}

// probe completes the cluster's mutual-TLS handshake with addr and checks
// that the peer is a manager; it returns the local IP the connection left
// from.
func probe(ctx context.Context, addr string, tlsCfg *tls.Config) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: tlsCfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("no TLS handshake within %s (host down, or warren hung)", probeTimeout)
		}
		return "", err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("presented no certificate")
	}
	peer, err := pki.PeerOf(certs[0])
	if err != nil {
		return "", err
	}
	if peer.Role != pki.RoleManager {
		return "", fmt.Errorf("node %s there is a %s now, not a manager", peer.Name, peer.Role)
	}
	return conn.LocalAddr().(*net.TCPAddr).IP.String(), nil
}
