package events

import (
	"strings"

	"github.com/warrenorch/warren/messages"
)

// filter is a subscription's selection, applied on the hub so that what is
// not wanted never crosses the network. Values of one field are
// alternatives; fields all apply.
type filter struct {
	types, services, nodes, tasks []string
	since, until                  int64  // unix nano; 0: no bound
	untilSeq                      uint64 // 0: no bound
}

func newFilter(m *messages.SubscribeEvents) filter {
	f := m.GetFilter()
	return filter{
		types:    append(append([]string(nil), m.TypePrefixes...), f.GetTypes()...),
		services: f.GetServices(), nodes: f.GetNodes(), tasks: f.GetTasks(),
		since: f.GetSinceUnixNano(), until: f.GetUntilUnixNano(), untilSeq: f.GetUntilSeq(),
	}
}

// match reports whether ev is wanted (past aside).
func (f *filter) match(ev *messages.Event) bool {
	if f.since != 0 && ev.UnixNano < f.since {
		return false
	}
	return anyOf(f.types, ev.Type, strings.HasPrefix) &&
		anyOf(f.services, ev.Attrs["service"], func(s, v string) bool { return s == v }) &&
		anyOf(f.nodes, NodeOf(ev), idMatch) &&
		anyOf(f.tasks, TaskOf(ev), idMatch)
}

// past reports whether ev lies beyond the filter's end: the stream stops
// there.
func (f *filter) past(ev *messages.Event) bool {
	return (f.untilSeq != 0 && ev.Seq > f.untilSeq) || (f.until != 0 && ev.UnixNano > f.until)
}

// NodeOf is the node an event is about: the task's or node's (attrs
// "node"), else the node that produced it (an actor's lifecycle).
func NodeOf(ev *messages.Event) string {
	if n := ev.Attrs["node"]; n != "" {
		return n
	}
	return ev.Node
}

// TaskOf is the task an event is about, if any.
func TaskOf(ev *messages.Event) string {
	if t := ev.Attrs["task"]; t != "" {
		return t
	}
	if strings.HasPrefix(ev.Type, "task.") {
		return ev.Subject
	}
	return ""
}

// idMatch: an id, or a prefix of it as `warren` prints them shortened.
func idMatch(id, want string) bool {
	return id != "" && strings.HasPrefix(id, want)
}

func anyOf(wants []string, v string, match func(v, want string) bool) bool {
	if len(wants) == 0 {
		return true
	}
	for _, w := range wants {
		if match(v, w) {
			return true
		}
	}
	return false
}
