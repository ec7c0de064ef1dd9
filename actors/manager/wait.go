package manager

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// defaultWait bounds a WaitServiceRequest that names no timeout.
const defaultWait = 2 * time.Minute

// Progress is how far a service is from what its spec asks.
type Progress struct {
	Desired, Ready uint64
	// Stopping counts tasks the service no longer wants that still run.
	Stopping int
	// LastError is the newest failure message among its tasks.
	LastError string
}

// Converged: every wanted task runs the current spec, healthy, and nothing
// unwanted is left running.
func (p Progress) Converged() bool { return p.Ready == p.Desired && p.Stopping == 0 }

// ServiceProgress derives a service's progress from replicated state.
func ServiceProgress(svc *messages.Service, tasks []*messages.Task, nodes []*messages.Node) Progress {
	p := Progress{Desired: svc.Spec.GetReplicas()}
	if svc.Spec.GetMode() == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		p.Desired = uint64(len(eligible(svc, nodes)))
	}
	var newest int64
	for _, t := range tasks {
		st := t.GetStatus()
		switch {
		case t.DesiredState == messages.TaskState_TASK_STATE_RUNNING:
			// A scale bumps the spec version without replacing tasks:
			// what counts is that the task runs the current template.
			current := t.SpecVersion == svc.SpecVersion || messages.TemplateEqual(t.Spec, svc.Spec)
			if current && Healthy(t) {
				p.Ready++
			}
		case !terminal(st.GetState()):
			p.Stopping++
		}
		switch st.GetState() {
		case messages.TaskState_TASK_STATE_FAILED, messages.TaskState_TASK_STATE_REJECTED:
			if st.GetMessage() != "" && st.GetTimestampUnixNano() >= newest {
				newest, p.LastError = st.GetTimestampUnixNano(), st.GetMessage()
			}
		}
	}
	return p
}

// waiter answers one WaitServiceRequest once the service converges, goes
// away or time runs out. It reads the local replica on every state change,
// so the answer follows the change that made it true without polling.
type waiter struct {
	st      *store.State
	req     *messages.WaitServiceRequest
	replyTo *actor.PID
	svcID   string
	sub     *eventstream.Subscription
	cancel  []scheduler.CancelFunc
	// lookFor is until when a service not yet in this replica may still
	// arrive: a follower answering right after a create through the
	// leader may not have applied it yet.
	lookFor time.Time
}

// replicaLag bounds how long a waiter looks for a service it cannot find.
const replicaLag = 2 * time.Second

func newWaiter(st *store.State, req *messages.WaitServiceRequest, replyTo *actor.PID) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &waiter{st: st, req: req, replyTo: replyTo} })
}

func (w *waiter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		w.sub = subscribeState(ctx, func(*messages.StateChanged) bool { return true })
		timeout := time.Duration(w.req.TimeoutMs) * time.Millisecond
		if timeout <= 0 {
			timeout = defaultWait
		}
		w.lookFor = time.Now().Add(replicaLag)
		s := scheduler.NewTimerScheduler(ctx)
		w.cancel = append(w.cancel, s.SendOnce(timeout, ctx.Self(), &tick{kind: "timeout"}),
			s.SendOnce(replicaLag, ctx.Self(), &tick{kind: "lag"}))
		w.check(ctx, false)
	case *messages.StateChanged:
		w.check(ctx, false)
	case *tick:
		w.check(ctx, m.kind == "timeout")
	case *actor.Stopping:
		unsubscribe(ctx, w.sub)
		for _, c := range w.cancel {
			c()
		}
	}
}

func (w *waiter) check(ctx actor.Context, timedOut bool) {
	var v *messages.Service
	if w.svcID == "" {
		if v = w.st.ServiceByName(w.req.Name); v == nil {
			v = w.st.Service(w.req.Name)
		}
		if v != nil {
			w.svcID = v.Id
		}
	} else {
		v = w.st.Service(w.svcID)
	}
	if v == nil {
		if w.svcID == "" && !timedOut && time.Now().Before(w.lookFor) {
			return
		}
		w.answer(ctx, &messages.WaitServiceReply{Error: notFound("service", w.req.Name)})
		return
	}
	p := ServiceProgress(v, w.st.Tasks(store.TaskFilter{ServiceID: v.Id}), w.st.Nodes())
	reply := &messages.WaitServiceReply{Service: v, Desired: p.Desired, Ready: p.Ready, LastError: p.LastError}
	switch {
	case p.Converged():
		w.answer(ctx, reply)
	case timedOut:
		why := fmt.Sprintf("service %s has not converged: %d of %d tasks ready", v.Spec.Name, p.Ready, p.Desired)
		if p.Stopping > 0 {
			why += fmt.Sprintf(", %d still stopping", p.Stopping)
		}
		if p.LastError != "" {
			why += "; last task error: " + p.LastError
		}
		reply.Error = errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "%s. See `warren service ps %s`", why, v.Spec.Name)
		w.answer(ctx, reply)
	}
}

func (w *waiter) answer(ctx actor.Context, r *messages.WaitServiceReply) {
	ctx.Send(w.replyTo, r)
	ctx.Stop(ctx.Self())
}
