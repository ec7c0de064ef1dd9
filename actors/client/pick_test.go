package client

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// creds is one cluster's CA and the TLS configurations of its roles.
type creds struct {
	manager, worker, admin *tls.Config
	other                  *tls.Config // a manager of another cluster
}

func newCreds(t *testing.T) creds {
	t.Helper()
	conf := func(ca *pki.CA, name, role string) *tls.Config {
		id, err := ca.Issue(name, role, nil, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := pki.TLSConfig(ca.PEM, id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, err := pki.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("c2")
	if err != nil {
		t.Fatal(err)
	}
	return creds{
		manager: conf(ca, "m1", pki.RoleManager),
		worker:  conf(ca, "w1", pki.RoleWorker),
		admin:   conf(ca, "admin", pki.RoleAdmin),
		other:   conf(other, "m9", pki.RoleManager),
	}
}

// listen starts a loopback listener of one kind and returns its address:
//   - "refused": nothing listens there (a powered-off host whose network is up);
//   - "silent": TCP handshakes complete but nothing ever answers (a host going
//     down, or a hung warren: the kernel still accepts);
//   - "tls:<conf>": a TLS server with that configuration (a live node).
func listen(t *testing.T, kind string, conf *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if kind == "refused" {
		ln.Close()
		return addr
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if kind == "tls" {
				go func() { _ = tls.Server(c, conf).Handshake() }()
			}
		}
	}()
	return addr
}

func TestPickManager(t *testing.T) {
	cr := newCreds(t)
	type peer struct {
		kind string
		conf *tls.Config
	}
	var (
		refused = peer{kind: "refused"}
		silent  = peer{kind: "silent"}
		mgr     = peer{kind: "tls", conf: cr.manager}
		worker  = peer{kind: "tls", conf: cr.worker}
		foreign = peer{kind: "tls", conf: cr.other}
	)
	rows := []struct {
		name  string
		peers []peer
		skip  int
		want  int // index picked; -1: an error
		// fast: the pick must not wait out a silent manager's probe
		// timeout (it costs the stagger).
		fast bool
	}{
		{name: "the first manager", peers: []peer{mgr, mgr}, skip: -1, want: 0},
		{name: "a refused one is skipped", peers: []peer{refused, mgr}, skip: -1, want: 1},
		{name: "a silent one costs the stagger", peers: []peer{silent, mgr}, skip: -1, want: 1, fast: true},
		{name: "two silent ones", peers: []peer{silent, silent, mgr}, skip: -1, want: 2, fast: true},
		{name: "a worker is not a manager", peers: []peer{worker, mgr}, skip: -1, want: 1},
		{name: "another cluster's manager", peers: []peer{foreign, mgr}, skip: -1, want: 1},
		{name: "skip the one that failed", peers: []peer{mgr, refused, mgr}, skip: 0, want: 2},
		{name: "skip wraps around", peers: []peer{mgr, refused, mgr}, skip: 2, want: 0},
		{name: "none answers", peers: []peer{refused, silent}, skip: -1, want: -1},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			var addrs []string
			for _, p := range r.peers {
				addrs = append(addrs, listen(t, p.kind, p.conf))
			}
			t0 := time.Now()
			got, err := pickManager(addrs, r.skip, cr.admin, zap.NewNop())
			took := time.Since(t0)
			switch {
			case r.want < 0 && err == nil:
				t.Fatalf("picked %d (%s), want an error", got.index, addrs[got.index])
			case r.want >= 0 && err != nil:
				t.Fatalf("error %v, want %d", err, r.want)
			case r.want >= 0 && got.index != r.want:
				t.Fatalf("picked %d, want %d", got.index, r.want)
			case r.want >= 0 && got.local != "127.0.0.1":
				t.Fatalf("local address %q, want 127.0.0.1", got.local)
			}
			if r.fast && took >= probeTimeout {
				t.Fatalf("took %s: waited out the silent manager", took)
			}
		})
	}
}

// api answers ClusterInfoRequest as a manager's api actor would.
type api struct{}

func (api) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*messages.ClusterInfoRequest); ok {
		ctx.Respond(&messages.ClusterInfoReply{NodeId: "m1"})
	}
}

// TestRequestAfterSilentManager is issue 10's failover as the user saw it,
// on the client alone: the first manager of the config accepts TCP but no
// longer answers (its host is going down). The request must be answered by
// the live manager within the client's timeout (3 s here); before the
// probe was a TLS handshake, the client picked the silent one and the
// request waited on protoactor's reconnect retries until it timed out.
func TestRequestAfterSilentManager(t *testing.T) {
	cr := newCreds(t)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	r, addr, err := remoting.Start(sys, remoting.Config{Host: "127.0.0.1", Port: 0, TLS: cr.manager})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown(false)
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return api{} }), remoting.ActorAPI); err != nil {
		t.Fatal(err)
	}
	for _, first := range []string{"refused", "silent"} {
		t.Run(first, func(t *testing.T) {
			t0 := time.Now()
			c, err := DialTLS([]string{listen(t, first, nil), addr}, cr.admin, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			info, err := c.ClusterInfo()
			if err != nil {
				t.Fatalf("after %s: %v", time.Since(t0), err)
			}
			if info.NodeId != "m1" || c.Manager() != addr {
				t.Fatalf("answered by %q through %s, want m1 through %s", info.NodeId, c.Manager(), addr)
			}
		})
	}
}
