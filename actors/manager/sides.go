package manager

import (
	"strconv"

	"github.com/warrenorch/warren/messages"
)

// Sides of a deployment, as tasks record them (Task.side) and `service ps`
// shows them. A task outside any deployment is stable ("").
const (
	sideStable = ""
	sideBlue   = "blue"
	sideGreen  = "green"
	sideCanary = "canary"
)

// side is one spec a slot should run. During a deployment a slot may want
// two (blue and green side by side); otherwise it wants one.
type side struct {
	spec    *messages.ServiceSpec
	version uint64
	name    string
}

// slotKey names a slot in Deployment.updated: its number for a replicated
// service, its node for a global one (a global service's slots follow the
// nodes, whose order may change).
func slotKey(svc *messages.Service, slot uint64, node string) string {
	if svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		return node
	}
	return strconv.FormatUint(slot, 10)
}

// effectiveState is the state whose tasks a deployment keeps: a paused one
// holds its tasks where the state it paused in had them.
func effectiveState(d *messages.Deployment) messages.DeploymentState {
	if d.State == messages.DeploymentState_DEPLOYMENT_STATE_PAUSED {
		return d.PausedFrom
	}
	return d.State
}

// canarySlots is the number of canary tasks a deployment runs beside the
// stable replicas while it runs them (none once it rolls back or ends).
func canarySlots(svc *messages.Service) uint64 {
	d := svc.GetDeployment()
	if !messages.DeploymentActive(svc) || d.Strategy != messages.DeployStrategy_DEPLOY_STRATEGY_CANARY ||
		effectiveState(d) == messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK {
		return 0
	}
	return uint64(d.CanaryReplicas)
}

// wantedSides is what slot (running on node, for a global service) should
// run. Without a deployment in flight: the service's spec. During one, the
// deployment's committed state decides, so the service actor only ever
// converges to a transition already in raft:
//   - rolling (and a canary's promotion): a slot in `updated` runs the new
//     spec, any other the old one; rolling back, all run the old one;
//   - blue/green: both until blue is cleaned up (then green only), or
//     until a rollback (then blue only);
//   - canary: the stable slots run the old spec, the slots beyond them the
//     new one (the canaries).
//
// A slot the previous spec did not have (the update added replicas) runs
// the new spec at once: there is nothing to roll.
func wantedSides(svc *messages.Service, slot uint64, node string) []side {
	cur := side{spec: svc.Spec, version: svc.SpecVersion}
	if !messages.DeploymentActive(svc) || svc.PreviousSpec == nil {
		return []side{cur}
	}
	d := svc.Deployment
	// Rolling tasks are stable on either version: `service ps` tells them
	// apart by version.
	from := side{spec: svc.PreviousSpec, version: d.FromVersion, name: sideStable}
	to := side{spec: svc.Spec, version: d.ToVersion, name: sideStable}
	state := effectiveState(d)
	rollingBack := state == messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK
	global := svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL
	if !global && slot > svc.PreviousSpec.Replicas && slot <= svc.Spec.Replicas && !rollingBack {
		return []side{to}
	}
	switch d.Strategy {
	case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
		from.name, to.name = sideBlue, sideGreen
		switch state {
		case messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK:
			return []side{from}
		case messages.DeploymentState_DEPLOYMENT_STATE_CLEANING_BLUE:
			return []side{to}
		}
		return []side{from, to}
	case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
		if !global && slot > svc.Spec.Replicas {
			to.name = sideCanary
			return []side{to} // only asked for while canarySlots counts it
		}
	}
	if rollingBack {
		return []side{from}
	}
	key := slotKey(svc, slot, node)
	for _, k := range d.Updated {
		if k == key {
			return []side{to}
		}
	}
	return []side{from}
}

// sideOf is the side task t is on now. Tasks record the side they were
// created for; tasks that were already running when a deployment started
// are its blue (blue/green) or stable (canary) side; once no deployment is
// in flight every task is stable (the canary label retires with it).
func sideOf(svc *messages.Service, t *messages.Task) string {
	if !messages.DeploymentActive(svc) || svc.PreviousSpec == nil {
		return sideStable
	}
	switch svc.Deployment.Strategy {
	case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
		switch {
		case messages.TemplateEqual(t.Spec, svc.Spec):
			return sideGreen
		case messages.TemplateEqual(t.Spec, svc.PreviousSpec):
			return sideBlue
		}
	case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
		if t.Slot > svc.Spec.Replicas && messages.TemplateEqual(t.Spec, svc.Spec) {
			return sideCanary
		}
	}
	return t.Side
}
