package remoting

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// The gateway serves clients that cannot be dialled back. protoactor's
// remote sends a reply over a connection the receiver opens to the
// sender's advertised address; a CLI behind NAT, through `ssh -L` or in a
// container never gets it. So a manager also serves one gRPC stream per
// client, on the remoting port (the same listener, TLS and size limit),
// that carries requests in and their replies and pushed messages out.
//
// Each frame in is checked as the transport interceptor checks an envelope
// (Allowed by the certificate's role, the target and the type name; then
// checkPayload), stamped with the certificate's identity (HeaderRole,
// HeaderName) and delivered to a local actor only: the gateway is no relay
// to other nodes. A refused frame cuts the stream, as the interceptor cuts
// a connection.
//
// On the manager, a session actor (gateway/<n>) stands for the client: a
// request is sent with a child of it as the sender, which writes the first
// answer back on the stream and stops; a relay child is a PID the client
// can name, e.g. as an events subscriber, and writes back whatever it is
// sent. When the stream ends, the session stops and its children with it,
// so whoever watches a relay (the events hub) sees it terminate.

// GatewayMethod is the gRPC method of the gateway stream. protoactor's
// server does not know it; it reaches the gateway as an unknown method.
const GatewayMethod = "/warren.v1.Gateway/Session"

// GatewayPrefix starts the actor id of every gateway session, and so of
// its relays ("gateway/3/relay-1").
const GatewayPrefix = "gateway/"

// GatewayKeepalive is how often a client pings a quiet gateway stream; a
// manager accepts pings twice as often.
const GatewayKeepalive = 30 * time.Second

// Gateway bounds. Whatever a client asks beyond them cuts its stream.
const (
	// maxGatewaySessions bounds the streams a node serves at once.
	maxGatewaySessions = 256
	// maxGatewayInFlight bounds one session's requests awaiting an answer.
	maxGatewayInFlight = 1024
	// maxGatewayRelays bounds one session's relays.
	maxGatewayRelays = 64
	// maxGatewayTimeout bounds how long a request's sender waits for its
	// answer; defaultGatewayTimeout is used when the client names none.
	maxGatewayTimeout     = time.Hour
	defaultGatewayTimeout = 30 * time.Second
	// gatewayQueue is how many frames wait for the stream's writer before
	// the actors writing them wait too.
	gatewayQueue = 64
)

// gateway serves gateway streams for one actor system.
type gateway struct {
	system *actor.ActorSystem
	log    *zap.Logger
	// onRefused is Config.OnRefused, told of refusals by the rules as the
	// interceptor tells it (nil: nobody is told).
	onRefused func(peer pki.Peer, target, typeName string)
	sessions  atomic.Int64 // open now
	seq       atomic.Uint64
}

// serve is grpc's unknown-service handler: the gateway method, or a
// refusal. It runs inside the guard's stream interceptor, so a panic here
// drops this stream, never the process; the frames are read on this
// goroutine for that reason.
func (gw *gateway) serve(_ any, ss grpc.ServerStream) error {
	if m, _ := grpc.MethodFromServerStream(ss); m != GatewayMethod {
		return status.Errorf(codes.Unimplemented, "remoting: %s is not served", m)
	}
	who, addr, err := peerOf(ss.Context())
	if err != nil {
		gw.log.Warn("remoting: gateway refused a connection", zap.Error(err))
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if gw.sessions.Add(1) > maxGatewaySessions {
		gw.sessions.Add(-1)
		gw.log.Warn("remoting: gateway refused a session: too many open", zap.String("peer", who.Name), zap.String("addr", addr), zap.Int("limit", maxGatewaySessions))
		return status.Errorf(codes.ResourceExhausted, "remoting: this node serves %d gateway sessions already: retry later, or use another manager", maxGatewaySessions)
	}
	defer gw.sessions.Add(-1)

	done := make(chan struct{})
	defer close(done)
	out := make(chan *messages.GatewayFrame, gatewayQueue)
	writeErr := make(chan error, 1)
	go func() {
		for {
			select {
			case f := <-out:
				if err := ss.SendMsg(f); err != nil {
					writeErr <- err
					return
				}
			case <-done:
				return
			}
		}
	}()

	s := &session{gw: gw, who: who, addr: addr, self: gw.system.Address(), relays: map[string]bool{}, inFlight: &atomic.Int64{}}
	name := GatewayPrefix + strconv.FormatUint(gw.seq.Add(1), 10)
	pid, err := gw.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &sessionActor{out: out, done: done, inFlight: s.inFlight, who: who, log: gw.log}
	}), name)
	if err != nil {
		return status.Errorf(codes.Internal, "remoting: start gateway session: %v", err)
	}
	s.pid = pid
	// Stopping the session stops its relays: the hub's watch drops them.
	defer gw.system.Root.Stop(pid)
	gw.log.Debug("remoting: gateway session opened", zap.String("peer", who.Name), zap.String("role", who.Role), zap.String("addr", addr), zap.String("session", pid.Id))

	for {
		f := &messages.GatewayFrame{}
		if err := ss.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if status.Code(err) == codes.ResourceExhausted {
				gw.log.Warn("remoting: gateway refused a frame over the size limit; the stream is cut",
					zap.String("peer", who.Name), zap.String("role", who.Role), zap.Int("limit", MaxMessageBytes), zap.Error(err))
			}
			return err
		}
		select {
		case err := <-writeErr:
			return err
		default:
		}
		in, err := s.admit(f)
		if err != nil {
			gw.log.Warn("remoting: gateway refused a message; the stream is cut",
				zap.String("peer", who.Name), zap.String("role", who.Role), zap.String("addr", addr), zap.Error(err))
			return status.Error(codes.PermissionDenied, err.Error())
		}
		gw.system.Root.Send(pid, in)
	}
}

