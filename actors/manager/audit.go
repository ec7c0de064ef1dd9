package manager

import (
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// NameAudit is the audit log's batcher on every manager (auditLog).
const NameAudit = "manager/audit"

// Batching: a busy cluster's audit entries go to raft a batch at a time,
// one proposal in flight, so auditing adds at most a few proposals a
// second however many requests arrive.
const (
	auditFlushEvery = 200 * time.Millisecond
	auditBatch      = 256  // entries in one proposal at most
	auditMaxPending = 4096 // entries waiting while raft cannot take them; more are dropped (and logged)
)

// auditRecord is one entry for the batcher. A Go value: only this process
// (the api, and the transport's OnRefused hook) records.
type auditRecord struct{ e *messages.AuditEntry }

type auditFlush struct{}

// auditLog (manager/audit) gives each entry its id and commits entries to
// raft in batches (AppendAudit), every auditFlushEvery or auditBatch
// entries, with the retention every manager then applies alike. A batch
// raft did not take is proposed again: the store applies an id once.
type auditLog struct {
	nodeID     string
	maxEntries uint32
	maxAge     time.Duration
	log        *zap.Logger

	boot     int64  // this actor's start (unix ns): with seq, unique ids across restarts
	seq      uint64 // entries recorded since boot
	pending  []*messages.AuditEntry
	inflight bool // one proposal at a time: what arrives meanwhile waits for the next
	timer    bool // a flush is scheduled
	dropped  int  // entries dropped since the last warning
}

func newAuditLog(cfg APIConfig) *actor.Props {
	maxEntries, maxAge := cfg.AuditMaxEntries, cfg.AuditMaxAge
	if maxEntries == 0 {
		maxEntries = store.DefaultAuditMaxEntries
	}
	if maxAge == 0 {
		maxAge = store.DefaultAuditMaxAge
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &auditLog{nodeID: cfg.NodeID, maxEntries: uint32(maxEntries), maxAge: maxAge, log: log.Named("audit")}
	}, events.WithLifecycle)
}

func (a *auditLog) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.boot = time.Now().UnixNano()
	case *actor.Stopping:
		// Best effort: hand what is waiting to raft; nobody waits for it.
		if len(a.pending) > 0 {
			ctx.Send(storePID(ctx), &messages.Propose{Command: a.command(a.pending)})
		}
	case *auditRecord:
		a.record(ctx, m.e)
	case *auditFlush:
		a.timer = false
		a.flush(ctx)
	}
}

func (a *auditLog) record(ctx actor.Context, e *messages.AuditEntry) {
	if len(a.pending) >= auditMaxPending {
		if a.dropped++; a.dropped == 1 {
			a.log.Warn("audit entries dropped: raft has not taken the last batches (no leader?)", zap.Int("pending", len(a.pending)),
				zap.String("user", e.User), zap.String("request", e.Request))
		}
		return
	}
	a.seq++
	e.Id = fmt.Sprintf("%s-%x-%d", a.nodeID, a.boot, a.seq)
	if e.Manager == "" {
		e.Manager = a.nodeID
	}
	a.pending = append(a.pending, e)
	if len(a.pending) >= auditBatch {
		a.flush(ctx)
		return
	}
	a.schedule(ctx, auditFlushEvery)
}

func (a *auditLog) schedule(ctx actor.Context, d time.Duration) {
	if !a.timer {
		a.timer = true
		scheduler.NewTimerScheduler(ctx).SendOnce(d, ctx.Self(), &auditFlush{})
	}
}

func (a *auditLog) command(es []*messages.AuditEntry) *messages.Command {
	return &messages.Command{Op: &messages.Command_AppendAudit{AppendAudit: &messages.AppendAudit{
		Entries: es, MaxEntries: a.maxEntries, MaxAgeSeconds: int64(a.maxAge / time.Second)}}}
}

