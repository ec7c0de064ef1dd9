package remoting

import (
	"strings"

	"github.com/warrenorch/warren/store/pki"
)

// Actor ids that other processes address: the api every manager serves and
// the events hub every node runs. A client needs nothing else of a node.
const (
	ActorAPI    = "manager/api"
	ActorEvents = "events"
	// ActorLogs is a node's task log reader; only managers ask it.
	ActorLogs = "worker/logs"
	// ActorDf counts a node's disk use; only managers ask it.
	ActorDf = "worker/df"
)

// Targets that rules name besides plain actor ids.
const (
	// TargetAny is every actor.
	TargetAny = "*"
	// TargetFuture is a reply future ("future$…"): where an answer to a
	// request the receiving process sent goes.
	TargetFuture = "future$*"
)

// TypeAny is every message type.
const TypeAny = "*"

// Rule says that a peer whose certificate carries Role may send messages of
// Types to the actor Target. Whatever no rule allows is refused, and the
// stream that carried it is cut. docs/security.md shows this table; a test
// keeps the two the same.
type Rule struct {
	Role   string
	Target string
	Types  []string
	// Whose says whose resources the receiving actor lets the peer touch,
	// beyond what the transport checks (shown in the docs).
	Whose string
}

// The wire names rules use, one place each.
var (
	// nodeProtocol is what a node says about itself to a manager's api.
	nodeProtocol = []string{
		"warren.v1.RegisterNode", "warren.v1.Heartbeat", "warren.v1.TaskStatusReport",
		"warren.v1.NetworkProgrammed", "warren.v1.DrainTask", "warren.v1.CertificateRequest",
	}
	// adminAPI is the management API the CLI calls.
	adminAPI = []string{
		"warren.v1.ClusterInfoRequest",
		"warren.v1.CreateServiceRequest", "warren.v1.UpdateServiceRequest", "warren.v1.ScaleServiceRequest",
		"warren.v1.DeleteServiceRequest", "warren.v1.InspectServiceRequest", "warren.v1.ListServicesRequest",
		"warren.v1.WaitServiceRequest", "warren.v1.ListTasksRequest",
		"warren.v1.PromoteServiceRequest", "warren.v1.RollbackServiceRequest",
		"warren.v1.PauseServiceRequest", "warren.v1.ResumeServiceRequest",
		"warren.v1.ListNodesRequest", "warren.v1.InspectNodeRequest", "warren.v1.UpdateNodeRequest",
		"warren.v1.PromoteNodeRequest", "warren.v1.DemoteNodeRequest", "warren.v1.RemoveNodeRequest",
		"warren.v1.ImportImageChunk", "warren.v1.ListImagesRequest", "warren.v1.PullImageRequest",
		"warren.v1.JoinTokenRequest",
		"warren.v1.ReadLogsRequest",
		"warren.v1.ListAuditRequest",
		"warren.v1.SystemDfRequest",
		"warren.v1.DebugCrash", // refused by the api unless the node runs with --enable-debug
	}
	// adminEvents is following the events hub: subscribing, and the
	// watch protoactor uses to notice either end going away.
	adminEvents = []string{
		"warren.v1.SubscribeEvents", "warren.v1.UnsubscribeEvents", "warren.v1.EventsAck",
		"actor.Watch", "actor.Unwatch", "actor.Terminated",
	}
)

// Rules is Warren's remoting authorisation table.
var Rules = []Rule{
	{Role: pki.RoleManager, Target: TargetAny, Types: []string{TypeAny},
		Whose: "any: managers run the cluster (store proposals, pushes, forwarding, supervision)"},
	{Role: pki.RoleWorker, Target: ActorAPI, Types: nodeProtocol,
		Whose: "its own node only: the node id in the message must be the certificate's; its role comes from the state, never the message"},
	{Role: pki.RoleWorker, Target: TargetFuture, Types: []string{"warren.v1.ImportImageReply", "warren.v1.ReadNodeLogsReply", "warren.v1.NodeDiskUsage", "actor.DeadLetterResponse"},
		Whose: "answers to requests a manager sent it"},
	{Role: pki.RoleAdmin, Target: ActorAPI, Types: adminAPI,
		Whose: "the whole cluster"},
	{Role: pki.RoleAdmin, Target: ActorEvents, Types: adminEvents,
		Whose: "its subscriptions: a subscriber or watcher it names must be an actor outside the receiving node"},
	{Role: pki.RoleAdmin, Target: TargetFuture, Types: []string{"actor.DeadLetterResponse"},
		Whose: "answers to requests a manager sent it"},
}

// Allowed reports whether a peer with role may send a message of the given
// wire type name to the actor with id target.
func Allowed(role, target, typeName string) bool {
	for _, r := range Rules {
		if r.Role == role && targetMatches(r.Target, target) && typeMatches(r.Types, typeName) {
			return true
		}
	}
	return false
}

func targetMatches(rule, id string) bool {
	switch rule {
	case TargetAny:
		return true
	case TargetFuture:
		return strings.HasPrefix(id, "future$")
	}
	return rule == id
}

func typeMatches(types []string, name string) bool {
	for _, t := range types {
		if t == TypeAny || t == name {
			return true
		}
	}
	return false
}
