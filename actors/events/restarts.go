package events

import (
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/prometheus/client_golang/prometheus"
)

// RestartCounter counts the supervisor's decisions on failed actors of one
// actor system, by actor kind and directive, for
// warren_actor_restarts_total. It is its own collector (not a global) so a
// node restarted in the same process starts from a new system's count.
type RestartCounter struct {
	vec *prometheus.CounterVec
	sys *actor.ActorSystem
	sub *eventstream.Subscription
}

// WatchRestarts subscribes to sys's supervisor events; Stop unsubscribes.
func WatchRestarts(sys *actor.ActorSystem) *RestartCounter {
	c := &RestartCounter{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_actor_restarts_total",
		Help: "Actors that failed, by kind (the actor's path with names and ids replaced by *) and the supervisor's directive (restart, stop, escalate, resume).",
	}, []string{"kind", "directive"}), sys: sys}
	c.sub = sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.SupervisorEvent); ok {
			c.vec.WithLabelValues(ActorKind(e.Child.GetId()), strings.ToLower(strings.TrimSuffix(e.Directive.String(), "Directive"))).Inc()
		}
	})
	return c
}

// Stop ends the subscription.
func (c *RestartCounter) Stop() { c.sys.EventStream.Unsubscribe(c.sub) }

func (c *RestartCounter) Describe(ch chan<- *prometheus.Desc) { c.vec.Describe(ch) }
func (c *RestartCounter) Collect(ch chan<- prometheus.Metric) { c.vec.Collect(ch) }

// collections are the path segments whose children are named after what
// they own (a service, a task, a node): the child's name is replaced, so
// the kinds stay few however many services and tasks there are.
var collections = map[string]bool{"tasks": true, "services": true, "nodes": true, "deployments": true, "subscribers": true, "streams": true}

// ActorKind is an actor's path with per-object parts replaced by "*":
// "agent/tasks/3f9a…" -> "agent/tasks/*", "manager/api/services/$12" ->
// "manager/api/services/$*". The api's "services" child is a fixed name
// (under the api itself), so only a segment below a collection whose
// parent is not the api is replaced.
func ActorKind(id string) string {
	parts := strings.Split(id, "/")
	for i, p := range parts {
		switch {
		case strings.HasPrefix(p, "$"):
			parts[i] = "$*"
		case i > 0 && collections[parts[i-1]] && !(i > 1 && parts[i-2] == "api"):
			parts[i] = "*"
		case looksLikeID(p):
			parts[i] = "*"
		}
	}
	return strings.Join(parts, "/")
}

// looksLikeID: Warren's ids are long lower-case hex (messages.NewID).
func looksLikeID(s string) bool {
	if len(s) < 12 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
