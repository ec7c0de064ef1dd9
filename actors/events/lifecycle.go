// Package events owns Warren's event stream: the receiver middleware that
// turns every actor's lifecycle messages into events, the conversion of store
// state changes into events, and the hub actor that keeps a bounded history
// in bbolt and streams events to subscribers (local or remote PIDs).
package events

import (
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/messages"
)

// WithLifecycle is the props option every Warren actor is spawned with.
var WithLifecycle = actor.WithReceiverMiddleware(Lifecycle())

// Lifecycle returns a receiver middleware that publishes an Event on the
// actor system's event stream for Started, Stopping, Stopped and Restarting,
// so `warren events` and embedding programs see every actor's life. The hub
// stamps the node.
func Lifecycle() actor.ReceiverMiddleware {
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			var typ string
			switch env.Message.(type) {
			case *actor.Started:
				typ = "actor.started"
			case *actor.Stopping:
				typ = "actor.stopping"
			case *actor.Stopped:
				typ = "actor.terminated"
			case *actor.Restarting:
				typ = "actor.restarting"
			}
			if typ != "" {
				c.ActorSystem().EventStream.Publish(&messages.Event{
					UnixNano: time.Now().UnixNano(), Type: typ, Actor: c.Self().GetId(),
				})
			}
			next(c, env)
		}
	}
}

// Supervision turns protoactor's supervisor events (a child failed and was
// restarted, stopped or escalated) into events.
func Supervision(node string, e *actor.SupervisorEvent) *messages.Event {
	return &messages.Event{
		UnixNano: time.Now().UnixNano(), Type: "actor.failed", Actor: e.Child.GetId(), Node: node,
		Message: fmt.Sprintf("%v", e.Reason),
		Attrs:   map[string]string{"directive": e.Directive.String()},
	}
}

// FromState turns a state change into events (service.created, task.running,
// node.ready ...).
func FromState(node string, sc *messages.StateChanged) []*messages.Event {
	now := time.Now().UnixNano()
	var out []*messages.Event
	op := func(o messages.ChangeOp) string {
		switch o {
		case messages.ChangeOp_CHANGE_OP_CREATE:
			return "created"
		case messages.ChangeOp_CHANGE_OP_DELETE:
			return "deleted"
		}
		return "updated"
	}
	for _, c := range sc.Changes {
		var then *messages.Event // an event that follows this one
		ev := &messages.Event{UnixNano: now, Node: node, Attrs: map[string]string{"index": fmt.Sprint(sc.Index)}}
		switch o := c.Object.(type) {
		case *messages.Change_Service:
			ev.Type = "service." + op(c.Op)
			ev.Subject = o.Service.Spec.GetName()
			ev.Attrs["service"] = ev.Subject // what `--filter service=` reads
			ev.Attrs["replicas"] = fmt.Sprint(o.Service.Spec.GetReplicas())
			ev.Attrs["image"] = o.Service.Spec.GetImage()
			if d := o.Service.GetDeployment(); d != nil && d.Index == sc.Index {
				// This commit is a deployment transition: say so, as its own event.
				then = deploymentEvent(node, now, sc.Index, o.Service)
			}
		case *messages.Change_Task:
			t := o.Task
			ev.Subject = t.Id
			ev.Attrs["service"] = t.ServiceName
			ev.Attrs["node"] = t.NodeId
			ev.Attrs["desired"] = TaskStateName(t.DesiredState)
			if h := t.GetStatus().GetHealth(); h != messages.HealthState_HEALTH_STATE_NONE {
				ev.Attrs["health"] = lower(h.String(), "HEALTH_STATE_")
			}
			switch {
			case c.Op == messages.ChangeOp_CHANGE_OP_UPDATE:
				ev.Type = "task." + TaskStateName(t.GetStatus().GetState())
				ev.Message = t.GetStatus().GetMessage()
				if e := t.GetStatus().GetErr(); e != "" {
					ev.Message = e
				}
			case c.Op == messages.ChangeOp_CHANGE_OP_CREATE && t.Replaces != "":
				ev.Type = "task.rescheduled"
				ev.Attrs["replaces"] = t.Replaces
				ev.Message = t.Reason
			default:
				ev.Type = "task." + op(c.Op)
			}
		case *messages.Change_Node:
			ev.Subject = o.Node.Description.GetHostname()
			ev.Attrs["id"] = o.Node.Id
			ev.Attrs["node"] = o.Node.Id // what `--filter node=` reads, as on task events
			if c.Op == messages.ChangeOp_CHANGE_OP_UPDATE {
				ev.Type = "node." + NodeStateName(o.Node.GetStatus().GetState())
			} else {
				ev.Type = "node." + op(c.Op)
			}
		default:
			continue
		}
		out = append(out, ev)
		if then != nil {
			out = append(out, then)
		}
	}
	return out
}

// TaskStateName is the short lower-case name users see (running, failed ...).
func TaskStateName(s messages.TaskState) string {
	return lower(s.String(), "TASK_STATE_")
}

// NodeStateName is the short lower-case node state (ready, down ...).
func NodeStateName(s messages.NodeState) string {
	return lower(s.String(), "NODE_STATE_")
}

func lower(s, prefix string) string {
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		s = s[len(prefix):]
	}
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// deploymentEvent is one committed transition of a service's deployment:
// deployment.<state> (deployment.awaiting-health, deployment.rolled-back).
func deploymentEvent(node string, now int64, index uint64, svc *messages.Service) *messages.Event {
	d := svc.Deployment
	state := strings.ReplaceAll(lower(d.State.String(), "DEPLOYMENT_STATE_"), "_", "-")
	ev := &messages.Event{UnixNano: now, Node: node, Type: "deployment." + state, Subject: svc.Spec.GetName(), Message: d.Message,
		Attrs: map[string]string{
			"index": fmt.Sprint(index), "deployment": d.Id, "service": svc.Spec.GetName(),
			"strategy": strings.ReplaceAll(lower(d.Strategy.String(), "DEPLOY_STRATEGY_"), "_", "-"),
			"from":     fmt.Sprint(d.FromVersion), "to": fmt.Sprint(d.ToVersion),
			"updated": fmt.Sprintf("%d/%d", len(d.Updated), d.Total),
		}}
	if d.Strategy == messages.DeployStrategy_DEPLOY_STRATEGY_CANARY {
		ev.Attrs["weight"] = fmt.Sprint(d.Weight)
	}
	return ev
}
