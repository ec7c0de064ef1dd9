package manager

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// auditTable is what manager/api/audit takes, and from whom.
var auditTable = table{
	typeName(&messages.ListAuditRequest{}): adminRoles,
}

// auditAPI (manager/api/audit) answers `warren audit ls` from this
// manager's replica: every manager holds the whole log (it is committed
// to raft), so no request goes to the leader.
type auditAPI struct{ cfg APIConfig }

func newAuditAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &auditAPI{cfg: cfg} }, events.WithLifecycle)
}

func (a *auditAPI) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*messages.ListAuditRequest); ok {
		es, seq := a.cfg.Store.State.Audit(store.AuditFilter{SinceUnixNano: m.SinceUnixNano, User: m.User, Denied: m.Denied, Limit: int(m.Limit)})
		ctx.Respond(&messages.ListAuditReply{Entries: es, Manager: a.cfg.NodeID, Seq: seq})
	}
}

// auditWait bounds how long the api waits for a child's answer to a write
// it records: above every child's own bound (the longest, an image import
// passed on to every node, takes up to ten minutes).
const auditWait = 11 * time.Minute

// observeWrite takes the api's current request to child when it is a write
// the audit log records, and reports whether it did. The child gets the
// request with its headers (the caller's identity) but with a future as
// its sender; the answer, whenever it comes, goes to the caller and is
// recorded with the caller's identity (ReenterAfter keeps the request's
// context). Not recorded here: writes a manager forwards (recorded by the
// manager the client reached, where they entered the cluster), and a
// write this api already observes, handed back to it by the store actor
// when this manager became the leader while holding it.
func (a *apiActor) observeWrite(ctx actor.Context, child *actor.PID) bool {
	target, ok := auditTarget(ctx.Message())
	id := remoting.Identity(ctx)
	if !ok || id.Role == pki.RoleManager {
		return false
	}
	if s := ctx.Sender(); s != nil && a.observing[s.Id] {
		return false
	}
	start := time.Now()
	f := actor.NewFuture(ctx.ActorSystem(), auditWait)
	fid := f.PID().Id
	a.observing[fid] = true
	env := &actor.MessageEnvelope{Message: ctx.Message(), Sender: f.PID()}
	if in := ctx.MessageHeader(); in != nil {
		for _, k := range in.Keys() {
			env.SetHeader(k, in.Get(k))
		}
	}
	env.SetHeader(headerReceived, strconv.FormatInt(start.UnixNano(), 10)) // timed as forwardTimed does (metrics.go)
	ctx.Send(child, env)
	ctx.ReenterAfter(f, func(res any, err error) {
		delete(a.observing, fid)
		e := a.entry(ctx, id, start, target)
		e.DurationMs = uint32(time.Since(start).Milliseconds())
		switch {
		case errors.Is(err, actor.ErrDeadLetter):
			// The child is gone: the caller learns it as a forward would
			// have told it (its client then tries another manager).
			e.Code, e.Message = store.AuditCode(messages.ErrorCode_ERROR_CODE_UNAVAILABLE), fmt.Sprintf("%s is not running", child.Id)
			if ctx.Sender() != nil {
				ctx.Respond(&actor.DeadLetterResponse{Target: child})
			}
		case err != nil:
			e.Code, e.Message = store.AuditCode(messages.ErrorCode_ERROR_CODE_UNAVAILABLE), fmt.Sprintf("no answer from %s: %v", child.Id, err)
		default:
			if r, ok := res.(interface{ GetError() *messages.Error }); ok && r.GetError() != nil {
				e.Code, e.Message = store.AuditCode(r.GetError().Code), r.GetError().Message
			}
			if ctx.Sender() != nil {
				ctx.Respond(res)
			}
		}
		if c, ok := ctx.Message().(*messages.ImportImageChunk); ok {
			if !c.Last && e.Code == "" {
				return // an upload is recorded once: its last chunk, or the chunk that failed
			}
			if r, ok := res.(*messages.ImportImageReply); ok && len(r.Images) > 0 {
				e.Target = strings.Join(r.Images, ",")
			}
		}
		a.record(ctx, e)
	})
	return true
}

// refused records a request refused by the api's table (the transport
// refuses most of these first, and records them through AuditRefusals).
func (a *apiActor) refused(ctx actor.Context, id pki.Peer) {
	target, _ := auditTarget(ctx.Message())
	e := a.entry(ctx, id, time.Now(), target)
	e.Denied, e.RefusedBy = true, "api"
	e.Code, e.Message = store.AuditCode(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED), fmt.Sprintf("%s %s may not send %s", id.Role, id.Name, e.Request)
	a.record(ctx, e)
}

// recordDebugCrash records a DebugCrash, which the api answers itself.
func (a *apiActor) recordDebugCrash(ctx actor.Context, m *messages.DebugCrash) {
	id := remoting.Identity(ctx)
	if id.Role == pki.RoleManager {
		return
	}
	e := a.entry(ctx, id, time.Now(), m.Actor)
	if !a.cfg.EnableDebug {
		e.Code, e.Message = store.AuditCode(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED), "debug hooks are off"
	}
	a.record(ctx, e)
}

func (a *apiActor) entry(ctx actor.Context, id pki.Peer, at time.Time, target string) *messages.AuditEntry {
	req := fmt.Sprintf("%T", ctx.Message())
	if m, ok := ctx.Message().(proto.Message); ok {
		req = string(proto.MessageName(m).Name())
	}
	return &messages.AuditEntry{UnixNano: at.UnixNano(), User: id.Name, Role: id.Role, Manager: a.cfg.NodeID,
		Request: req, Actor: ctx.Self().Id, Target: target}
}

func (a *apiActor) record(ctx actor.Context, e *messages.AuditEntry) {
	ctx.Send(actor.NewPID(ctx.Self().Address, NameAudit), &auditRecord{e: e})
}
