package manager

import (
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// The manager's own metrics: api latency and placement latency are
// observed by the actors as they work; pending tasks by reason are read
// from the replica at scrape. The histograms are process-wide (one node per
// process): the actors that observe them are spawned from configs that
// carry no metrics handle, and a node's restart must not reset them.
var (
	apiDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warren_api_request_duration_seconds",
		Help:    "Time from a request's arrival at this manager's api to each reply its handler sends, by request type (a follower's write is counted on the leader that decides it).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"method"})
	placementDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "warren_scheduler_placement_duration_seconds",
		Help:    "Time from a task's creation to its assignment to a node being committed (tasks placed as they are created: from the placement request).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	})
	descPending = prometheus.NewDesc("warren_scheduler_pending_tasks", "Tasks meant to run that no node takes, by reason (a task refused for several reasons counts under each).",
		[]string{"reason"}, nil)
)

// pendingReasons map the scheduler's refusals (place.go's filters and
// explain) to a bounded label; "unplaced" is a task not yet looked at.
var pendingReasons = []struct{ match, label string }{
	{"no nodes yet", "no_nodes"},
	{"node not ready", "node_not_ready"},
	{"node not active", "node_not_active"},
	{"constraints not met", "constraints"},
	{"insufficient memory", "insufficient_memory"},
	{"insufficient cpu", "insufficient_cpu"},
}

// PendingReasons names the reasons of a pending task's scheduler message.
func PendingReasons(msg string) []string {
	var out []string
	for _, r := range pendingReasons {
		if strings.Contains(msg, r.match) {
			out = append(out, r.label)
		}
	}
	if len(out) == 0 {
		out = append(out, "unplaced")
	}
	return out
}

type metricsCollector struct{ get func() *store.Store }

// NewCollector returns the manager's metrics: api and placement latency,
// and the pending tasks of the store get returns at scrape (none while it
// is nil, on a worker).
func NewCollector(get func() *store.Store) prometheus.Collector { return metricsCollector{get: get} }

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	apiDuration.Describe(ch)
	placementDuration.Describe(ch)
	ch <- descPending
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	apiDuration.Collect(ch)
	placementDuration.Collect(ch)
	s := c.get()
	if s == nil {
		return
	}
	pending := map[string]int{}
	for _, l := range pendingReasons {
		pending[l.label] = 0 // every reason exported, so a dashboard's query has a series
	}
	pending["unplaced"] = 0
	for _, t := range s.State.Tasks(store.TaskFilter{}) {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING && t.NodeId == "" {
			for _, r := range PendingReasons(t.GetStatus().GetMessage()) {
				pending[r]++
			}
		}
	}
	for r, v := range pending {
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(v), r)
	}
}

// observePlacement records the placement latency of tasks just assigned,
// from since (a task's creation when since is zero).
func observePlacement(tasks []*messages.Task, since time.Time) {
	now := time.Now()
	for _, t := range tasks {
		from := since
		if from.IsZero() {
			c := t.GetMeta().GetCreatedUnixNano()
			if c == 0 {
				continue
			}
			from = time.Unix(0, c)
		}
		placementDuration.Observe(now.Sub(from).Seconds())
	}
}

// headerReceived carries a request's arrival time at the api to the child
// that handles it, whose replies are timed against it (timedReplies).
const headerReceived = "warren-api-received"

// forwardTimed forwards the api's current request to pid, as ctx.Forward
// does (its sender and headers kept), stamped with its arrival time.
func forwardTimed(ctx actor.Context, pid *actor.PID) {
	env := &actor.MessageEnvelope{Message: ctx.Message(), Sender: ctx.Sender()}
	if in := ctx.MessageHeader(); in != nil {
		for _, k := range in.Keys() {
			env.SetHeader(k, in.Get(k))
		}
	}
	env.SetHeader(headerReceived, strconv.FormatInt(time.Now().UnixNano(), 10))
	ctx.Send(pid, env)
}

// timedReplies makes an api child observe, for each reply it sends to a
// request's sender, the time since the request reached the api. A reply
// sent later (after a raft write, an image pull) is sent from the
// request's context, which carries its headers, so it is timed too.
func timedReplies(props *actor.Props) *actor.Props {
	return props.Configure(actor.WithSenderMiddleware(func(next actor.SenderFunc) actor.SenderFunc {
		return func(c actor.SenderContext, target *actor.PID, env *actor.MessageEnvelope) {
			if h := c.MessageHeader(); h != nil && target != nil && target.Equal(c.Sender()) {
				if ns, err := strconv.ParseInt(h.Get(headerReceived), 10, 64); err == nil {
					if m, ok := c.Message().(proto.Message); ok {
						apiDuration.WithLabelValues(string(proto.MessageName(m).Name())).Observe(time.Since(time.Unix(0, ns)).Seconds())
					}
				}
			}
			next(c, target, env)
		}
	}))
}
