package remoting

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// MaxMessageBytes bounds one remoting frame both ways. A sender checks what
// it builds against it (a frame over it would be dropped by gRPC); a
// receiver logs and refuses a larger one.
const MaxMessageBytes = 16 << 20

// maxEnvelopes bounds one batch; protoactor's writer sends at most 1000.
const maxEnvelopes = 4096

// guard checks every frame a peer sends before protoactor's endpoint reader
// sees it. The reader trusts its input: it indexes the batch's tables with
// the envelope's numbers and dereferences the PIDs of system messages, and a
// panic there is a panic in a gRPC handler, which kills the process. So
// everything it will index or dereference is checked here, then the message
// is authorised by the certificate's role, the target actor and the type.
type guard struct {
	system *actor.ActorSystem
	log    *zap.Logger
	// onRefused is Config.OnRefused (nil: nobody is told).
	onRefused func(peer pki.Peer, target, typeName string)
}

// stream wraps the remoting stream: each frame is checked and stamped with
// the peer's identity; a panic anywhere in handling the stream drops that
// connection, never the process.
func (g *guard) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	who, addr, err := peerOf(ss.Context())
	if err != nil {
		g.log.Warn("remoting: refused a connection", zap.Error(err))
		return status.Error(codes.Unauthenticated, err.Error())
	}
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("remoting: handling a peer's message panicked; its connection is dropped",
				zap.String("peer", who.Name), zap.String("role", who.Role), zap.String("addr", addr),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = status.Error(codes.Internal, "remoting: message refused")
		}
	}()
	return handler(srv, &authStream{ServerStream: ss, who: who, addr: addr, g: g})
}

// unary refuses every unary RPC: Warren uses only the message stream, and
// protoactor's unary handlers are unimplemented ("implement me" panics).
func (g *guard) unary(ctx context.Context, _ any, info *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
	who, addr, _ := peerOf(ctx)
	g.log.Warn("remoting: refused a unary call", zap.String("method", info.FullMethod), zap.String("peer", who.Name), zap.String("addr", addr))
	return nil, status.Errorf(codes.Unimplemented, "remoting: %s is not served", info.FullMethod)
}

func peerOf(ctx context.Context) (pki.Peer, string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Peer{}, "", errors.New("remoting: no peer information")
	}
	addr := fmt.Sprint(p.Addr)
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return pki.Peer{}, addr, fmt.Errorf("remoting: connection from %s has no verified cluster certificate", addr)
	}
	who, err := pki.PeerOf(ti.State.PeerCertificates[0])
	if err != nil {
		return pki.Peer{}, addr, fmt.Errorf("remoting: %s: %w", addr, err)
	}
	return who, addr, nil
}

type authStream struct {
	grpc.ServerStream
	who  pki.Peer
	addr string
	g    *guard
}

func (s *authStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			s.g.log.Warn("remoting: refused a frame over the size limit; the connection is dropped",
				zap.String("peer", s.who.Name), zap.String("role", s.who.Role), zap.Int("limit", MaxMessageBytes), zap.Error(err))
		}
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
	if err := s.g.check(batch, s.who); err != nil {
		s.g.log.Warn("remoting: refused a message; the connection is dropped",
			zap.String("peer", s.who.Name), zap.String("role", s.who.Role), zap.String("addr", s.addr), zap.Error(err))
		return status.Error(codes.PermissionDenied, err.Error())
	}
	for _, env := range batch.Envelopes {
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

// check validates and authorises one batch from who.
func (g *guard) check(b *remote.MessageBatch, who pki.Peer) error {
	if len(b.Envelopes) > maxEnvelopes {
		return fmt.Errorf("batch of %d messages (limit %d)", len(b.Envelopes), maxEnvelopes)
	}
	for i, p := range b.Targets {
		if p == nil || p.Id == "" {
			return fmt.Errorf("target %d has no actor id", i)
		}
	}
	for i, p := range b.Senders {
		if p == nil || p.Id == "" || p.Address == "" {
			return fmt.Errorf("sender %d has no address or id", i)
		}
	}
	self := g.system.Address()
	for _, env := range b.Envelopes {
		if env == nil {
			return errors.New("empty envelope")
		}
		if env.TypeId < 0 || int(env.TypeId) >= len(b.TypeNames) {
			return fmt.Errorf("type index %d out of range", env.TypeId)
		}
		if env.Target < 0 || int(env.Target) >= len(b.Targets) {
			return fmt.Errorf("target index %d out of range", env.Target)
		}
		// Sender 0 is "none"; n is Senders[n-1].
		if env.Sender < 0 || int(env.Sender) > len(b.Senders) {
			return fmt.Errorf("sender index %d out of range", env.Sender)
		}
		// Only the protobuf serializer: Warren never sends JSON, and a
		// serializer index is another table the reader indexes.
		if env.SerializerId != 0 {
			return fmt.Errorf("serializer %d: only protobuf (0) is accepted", env.SerializerId)
		}
		typeName, target := b.TypeNames[env.TypeId], b.Targets[env.Target].Id
		if !Allowed(who.Role, target, typeName) {
			if g.onRefused != nil {
				g.onRefused(who, target, typeName)
			}
			return fmt.Errorf("%s %q may not send %s to %s", who.Role, who.Name, typeName, target)
		}
		// A peer's request names its own actors as the sender; a reply sent
		// to one of ours would make our actor answer itself.
		if env.Sender > 0 && who.Role != pki.RoleManager && b.Senders[env.Sender-1].Address == self {
			return fmt.Errorf("%s %q named one of this node's actors as the sender", who.Role, who.Name)
		}
		if err := checkPayload(typeName, env.MessageData, who, self); err != nil {
			return fmt.Errorf("%s: %w", typeName, err)
		}
	}
	return nil
}

// checkPayload decodes the few messages whose contents protoactor or the
// receiving actor dereference or act on before any actor can check them.
// It applies to every role: a malformed message from a manager must not
// crash a node either.
func checkPayload(typeName string, data []byte, who pki.Peer, self string) error {
	var pidField func(proto.Message) *actor.PID
	var m proto.Message
	switch typeName {
	case "actor.Watch":
		m, pidField = &actor.Watch{}, func(m proto.Message) *actor.PID { return m.(*actor.Watch).Watcher }
	case "actor.Unwatch":
		m, pidField = &actor.Unwatch{}, func(m proto.Message) *actor.PID { return m.(*actor.Unwatch).Watcher }
	case "actor.Terminated":
		m, pidField = &actor.Terminated{}, func(m proto.Message) *actor.PID { return m.(*actor.Terminated).Who }
	case "warren.v1.SubscribeEvents":
		m, pidField = &messages.SubscribeEvents{}, func(m proto.Message) *actor.PID { return m.(*messages.SubscribeEvents).Subscriber }
	case "warren.v1.UnsubscribeEvents":
		m, pidField = &messages.UnsubscribeEvents{}, func(m proto.Message) *actor.PID { return m.(*messages.UnsubscribeEvents).Subscriber }
	default:
		return nil
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("undecodable: %w", err)
	}
	pid := pidField(m)
	if pid == nil || pid.Address == "" || pid.Id == "" {
		return errors.New("names no actor (address and id are required)")
	}
	// Only managers may name this node's own actors: a watcher or
	// subscriber here would have the node message itself.
	if who.Role != pki.RoleManager && pid.Address == self {
		return fmt.Errorf("names an actor of this node (%s)", pid.Id)
	}
	return nil
}
