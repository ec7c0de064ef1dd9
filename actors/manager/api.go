package manager

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// Images is what the api needs from the node's container runtime.
type Images interface {
	ImportImage(ctx context.Context, r io.Reader) ([]string, error)
	PullImage(ctx context.Context, ref string, opts runtime.PullOptions) error
	EnsureImage(ctx context.Context, ref string) error
	ListImages(ctx context.Context) ([]string, error)
}

// APIConfig configures the api actor and its children.
type APIConfig struct {
	Store       *store.Store
	Images      Images
	NodeID      string
	Version     string
	UploadDir   string
	EnableDebug bool // accept DebugCrash (supervision tests)
	// CA signs certificates for nodes whose role changes.
	CA  *pki.CA
	Log *zap.Logger
	// The audit log's retention (audit.go); 0: the store's defaults.
	AuditMaxEntries int
	AuditMaxAge     time.Duration
}

// A table says, per request type (its wire name, as remoting's rules name
// it), which roles may send it. Roles are the certificate's, as the
// transport proved them; roleLocal is a message from this process.
type table map[string][]string

const roleLocal = "local"

var (
	// adminRoles may use the management API: admins, managers forwarding
	// to the leader, and this node's own process.
	adminRoles = []string{pki.RoleAdmin, pki.RoleManager, roleLocal}
	// nodeRoles may speak the node protocol; a worker for itself only
	// (checked by the handler: whose resource it is).
	nodeRoles = []string{pki.RoleWorker, pki.RoleManager, roleLocal}
)

func typeName(m proto.Message) string { return string(proto.MessageName(m)) }

// apiChild is one child of the api: its name under manager/api, the
// requests it takes, and its props.
type apiChild struct {
	name  string
	table table
	props func(APIConfig) *actor.Props
}

// apiChildren split the api by resource, each in its own file.
var apiChildren = []apiChild{
	{"services", servicesTable, newServicesAPI},
	{"nodes", nodesTable, newNodesAPI},
	{"images", imagesTable, newImagesAPI},
	{"cluster", clusterTable, newClusterAPI},
	{"logs", logsTable, newLogsAPI},
	{"system", systemTable, newSystemAPI},
	{"audit", auditTable, newAuditAPI},
}

// apiTable is what the api answers itself.
var apiTable = table{typeName(&messages.DebugCrash{}): adminRoles}

// route is where a request type goes (nil: the api itself) and who may
// send it.
type route struct {
	to    *actor.PID
	roles []string
}

// apiActor is the remote-facing edge (manager/api): it takes the caller's
// identity from the transport, checks it against the table of the child
// that handles the request, and forwards the request to that child with
// its sender, so the answer goes straight back to the caller.
type apiActor struct {
	cfg    APIConfig
	routes map[string]route // by type name
	// observing: the futures of the writes it waits on to record
	// (api_audit.go), by id.
	observing map[string]bool
}

func newAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &apiActor{cfg: cfg} }, events.WithLifecycle)
}

func errReply(code messages.ErrorCode, format string, a ...any) *messages.Error {
	return &messages.Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

func notFound(kind, name string) *messages.Error {
	return errReply(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "%s %q not found: list them with `warren %s ls`", kind, name, kind)
}

func (a *apiActor) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		a.routes, a.observing = map[string]route{}, map[string]bool{}
		for name, roles := range apiTable {
			a.routes[name] = route{roles: roles}
		}
		for _, c := range apiChildren {
			pid, err := ctx.SpawnNamed(timedReplies(c.props(a.cfg)), c.name)
			if err != nil {
				a.cfg.Log.Error("spawn api child", zap.String("child", c.name), zap.Error(err))
				continue
			}
			for name, roles := range c.table {
				a.routes[name] = route{to: pid, roles: roles}
			}
		}
		return
	case *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return
	}
	m, isProto := ctx.Message().(proto.Message)
	r, ok := a.routes[""]
	if isProto {
		r, ok = a.routes[typeName(m)]
	}
	if !ok {
		a.cfg.Log.Debug("api: unhandled message", zap.String("type", fmt.Sprintf("%T", ctx.Message())))
		return
	}
	if id := remoting.Identity(ctx); !slices.Contains(r.roles, id.Role) {
		a.refuse(ctx, id)
		a.refused(ctx, id)
		return
	}
	if r.to != nil {
		if a.observeWrite(ctx, r.to) { // a write: answered and recorded in the audit log
			return
		}
		forwardTimed(ctx, r.to) // ctx.Forward, stamped for warren_api_request_duration_seconds
		return
	}
	if m, ok := m.(*messages.DebugCrash); ok {
		a.recordDebugCrash(ctx, m)
		a.debugCrash(ctx, m)
	}
}

// refuse answers a request whose sender's role may not send it, in the
// request's own reply type where it has one. The transport refuses these
// already (remoting's rules); this is the second check.
func (a *apiActor) refuse(ctx actor.Context, id pki.Peer) {
	switch m := ctx.Message().(type) {
	case *messages.RegisterNode:
		ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%s %q may not report for node %q", id.Role, id.Name, m.NodeId)})
	case *messages.CertificateRequest:
		ctx.Respond(&messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%s may not ask for a certificate for node %s", id.Name, m.NodeId)})
	case *messages.Heartbeat, *messages.TaskStatusReport, *messages.NetworkProgrammed, *messages.DrainTask:
		// Reports expect no answer.
	default:
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%s %s may not call the management API", id.Role, id.Name)})
	}
	a.cfg.Log.Warn("api refused a request", zap.String("role", id.Role), zap.String("name", id.Name), zap.String("type", fmt.Sprintf("%T", ctx.Message())))
}

// debugCrash crashes an actor of this node on purpose (supervision tests).
func (a *apiActor) debugCrash(ctx actor.Context, m *messages.DebugCrash) {
	if !a.cfg.EnableDebug {
		ctx.Respond(&messages.DebugCrashReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "debug hooks are off: start the node with --enable-debug")})
		return
	}
	if m.Actor == NameAPI {
		panic("debug crash requested for the api actor")
	}
	ctx.Send(actor.NewPID(ctx.Self().Address, m.Actor), m)
	ctx.Respond(&messages.DebugCrashReply{})
}
