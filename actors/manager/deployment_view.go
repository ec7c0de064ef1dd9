package manager

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/warrenorch/warren/messages"
)

// deployView is what a deployment actor decides from: the service with its
// committed deployment, the service's tasks and the nodes, read from the
// local replica at one instant. Its methods are pure, so the decisions of
// every state are tested without actors.
type deployView struct {
	svc   *messages.Service
	d     *messages.Deployment
	tasks []*messages.Task
	nodes []*messages.Node
	now   time.Time
}

// Defaults of a rollout, as Swarm's where Swarm has one; failure action
// rollback rather than Swarm's pause (a paused rollout leaves mixed
// versions serving).
const (
	defaultMonitor = 5 * time.Second
	defaultGrace   = 30 * time.Second
	defaultWeight  = 10
)

func (v *deployView) cfg() *messages.UpdateConfig { return v.svc.Spec.GetUpdateConfig() }

func (v *deployView) monitor() time.Duration {
	if ms := v.cfg().GetMonitorMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return defaultMonitor
}

func (v *deployView) grace() time.Duration {
	if ms := v.cfg().GetGraceMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return defaultGrace
}

func (v *deployView) since() time.Time { return time.Unix(0, v.d.StateSinceUnixNano) }

// ready: a task counts once it runs and, if it has a health check, passes
// it. Time alone never makes a task count.
func ready(t *messages.Task) bool {
	st := t.GetStatus()
	if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING || st.GetState() != messages.TaskState_TASK_STATE_RUNNING {
		return false
	}
	if t.Spec.GetHealthCheck().GetKind() != messages.HealthCheck_KIND_NONE {
		return st.GetHealth() == messages.HealthState_HEALTH_STATE_HEALTHY
	}
	return true
}

// failedHow says how a task of the new spec failed ("" if it has not): it
// could not start, exited (the worker restarts it; a restart is a
// failure), or failed its health check.
func failedHow(t *messages.Task) string {
	st := t.GetStatus()
	switch {
	case st.GetState() == messages.TaskState_TASK_STATE_REJECTED:
		return "rejected: " + st.GetErr()
	case st.GetState() == messages.TaskState_TASK_STATE_FAILED:
		return fmt.Sprintf("exited (code %d)", st.GetExitCode())
	case st.GetRestartCount() > 0:
		return fmt.Sprintf("restarted %d times", st.GetRestartCount())
	case st.GetHealth() == messages.HealthState_HEALTH_STATE_UNHEALTHY:
		return "unhealthy"
	}
	return ""
}

// isNew: the task runs the deployed spec and was created by this deployment.
func (v *deployView) isNew(t *messages.Task) bool {
	return t.GetMeta().GetCreatedUnixNano() >= v.d.StartedUnixNano && messages.TemplateEqual(t.Spec, v.svc.Spec)
}

func (v *deployView) isOld(t *messages.Task) bool {
	return v.svc.PreviousSpec != nil && messages.TemplateEqual(t.Spec, v.svc.PreviousSpec)
}

// failures adds the new tasks that failed since the deployment started to
// the ones already recorded, and returns them with a reason for the newest.
func (v *deployView) failures() (ids []string, why string) {
	ids = slices.Clone(v.d.FailedTasks)
	for _, t := range v.tasks {
		if !v.isNew(t) {
			continue
		}
		if how := failedHow(t); how != "" {
			if !slices.Contains(ids, t.Id) {
				ids = append(ids, t.Id)
			}
			why = fmt.Sprintf("task %s on slot %d %s", t.Id, t.Slot, how)
		}
	}
	return ids, why
}

// tooManyFailed: more new tasks failed than max_failure_ratio allows of
// the tasks the deployment moves (ratio 0: any failure).
func (v *deployView) tooManyFailed(failed int) bool {
	if failed == 0 {
		return false
	}
	total := max(int(v.d.Total), 1)
	return float64(failed)/float64(total) > float64(v.cfg().GetMaxFailureRatio())
}

// plan is every slot key a rolling deployment moves, in order: the slots
// both specs have (slots the update added start on the new spec at once).
func (v *deployView) plan() []string {
	if v.svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		var keys []string
		for _, n := range eligible(v.svc, v.nodes) {
			keys = append(keys, n.Id)
		}
		sort.Strings(keys)
		return keys
	}
	n := v.svc.Spec.Replicas
	if p := v.svc.PreviousSpec; p != nil && p.Replicas < n {
		n = p.Replicas
	}
	keys := make([]string, 0, n)
	for s := uint64(1); s <= n; s++ {
		keys = append(keys, strconv.FormatUint(s, 10))
	}
	return keys
}