// flush proposes the next batch unless one is in flight; its answer
// flushes again if more waited meanwhile.
func (a *auditLog) flush(ctx actor.Context) {
	if a.inflight || len(a.pending) == 0 {
		return
	}
	n := min(len(a.pending), auditBatch)
	batch := a.pending[:n:n]
	a.pending = a.pending[n:]
	a.inflight = true
	write(ctx, a.command(batch), writeTimeout, func(e *messages.Error) {
		a.inflight = false
		if e != nil {
			// Not committed, or maybe committed: either way proposing it
			// again is safe (ids are applied once).
			a.log.Warn("audit batch not committed; retrying", zap.Int("entries", len(batch)), zap.String("error", e.Message))
			a.pending = append(batch, a.pending...)
			if over := len(a.pending) - auditMaxPending; over > 0 {
				a.pending = a.pending[:auditMaxPending]
				a.dropped += over
			}
			a.schedule(ctx, time.Second)
			return
		}
		if a.dropped > 0 {
			a.log.Warn("audit entries were dropped while raft could not take them", zap.Int("dropped", a.dropped))
			a.dropped = 0
		}
		if len(a.pending) >= auditBatch {
			a.flush(ctx)
		} else if len(a.pending) > 0 {
			a.schedule(ctx, auditFlushEvery)
		}
	})
}

// AuditRefusals is remoting.Config.OnRefused for a node: each message the
// transport refuses for the peer's role is recorded in this node's audit
// log, while it runs one (a manager); elsewhere the refusal is only logged
// by the transport.
func AuditRefusals(system *actor.ActorSystem) func(peer pki.Peer, target, typeName string) {
	return func(peer pki.Peer, target, typeName string) {
		if _, ok := system.ProcessRegistry.GetLocal(NameAudit); !ok {
			return
		}
		system.Root.Send(actor.NewPID(system.Address(), NameAudit), &auditRecord{e: &messages.AuditEntry{
			UnixNano: time.Now().UnixNano(), User: peer.Name, Role: peer.Role,
			Request: strings.TrimPrefix(typeName, "warren.v1."), Actor: target,
			Denied: true, RefusedBy: "transport", Code: store.AuditCode(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED),
			Message: fmt.Sprintf("%s %q may not send %s to %s: the connection was cut", peer.Role, peer.Name, typeName, target),
		}})
	}
}

// auditTarget says whether the api records m, a request it routes, and
// what m names. Writes are recorded; reads are not (they change nothing
// and would drown the log), except the join token, which hands out a
// secret: who read it is recorded, never the token. A request type not
// listed here is not recorded: a new write must be added.
func auditTarget(m any) (string, bool) {
	switch m := m.(type) {
	case *messages.CreateServiceRequest:
		return m.GetSpec().GetName(), true
	case *messages.UpdateServiceRequest:
		return m.Name, true
	case *messages.ScaleServiceRequest:
		return fmt.Sprintf("%s=%d", m.Name, m.Replicas), true
	case *messages.DeleteServiceRequest:
		return m.Name, true
	case *messages.PromoteServiceRequest:
		return m.Name, true
	case *messages.RollbackServiceRequest:
		return m.Name, true
	case *messages.PauseServiceRequest:
		return m.Name, true
	case *messages.ResumeServiceRequest:
		return m.Name, true
	case *messages.UpdateNodeRequest:
		return m.Node, true
	case *messages.PromoteNodeRequest:
		return m.Node, true
	case *messages.DemoteNodeRequest:
		return m.Node, true
	case *messages.RemoveNodeRequest:
		return m.Node, true
	case *messages.PullImageRequest:
		return m.Ref, true
	case *messages.ImportImageChunk:
		return "upload " + m.UploadId, true
	case *messages.JoinTokenRequest:
		t := strings.ToLower(strings.TrimPrefix(m.Role.String(), "NODE_ROLE_")) + " token"
		if m.Rotate {
			t += " (rotate)"
		}
		return t, true
	case *messages.DebugCrash:
		return m.Actor, true
	}
	return "", false
}