// session is what the stream's reader knows of its client: who the
// certificate says it is, and which relays it opened.
type session struct {
	gw       *gateway
	who      pki.Peer
	addr     string
	self     string // this node's actor address
	pid      *actor.PID
	relays   map[string]bool // actor ids of the relays opened
	inFlight *atomic.Int64   // requests awaiting an answer; their senders decrement it
}

// admitted is a frame that passed admit, with its message decoded. It goes
// from the stream's reader to the session actor in this process only.
type admitted struct {
	frame *messages.GatewayFrame
	msg   any // REQUEST, SEND: the message to deliver
}

// admit checks one frame from the client, as the interceptor checks an
// envelope, and decodes the message it carries. An error refuses it.
func (s *session) admit(f *messages.GatewayFrame) (*admitted, error) {
	switch f.Kind {
	case messages.GatewayKind_GATEWAY_KIND_REQUEST, messages.GatewayKind_GATEWAY_KIND_SEND:
		if f.Target == "" {
			return nil, errors.New("gateway frame names no target actor")
		}
		if f.Kind == messages.GatewayKind_GATEWAY_KIND_REQUEST && s.inFlight.Load() >= maxGatewayInFlight {
			return nil, fmt.Errorf("%d requests awaiting an answer (limit %d)", s.inFlight.Load(), maxGatewayInFlight)
		}
		if !Allowed(s.who.Role, f.Target, f.TypeName) {
			if s.gw.onRefused != nil {
				s.gw.onRefused(s.who, f.Target, f.TypeName)
			}
			return nil, fmt.Errorf("%s %q may not send %s to %s", s.who.Role, s.who.Name, f.TypeName, f.Target)
		}
		if err := s.checkPayload(f.TypeName, f.Data); err != nil {
			return nil, fmt.Errorf("%s: %w", f.TypeName, err)
		}
		msg, err := Decode(f.TypeName, f.Data)
		if err != nil {
			return nil, err
		}
		if f.Kind == messages.GatewayKind_GATEWAY_KIND_REQUEST {
			s.inFlight.Add(1)
		}
		return &admitted{frame: f, msg: msg}, nil
	case messages.GatewayKind_GATEWAY_KIND_OPEN_RELAY:
		id := s.relayID(f.Id)
		if s.relays[id] {
			return nil, fmt.Errorf("relay %d is open already", f.Id)
		}
		if len(s.relays) >= maxGatewayRelays {
			return nil, fmt.Errorf("%d relays open (limit %d)", len(s.relays), maxGatewayRelays)
		}
		s.relays[id] = true
		return &admitted{frame: f}, nil
	case messages.GatewayKind_GATEWAY_KIND_CLOSE_RELAY:
		delete(s.relays, s.relayID(f.Id))
		return &admitted{frame: f}, nil
	}
	return nil, fmt.Errorf("gateway frame of kind %d is not one a client sends", f.Kind)
}

// relayID is the actor id of the session's relay n.
func (s *session) relayID(n uint64) string { return s.pid.Id + "/" + relayName(n) }

func relayName(n uint64) string { return "relay-" + strconv.FormatUint(n, 10) }

// checkPayload is the interceptor's check, with one exception: a client
// may name a relay of its own session, which lives on this node, where
// the interceptor refuses every actor of this node. A relay of another
// session, or any other actor of this node, is still refused.
func (s *session) checkPayload(typeName string, data []byte) error {
	err := checkPayload(typeName, data, s.who, s.self)
	if err == nil {
		return nil
	}
	if pid := namedPID(typeName, data); pid != nil && pid.Address == s.self && s.relays[pid.Id] {
		return nil
	}
	return err
}

// namedPID is the actor a subscription names, if data decodes as one.
func namedPID(typeName string, data []byte) *actor.PID {
	switch typeName {
	case "warren.v1.SubscribeEvents":
		m := &messages.SubscribeEvents{}
		if proto.Unmarshal(data, m) == nil {
			return m.Subscriber
		}
	case "warren.v1.UnsubscribeEvents":
		m := &messages.UnsubscribeEvents{}
		if proto.Unmarshal(data, m) == nil {
			return m.Subscriber
		}
	}
	return nil
}

// Decode is protoactor's remote.Deserialize for the protobuf serializer,
// without its panic on a type name this process does not know.
func Decode(typeName string, data []byte) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(typeName))
	if err != nil {
		return nil, fmt.Errorf("message type %q: %w", typeName, err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%s: undecodable: %w", typeName, err)
	}
	return m, nil
}
