package manager

import (
	"fmt"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
)

// systemTable: what the system child (manager/api/system) answers.
var systemTable = table{
	typeName(&messages.SystemDfRequest{}): adminRoles,
}

// dfWait is how long a node has to count its disk use (its own bound is
// 20 s, worker.dfTimeout); one that takes longer is reported as such.
const dfWait = 25 * time.Second

// systemAPI answers `system df`: it asks every node at once and answers
// when all have answered or failed, each in its row.
type systemAPI struct{ cfg APIConfig }

func newSystemAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &systemAPI{cfg: cfg} }, events.WithLifecycle)
}

func (a *systemAPI) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*messages.SystemDfRequest); ok {
		a.df(ctx)
	}
}

func (a *systemAPI) df(ctx actor.Context) {
	nodes := a.cfg.Store.State.Nodes()
	reply := &messages.SystemDfReply{}
	pending := 0
	finish := func() {
		sort.Slice(reply.Nodes, func(i, j int) bool {
			if reply.Nodes[i].Hostname != reply.Nodes[j].Hostname {
				return reply.Nodes[i].Hostname < reply.Nodes[j].Hostname
			}
			return reply.Nodes[i].NodeId < reply.Nodes[j].NodeId
		})
		ctx.Respond(reply)
	}
	for _, n := range nodes {
		i, row := len(reply.Nodes), &messages.NodeDiskUsage{NodeId: n.Id, Hostname: n.Description.GetHostname()}
		reply.Nodes = append(reply.Nodes, row)
		addr := n.Description.GetAddr()
		switch {
		case addr == "":
			row.Error = "its address is unknown (it has not registered yet): its figures are missing"
			continue
		case n.GetStatus().GetState() == messages.NodeState_NODE_STATE_DOWN:
			row.Error = "node is down: its figures are missing; run `system df` again once it is ready"
			continue
		}
		pending++
		f := ctx.RequestFuture(actor.NewPID(addr, remoting.ActorDf), &messages.NodeDfRequest{}, dfWait)
		ctx.ReenterAfter(f, func(res any, err error) {
			if u, ok := res.(*messages.NodeDiskUsage); ok && err == nil {
				u.NodeId, u.Hostname = row.NodeId, row.Hostname // the cluster's names, not the node's say
				reply.Nodes[i] = u
			} else {
				row.Error = fmt.Sprintf("node %s unreachable (%v): its figures are missing", row.Hostname, err)
			}
			if pending--; pending == 0 {
				finish()
			}
		})
	}
	if pending == 0 {
		finish()
	}
}
