// Package remoting owns how Warren's actor systems talk across processes:
// protoactor-go remote over gRPC with mutual TLS in both directions, and a
// gRPC stream interceptor that authorizes every incoming message by the
// certificate role of the connection it came on and stamps that identity
// into the message header, where actors read it (Identity).
//
// protoactor's remote has no client-only connection: a reply travels over a
// connection the receiver dials back to the sender's advertised address. So
// every party, CLI included, runs an endpoint and presents a cluster-CA
// certificate as both TLS server and TLS client.
package remoting

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

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
	creds := credentials.NewTLS(cfg.TLS)
	opts := []remote.ConfigOption{
		// protoactor's defaults preallocate a million-slot ring per
		// connection (16 MB each); the rings grow on demand anyway.
		remote.WithEndpointWriterQueueSize(1024),
		remote.WithEndpointManagerQueueSize(1024),
		remote.WithServerOptions(grpc.Creds(creds), grpc.StreamInterceptor(authorize), grpc.MaxRecvMsgSize(16<<20)),
		remote.WithDialOptions(grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20))),
	}
	if cfg.Advertise != "" {
		opts = append(opts, remote.WithAdvertisedHost(cfg.Advertise))
	}
	r := remote.NewRemote(system, remote.Configure(cfg.Host, cfg.Port, opts...))
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

// Allowed reports whether a peer with role may send a message of the given
// protobuf type name. Managers may send anything. Workers report for
// themselves (registration, heartbeats, task status, certificate requests)
// and answer what managers ask; they may not propose to the store, push
// assignments or images, call the management API or stop actors. Admins
// (the CLI) may call the API and follow events.
func Allowed(role, typeName string) bool {
	switch typeName {
	case "actor.Watch", "actor.Unwatch", "actor.Terminated", "actor.DeadLetterResponse":
		return role == pki.RoleManager || role == pki.RoleWorker || role == pki.RoleAdmin
	}
	switch role {
	case pki.RoleManager:
		return true
	case pki.RoleWorker:
		switch typeName {
		case "warren.v1.RegisterNode", "warren.v1.Heartbeat", "warren.v1.TaskStatusReport", "warren.v1.CertificateRequest",
			"warren.v1.ImportImageReply", "warren.v1.Event", "warren.v1.NetworkProgrammed", "warren.v1.DrainTask":
			return true
		}
		return false
	case pki.RoleAdmin:
		switch {
		case strings.HasPrefix(typeName, "warren.v1.") && strings.HasSuffix(typeName, "Request") &&
			typeName != "warren.v1.CertificateRequest" && typeName != "warren.v1.ResyncRequest":
			return true
		case typeName == "warren.v1.ImportImageChunk", typeName == "warren.v1.SubscribeEvents",
			typeName == "warren.v1.UnsubscribeEvents", typeName == "warren.v1.DebugCrash":
			return true
		}
	}
	return false
}

// AdminTarget reports whether an admin may address the actor with this id.
func AdminTarget(id string) bool { return id == "manager/api" || id == "events" }

// authorize wraps the remoting stream: each message batch is checked against
// the role in the peer's verified certificate and stamped with it.
func authorize(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, ok := peer.FromContext(ss.Context())
	if !ok {
		return fmt.Errorf("remoting: no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return fmt.Errorf("remoting: connection from %s has no verified cluster certificate", p.Addr)
	}
	who, err := pki.PeerOf(ti.State.PeerCertificates[0])
	if err != nil {
		return fmt.Errorf("remoting: %w", err)
	}
	return handler(srv, &authStream{ServerStream: ss, who: who})
}

type authStream struct {
	grpc.ServerStream
	who pki.Peer
}

func (s *authStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	rm, ok := m.(*remote.RemoteMessage)
	if !ok {
		return nil
	}
	batch := rm.GetMessageBatch()
	if batch == nil {
		return nil
	}
	for _, env := range batch.Envelopes {
		if int(env.TypeId) >= len(batch.TypeNames) {
			return fmt.Errorf("remoting: malformed batch from %s", s.who.Name)
		}
		tn := batch.TypeNames[env.TypeId]
		if !Allowed(s.who.Role, tn) {
			return fmt.Errorf("remoting: %s %q may not send %s", s.who.Role, s.who.Name, tn)
		}
		// Admins talk to the api and the events hub, nothing else: a debug
		// hook or a stop aimed straight at another actor is refused.
		if s.who.Role == pki.RoleAdmin {
			if int(env.Target) >= len(batch.Targets) {
				return fmt.Errorf("remoting: malformed batch from %s", s.who.Name)
			}
			if id := batch.Targets[env.Target].GetId(); !AdminTarget(id) {
				return fmt.Errorf("remoting: admin %q may not send to %s", s.who.Name, id)
			}
		}
		if env.MessageHeader == nil {
			env.MessageHeader = &remote.MessageHeader{}
		}
		if env.MessageHeader.HeaderData == nil {
			env.MessageHeader.HeaderData = map[string]string{}
		}
		env.MessageHeader.HeaderData[HeaderRole] = s.who.Role
		env.MessageHeader.HeaderData[HeaderName] = s.who.Name
	}
	return nil
}
