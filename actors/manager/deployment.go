package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// deploymentActor (manager/leader/services/<name>/deployment) drives one
// service's deployment from previous_spec to spec. Each state is a
// behaviour (deployment_states.go) that decides, from replicated state,
// whether to move on; every move is committed to raft (SetDeployment)
// before anything acts on it, and the service actor then converges the
// tasks to the committed state. So a new leader's deployment actor simply
// resumes in the committed state: nothing was done that raft does not
// know, and nothing is done twice.
type deploymentActor struct {
	cfg      LeaderConfig
	svcID    string
	behavior actor.Behavior
	state    messages.DeploymentState // the behaviour we are in
	index    uint64                   // the transition it was chosen for
	busy     bool                     // a transition is being committed
	queued   bool                     // an evaluate is in the mailbox
	stash    []stashed                // controls that came while busy
	wake     scheduler.CancelFunc
	every    scheduler.CancelFunc
	confirm  uint64 // the switch index the leader was asked to confirm
}

// stashed is a control request held until the transition in flight is
// committed, with the sender to answer.
type stashed struct {
	msg    any
	sender *actor.PID
}

// evaluate asks the current behaviour to decide again; deployTick is its
// timer (a monitor window, a delay or a grace period ends).
type (
	evaluate   struct{}
	deployTick struct{}
)

func newDeployment(cfg LeaderConfig, svcID string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		a := &deploymentActor{cfg: cfg, svcID: svcID, behavior: actor.NewBehavior()}
		a.behavior.Become(a.paused) // replaced on the first sync
		return a
	}, events.WithLifecycle)
}

func (a *deploymentActor) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		// State changes drive it; the slow tick only covers what is not
		// in raft (a node confirming a switch) and lost timers.
		a.every = scheduler.NewTimerScheduler(ctx).SendRepeatedly(2*time.Second, 2*time.Second, ctx.Self(), &deployTick{})
		a.poke(ctx)
		return
	case *actor.Stopping, *actor.Restarting:
		a.cancelWake()
		if a.every != nil {
			a.every()
		}
		return
	case *messages.StateChanged, *deployTick:
		a.poke(ctx)
		return
	case *evaluate:
		a.queued = false
		if !a.sync(ctx) || a.busy {
			return
		}
	case *messages.PromoteServiceRequest, *messages.RollbackServiceRequest, *messages.PauseServiceRequest, *messages.ResumeServiceRequest:
		if !a.sync(ctx) {
			ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "the deployment just finished: see `warren service deployment`")})
			return
		}
		if a.busy {
			a.stash = append(a.stash, stashed{msg: ctx.Message(), sender: ctx.Sender()})
			return
		}
	default:
		return // lifecycle messages (Stopped, Terminated ...): no state acts on them
	}
	a.behavior.Receive(ctx)
}

// poke queues one evaluate, however many changes arrive meanwhile.
func (a *deploymentActor) poke(ctx actor.Context) {
	if !a.queued {
		a.queued = true
		ctx.Send(ctx.Self(), &evaluate{})
	}
}

func (a *deploymentActor) cancelWake() {
	if a.wake != nil {
		a.wake()
		a.wake = nil
	}
}

// wakeAt evaluates again at t (a window or a delay ends).
func (a *deploymentActor) wakeAt(ctx actor.Context, t time.Time) {
	a.cancelWake()
	a.wake = scheduler.NewTimerScheduler(ctx).SendOnce(max(time.Until(t), time.Millisecond), ctx.Self(), &deployTick{})
}

// sync takes the committed state as the behaviour, or stops the actor
// when the service has no deployment in flight any more.
func (a *deploymentActor) sync(ctx actor.Context) bool {
	svc := a.cfg.Store.State.Service(a.svcID)
	if svc == nil || !messages.DeploymentActive(svc) {
		ctx.Stop(ctx.Self())
		return false
	}
	d := svc.Deployment
	if d.State != a.state || d.Index != a.index {
		if d.State != a.state {
			a.cfg.Log.Info("deployment state", zap.String("service", svc.Spec.GetName()), zap.String("strategy", d.Strategy.String()),
				zap.String("state", stateName(d.State)), zap.Uint64("index", d.Index))
		}
		a.state, a.index = d.State, d.Index
		a.cancelWake()
		a.behavior.Become(a.behaviourFor(d.State))
	}
	return true
}

func (a *deploymentActor) behaviourFor(s messages.DeploymentState) actor.ReceiveFunc {
	switch s {
	case messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH, messages.DeploymentState_DEPLOYMENT_STATE_PROMOTING:
		return a.startingBatch
	case messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_HEALTH:
		return a.awaitingHealth
	case messages.DeploymentState_DEPLOYMENT_STATE_MONITORING:
		return a.monitoring
	case messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_GREEN:
		return a.deployingGreen
	case messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION:
		return a.awaitingPromotion
	case messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED:
		return a.switched
	case messages.DeploymentState_DEPLOYMENT_STATE_GRACE:
		return a.grace
	case messages.DeploymentState_DEPLOYMENT_STATE_CLEANING_BLUE:
		return a.cleaningBlue
	case messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_CANARY:
		return a.deployingCanary
	case messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED:
		return a.weighted
	case messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK:
		return a.rollingBack
	}
	return a.paused
}

// view reads what the behaviours decide from.
func (a *deploymentActor) view() *deployView {
	st := a.cfg.Store.State
	svc := st.Service(a.svcID)
	return &deployView{svc: svc, d: svc.GetDeployment(), tasks: st.Tasks(store.TaskFilter{ServiceID: a.svcID}), nodes: st.Nodes(), now: time.Now()}
}

// next is the deployment moved to state, as the behaviours build their
// transitions from.
func next(d *messages.Deployment, state messages.DeploymentState) *messages.Deployment {
	n := proto.Clone(d).(*messages.Deployment)
	n.State = state
	return n
}

// commit writes one transition (restore: the previous spec becomes the
// spec again) and then answers reply, if any, with the service as
// committed. While it is in flight nothing else is decided; controls that
// arrive meanwhile wait for it.
func (a *deploymentActor) commit(ctx actor.Context, v *deployView, n *messages.Deployment, restore bool, reply *actor.PID) {
	cmd := &messages.Command{Op: &messages.Command_SetDeployment{SetDeployment: &messages.SetDeployment{
		ServiceId: a.svcID, ExpectedIndex: v.d.Index, Deployment: n,
		TrafficWeights: weightsFor(n, effectiveState(n)), RestorePrevious: restore,
	}}}
	a.busy = true
	write(ctx, cmd, proposeTimeout+2*time.Second, func(e *messages.Error) {
		a.busy = false
		if e != nil {
			a.cfg.Log.Warn("deployment transition not committed; deciding again", zap.String("service", v.svc.Spec.GetName()),
				zap.String("to", stateName(n.State)), zap.String("error", e.Message))
		}
		if reply != nil {
			r := &messages.ServiceReply{Error: e}
			if e == nil {
				r.Service = a.cfg.Store.State.Service(a.svcID)
			}
			ctx.Send(reply, r)
		}
		for _, s := range a.stash {
			ctx.RequestWithCustomSender(ctx.Self(), s.msg, s.sender)
		}
		a.stash = nil
		a.poke(ctx)
	})
}