// nextBatch is the next parallelism slots of the plan not moved yet.
func (v *deployView) nextBatch() []string {
	var rest []string
	for _, k := range v.plan() {
		if !slices.Contains(v.d.Updated, k) {
			rest = append(rest, k)
		}
	}
	// 0 (unset) is the default, one at a time, as in Swarm; the CLI's
	// "all at once" sends the replica limit.
	if p := max(int(v.cfg().GetParallelism()), 1); len(rest) > p {
		rest = rest[:p]
	}
	return rest
}

func (v *deployView) keyOf(t *messages.Task) string { return slotKey(v.svc, t.Slot, t.NodeId) }

// settled: every slot in keys runs a ready task of the new spec (or, with
// failure action continue, gave up on one that failed).
func (v *deployView) settled(keys []string) bool {
	cont := v.cfg().GetFailureAction() == messages.FailureAction_FAILURE_ACTION_CONTINUE
	for _, k := range keys {
		ok := false
		for _, t := range v.tasks {
			if v.keyOf(t) == k && v.isNew(t) && (ready(t) || cont && failedHow(t) != "") {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// sideReady counts the tasks of one side (by template) that should run
// and the ready ones among them.
func (v *deployView) sideReady(spec *messages.ServiceSpec, side string) (running, readyN int) {
	for _, t := range v.tasks {
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING || !messages.TemplateEqual(t.Spec, spec) || (side != "" && t.Side != side) {
			continue
		}
		running++
		if ready(t) {
			readyN++
		}
	}
	return running, readyN
}

// greenReady: every replica has a ready green task.
func (v *deployView) greenReady() bool {
	_, n := v.sideReady(v.svc.Spec, sideGreen)
	return uint64(n) >= v.svc.Spec.Replicas
}

func (v *deployView) canariesReady() bool {
	_, n := v.sideReady(v.svc.Spec, sideCanary)
	return n >= int(v.d.CanaryReplicas)
}

// oldGone: no task of the previous spec is still meant to run (blue is
// cleaned up).
func (v *deployView) oldGone() bool {
	for _, t := range v.tasks {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING && v.isOld(t) && !messages.TemplateEqual(t.Spec, v.svc.Spec) {
			return false
		}
	}
	return true
}

// rolledBack: nothing of the new spec is meant to run any more and every
// slot runs the previous spec.
func (v *deployView) rolledBack() bool {
	running := 0
	for _, t := range v.tasks {
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			continue
		}
		if messages.TemplateEqual(t.Spec, v.svc.Spec) {
			return false
		}
		if v.isOld(t) && t.GetStatus().GetState() == messages.TaskState_TASK_STATE_RUNNING {
			running++
		}
	}
	want := int(v.svc.Spec.Replicas)
	if v.svc.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		want = len(eligible(v.svc, v.nodes))
	}
	return running >= want
}

// weightsFor gives the traffic shares of a state: blue/green sends all to
// one side, a canary splits by its weight; nil means every ready task
// shares equally.
func weightsFor(d *messages.Deployment, state messages.DeploymentState) map[uint64]uint32 {
	if messages.DeploymentFinished(state) {
		return nil // one version runs: every task shares
	}
	switch d.Strategy {
	case messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN:
		switch state {
		case messages.DeploymentState_DEPLOYMENT_STATE_SWITCHED, messages.DeploymentState_DEPLOYMENT_STATE_GRACE,
			messages.DeploymentState_DEPLOYMENT_STATE_CLEANING_BLUE:
			return map[uint64]uint32{d.ToVersion: 100}
		}
		return map[uint64]uint32{d.FromVersion: 100}
	case messages.DeployStrategy_DEPLOY_STRATEGY_CANARY:
		switch state {
		case messages.DeploymentState_DEPLOYMENT_STATE_DEPLOYING_CANARY, messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED:
			if d.Weight >= 100 {
				return map[uint64]uint32{d.ToVersion: 100}
			}
			return map[uint64]uint32{d.FromVersion: 100 - d.Weight, d.ToVersion: d.Weight}
		case messages.DeploymentState_DEPLOYMENT_STATE_ROLLING_BACK:
			return map[uint64]uint32{d.FromVersion: 100}
		}
	}
	return nil
}

// stateName is the lower-case, dashed name users see (awaiting-health).
func stateName(s messages.DeploymentState) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "DEPLOYMENT_STATE_")), "_", "-")
}
