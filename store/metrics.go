package store

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenorch/warren/messages"
)

// Cluster and raft metrics, read from this manager's replica on each
// scrape (nothing is counted on the write path): every manager reports
// the same cluster figures, and its own raft figures.
var (
	descNodes = prometheus.NewDesc("warren_nodes", "Nodes by state, role and availability.",
		[]string{"state", "role", "availability"}, nil)
	descServices     = prometheus.NewDesc("warren_services", "Services.", nil, nil)
	descTasksDesired = prometheus.NewDesc("warren_service_tasks_desired", "Tasks a service wants running (replicas; for a global service, its tasks meant to run).",
		[]string{"service", "mode"}, nil)
	descTasksRunning = prometheus.NewDesc("warren_service_tasks_running", "Tasks of a service meant to run that run.",
		[]string{"service"}, nil)
	descTasks       = prometheus.NewDesc("warren_tasks", "Task records by current state and desired state.", []string{"state", "desired"}, nil)
	descDeployments = prometheus.NewDesc("warren_deployments_in_flight", "Deployments in flight by strategy and state.",
		[]string{"strategy", "state"}, nil)
	descLeader   = prometheus.NewDesc("warren_raft_leader", "1 if this manager is the raft leader.", nil, nil)
	descRaftStat = prometheus.NewDesc("warren_raft", "Raft figures of this manager (term, commit_index, applied_index, last_log_index, last_snapshot_index, num_peers).",
		[]string{"stat"}, nil)
	descIndex = prometheus.NewDesc("warren_state_index", "Raft index of the state this manager's replica has applied.", nil, nil)
	descSnap  = prometheus.NewDesc("warren_raft_snapshot_size_bytes", "Size of this manager's newest raft snapshot (0: none taken yet).", nil, nil)
	// descApply is the apply histogram's Desc; every store's histogram is
	// built from the same options, so it has this Desc too.
	descApply = newApplyHistogram().Desc()
)

// newApplyHistogram is the time from proposing a command to its being
// applied on this manager (the leader): commit by a majority plus the FSM.
func newApplyHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "warren_raft_apply_duration_seconds",
		Help:    "Time from proposing a command to raft until it is applied on this manager (successful proposals).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
}

// snapshotSize is the size of the newest snapshot on disk, 0 when none.
func (s *Store) snapshotSize() int64 {
	metas, err := s.snaps.List()
	if err != nil || len(metas) == 0 {
		return 0
	}
	return metas[0].Size // List is newest first
}

// raftStats are the raft.Stats keys exported, each a number.
var raftStats = []string{"term", "commit_index", "applied_index", "last_log_index", "last_snapshot_index", "num_peers"}

// collector exposes a store that may come and go (a worker promoted to
// manager, a manager stopping): get returns nil when there is none.
type collector struct{ get func() *Store }

// NewCollector returns a Prometheus collector of the cluster and raft
// metrics of the store get returns at scrape time (none while it is nil).
func NewCollector(get func() *Store) prometheus.Collector { return collector{get: get} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodes, descServices, descTasksDesired, descTasksRunning, descTasks, descDeployments, descLeader, descRaftStat, descIndex, descSnap, descApply} {
		ch <- d
	}
}

func lowerName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.get()
	if s == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := s.State
	type nodeKey struct{ state, role, avail string }
	nodes := map[nodeKey]int{}
	for _, n := range st.Nodes() {
		nodes[nodeKey{lowerName(n.GetStatus().GetState().String(), "NODE_STATE_"), lowerName(n.GetSpec().GetRole().String(), "NODE_ROLE_"),
			lowerName(n.GetSpec().GetAvailability().String(), "NODE_AVAILABILITY_")}]++
	}
	for k, v := range nodes {
		gauge(descNodes, float64(v), k.state, k.role, k.avail)
	}
	type taskKey struct{ state, desired string }
	tasks := map[taskKey]int{}
	running, meant := map[string]int{}, map[string]int{}
	for _, t := range st.Tasks(TaskFilter{}) {
		tasks[taskKey{lowerName(t.GetStatus().GetState().String(), "TASK_STATE_"), lowerName(t.DesiredState.String(), "TASK_STATE_")}]++
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING {
			meant[t.ServiceId]++
			if t.GetStatus().GetState() == messages.TaskState_TASK_STATE_RUNNING {
				running[t.ServiceId]++
			}
		}
	}
	for k, v := range tasks {
		gauge(descTasks, float64(v), k.state, k.desired)
	}
	services := st.Services()
	gauge(descServices, float64(len(services)))
	deployments := map[[2]string]int{}
	for _, v := range services {
		name := v.Spec.GetName()
		desired, mode := float64(v.Spec.GetReplicas()), "replicated"
		if v.Spec.GetMode() == messages.ServiceMode_SERVICE_MODE_GLOBAL {
			desired, mode = float64(meant[v.Id]), "global"
		}
		gauge(descTasksDesired, desired, name, mode)
		gauge(descTasksRunning, float64(running[v.Id]), name)
		if messages.DeploymentActive(v) {
			d := v.Deployment
			deployments[[2]string{lowerName(d.Strategy.String(), "DEPLOY_STRATEGY_"), lowerName(d.State.String(), "DEPLOYMENT_STATE_")}]++
		}
	}
	for k, v := range deployments {
		gauge(descDeployments, float64(v), k[0], k[1])
	}
	leader := 0.0
	if s.IsLeader() {
		leader = 1
	}
	gauge(descLeader, leader)
	gauge(descIndex, float64(st.Index()))
	gauge(descSnap, float64(s.snapshotSize()))
	s.applyDur.Collect(ch)
	stats := s.Stats()
	for _, k := range raftStats {
		if v, err := strconv.ParseFloat(stats[k], 64); err == nil {
			gauge(descRaftStat, v, k)
		}
	}
}
