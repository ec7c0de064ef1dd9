package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// planDeployment decides what an update of svc to spec starts: nothing
// new (a scale, a change of the update settings: nil), a deployment in its
// first state, or a refusal that changes nothing (no change at all, a
// template change while a deployment is in flight, a strategy the service
// cannot use).
func planDeployment(svc *messages.Service, spec *messages.ServiceSpec) (*messages.Deployment, *messages.Error) {
	name := svc.Spec.GetName()
	if proto.Equal(svc.Spec, spec) {
		return nil, errReply(messages.ErrorCode_ERROR_CODE_INVALID, "service %s already runs this spec (version %d): nothing to update; change the image, a setting or the replicas", name, svc.SpecVersion)
	}
	if messages.TemplateEqual(svc.Spec, spec) {
		return nil, nil
	}
	if d := svc.Deployment; messages.DeploymentActive(svc) {
		return nil, errReply(messages.ErrorCode_ERROR_CODE_CONFLICT,
			"service %s has a %s deployment in flight (%s, version %d to %d): wait for it (`warren service deployment %s --follow`) or roll it back (`warren service rollback %s`), then update",
			name, strategyName(d.Strategy), stateName(d.State), d.FromVersion, d.ToVersion, name, name)
	}
	uc := spec.GetUpdateConfig()
	d := &messages.Deployment{Id: messages.NewID(), Strategy: uc.GetStrategy()}
	global := spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL
	switch d.Strategy {
	case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
		if global {
			return nil, errReply(messages.ErrorCode_ERROR_CODE_INVALID, "service %s is global (one task per node): blue/green needs a second set of replicas; use --strategy rolling", name)
		}
		d.State, d.Total = messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_GREEN, uint32(spec.Replicas)
	case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
		if global {
			return nil, errReply(messages.ErrorCode_ERROR_CODE_INVALID, "service %s is global (one task per node): a canary needs extra replicas; use --strategy rolling", name)
		}
		d.State = messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_CANARY
		d.CanaryReplicas, d.Weight = max(uc.GetCanaryReplicas(), 1), uc.GetCanaryWeight()
		if d.Weight == 0 {
			d.Weight = defaultWeight
		}
		d.Total = d.CanaryReplicas
	default:
		d.State = messages.DeploymentState_DEPLOYMENT_STATE_STARTING_BATCH
		d.Total = uint32(min(spec.Replicas, svc.Spec.Replicas))
	}
	return d, nil
}

func strategyName(s messages.DeployStrategy) string {
	switch s {
	case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
		return "blue/green"
	case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
		return "canary"
	}
	return "rolling"
}

// toDeployment hands a control request (promote, pause, resume, rollback
// in flight) to the service's deployment actor, which answers it in its
// current state. Right after an update commits, the actor may still be
// starting: the request waits for it until deadline.
func (a *servicesAPI) toDeployment(ctx actor.Context, name string, deadline time.Time) {
	v := a.cfg.Store.State.ServiceByName(name)
	if v == nil {
		ctx.Respond(&messages.ServiceReply{Error: notFound("service", name)})
		return
	}
	if !messages.DeploymentActive(v) {
		last := "none yet"
		if d := v.Deployment; d != nil {
			last = stateName(d.State)
		}
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID,
			"service %s has no deployment in flight (last: %s): start one with `warren service update %s`", name, last, name)})
		return
	}
	if m, ok := ctx.Message().(*messages.PromoteServiceRequest); ok && !m.Full && (m.Weight < 1 || m.Weight > 100) {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "weight %d is outside 1-100: give the canary's percentage of requests, or promote without --weight to go all the way", m.Weight)})
		return
	}
	id := NameLeader + "/services/" + name + "/deployment"
	if _, ok := ctx.ActorSystem().ProcessRegistry.GetLocal(id); !ok {
		if time.Now().Before(deadline) {
			after(ctx, 50*time.Millisecond, func() { a.toDeployment(ctx, name, deadline) })
			return
		}
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "the deployment of service %s is starting on the leader: retry", name)})
		return
	}
	f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, id), ctx.Message(), writeTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		if err != nil {
			ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "the deployment did not answer (%v): check `warren service deployment %s` and retry", err, name)})
			return
		}
		ctx.Respond(res)
	})
}

// rollback stops a deployment in flight where it is and returns to the
// previous spec; after one finished, it deploys the previous spec again,
// with the service's strategy, as an update would.
func (a *servicesAPI) rollback(ctx actor.Context, m *messages.RollbackServiceRequest) {
	v := a.cfg.Store.State.ServiceByName(m.Name)
	if v == nil {
		ctx.Respond(&messages.ServiceReply{Error: notFound("service", m.Name)})
		return
	}
	if messages.DeploymentActive(v) {
		a.toDeployment(ctx, m.Name, time.Now().Add(3*time.Second))
		return
	}
	if v.PreviousSpec == nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "service %s has no previous spec to roll back to (it was never updated)", m.Name)})
		return
	}
	spec := proto.Clone(v.PreviousSpec).(*messages.ServiceSpec)
	spec.UpdateConfig, spec.Replicas = v.Spec.UpdateConfig, v.Spec.Replicas // roll the way the service rolls now
	dep, err := planDeployment(v, spec)
	if err != nil {
		ctx.Respond(&messages.ServiceReply{Error: err})
		return
	}
	if dep != nil {
		dep.Rollback = true
	}
	a.propose(ctx, updateCommand(v, spec, dep), v.Id)
}

// updateCommand moves v to spec, starting dep (if any) in the same entry
// with the traffic shares of its first state. It carries v's version, so a
// change that slipped in since v was read is refused.
func updateCommand(v *messages.Service, spec *messages.ServiceSpec, dep *messages.Deployment) *messages.Command {
	u := &messages.UpdateService{ServiceId: v.Id, ExpectedVersion: v.Meta.GetVersion(), Spec: spec}
	if dep != nil {
		u.Deployment = dep
		// The store numbers the versions; the shares need them now.
		u.TrafficWeights = weightsFor(&messages.Deployment{Strategy: dep.Strategy, FromVersion: v.SpecVersion, ToVersion: v.SpecVersion + 1, Weight: dep.Weight}, dep.State)
	}
	return &messages.Command{Op: &messages.Command_UpdateService{UpdateService: u}}
}
