// Package remoting owns how Warren's actor systems talk across processes:
// protoactor-go remote over gRPC with mutual TLS in both directions, and a
// gRPC stream interceptor that authorizes every incoming message by the
// certificate role of the connection it came on, the target actor and the
// message type (Rules), after checking everything protoactor's endpoint
// reader would index or dereference (guard), and stamps that identity into
// the message header, where actors read it (Identity).
//
// protoactor's remote has no client-only connection: a reply travels over a
// connection the receiver dials back to the sender's advertised address. So
// every node runs an endpoint and presents a cluster-CA certificate as both
// TLS server and TLS client. A client (the CLI) runs none: it opens one
// gateway stream to a manager's remoting port (gateway.go), which carries
// its requests, their replies and pushed events both ways.
package remoting

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/warrenorch/warren/store/pki"
)

// Header keys the interceptor writes; whatever a sender put there is replaced.
const (
	HeaderRole = "warren-role"
	HeaderName = "warren-name"
)

// Config starts an endpoint.
type Config struct {
	// Host and Port to listen on. Port 0 picks a free one; then the
	// advertised address is the listener's, so Host must be routable.
	Host string
	Port int
	// Advertise, if set, is the host:port peers dial back.
	Advertise string
	TLS       *tls.Config
	// Log receives refusals (who sent what that was refused, and why).
	Log *zap.Logger
	// ConnectAttempts bounds how often a writer tries to connect to a peer
	// before its messages become dead letters; protoactor sleeps 2 s after
	// each failed attempt. 0 keeps protoactor's 5. A CLI wants 1: it has
	// other managers to try.
	ConnectAttempts int
	// OnRefused, if set, is told of every message refused because the
	// peer's certificate role may not send its type to its target actor
	// (the manager's audit log records them). It runs on the connection's
	// goroutine, before the stream is cut: it must not block.
	OnRefused func(peer pki.Peer, target, typeName string)
}

// Start configures and starts remoting on system and returns the address
// peers reach it at.
func Start(system *actor.ActorSystem, cfg Config) (*remote.Remote, string, error) {
	// Bind first so a busy port is an error, not a panic inside remote.Start.
	if cfg.Port != 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, "", fmt.Errorf("listen for actor remoting on %s:%d: %w (is another warren running? pick another port with --port)", cfg.Host, cfg.Port, err)
		}
		l.Close()
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	g := &guard{system: system, log: log, onRefused: cfg.OnRefused}
	gw := &gateway{system: system, log: log, onRefused: cfg.OnRefused}
	creds := credentials.NewTLS(cfg.TLS)
	opts := []remote.ConfigOption{
		// protoactor's defaults preallocate a million-slot ring per
		// connection (16 MB each); the rings grow on demand anyway.
		remote.WithEndpointWriterQueueSize(1024),
		remote.WithEndpointManagerQueueSize(1024),
		remote.WithServerOptions(grpc.Creds(creds), grpc.StreamInterceptor(g.stream), grpc.UnaryInterceptor(g.unary),
			grpc.MaxRecvMsgSize(MaxMessageBytes),
			// The gateway (gateway.go) on the same port, behind the same
			// TLS, size limit and interceptor; its clients ping to notice
			// a dead manager on a quiet stream (events -f).
			grpc.UnknownServiceHandler(gw.serve),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: GatewayKeepalive / 2, PermitWithoutStream: true})),
		remote.WithDialOptions(grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageBytes))),
	}
	if cfg.Advertise != "" {
		opts = append(opts, remote.WithAdvertisedHost(cfg.Advertise))
	}
	rc := remote.Configure(cfg.Host, cfg.Port, opts...)
	if cfg.ConnectAttempts > 0 {
		rc.MaxRetryCount = cfg.ConnectAttempts
	}
	r := remote.NewRemote(system, rc)
	r.Start()
	return r, system.Address(), nil
}

// Identity returns who sent the message being handled, as the transport
// proved it. Local messages (same process) have role "local".
func Identity(ctx actor.Context) pki.Peer {
	h := ctx.MessageHeader()
	if h == nil || h.Get(HeaderRole) == "" {
		return pki.Peer{Name: "local", Role: "local"}
	}
	return pki.Peer{Name: h.Get(HeaderName), Role: h.Get(HeaderRole)}
}
