package manager

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// clusterTable is what manager/api/cluster takes, and from whom.
var clusterTable = table{
	typeName(&messages.ClusterInfoRequest{}): adminRoles,
	typeName(&messages.JoinTokenRequest{}):   adminRoles,
	// A node asks for its own certificate only (certificate checks).
	typeName(&messages.CertificateRequest{}): nodeRoles,
}

// clusterAPI (manager/api/cluster) answers about the cluster as a whole:
// its info, the join tokens (decided on the leader), and certificates for
// nodes whose role changed, signed with this manager's CA (whose key never
// leaves it).
type clusterAPI struct {
	cfg    APIConfig
	leader *onLeader
}

func newClusterAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &clusterAPI{cfg: cfg, leader: newOnLeader(cfg)}
	}, events.WithLifecycle)
}

func (a *clusterAPI) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ClusterInfoRequest:
		a.clusterInfo(ctx)
	case *messages.JoinTokenRequest:
		a.leader.write(ctx, func() { a.joinToken(ctx, m) })
	case *messages.CertificateRequest:
		a.certificate(ctx, m)
	}
}

func (a *clusterAPI) clusterInfo(ctx actor.Context) {
	askMembership(ctx, &listServers{}, 5*time.Second, func(m *membershipReply) {
		r := a.clusterInfoReply()
		for _, sv := range m.servers {
			if sv.Voter {
				r.RaftVoters = append(r.RaftVoters, sv.ID)
			}
		}
		ctx.Respond(r)
	})
}

func (a *clusterAPI) clusterInfoReply() *messages.ClusterInfoReply {
	st := a.cfg.Store.State
	r := &messages.ClusterInfoReply{Cluster: st.Cluster(), Index: st.Index(), Version: a.cfg.Version, NodeId: a.cfg.NodeID}
	r.Cluster.WorkerToken, r.Cluster.ManagerToken = "", "" // `cluster join-token` shows them, to admins
	_, r.LeaderId = a.cfg.Store.Leader()
	nodes := st.Nodes()
	r.Nodes = uint32(len(nodes))
	for _, n := range nodes {
		if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER {
			r.ManagerAddrs = append(r.ManagerAddrs, n.Description.GetAddr())
		}
		if n.Id == r.LeaderId {
			r.LeaderAddr = n.Description.GetAddr()
		}
	}
	r.Services = uint32(len(st.Services()))
	for _, t := range st.Tasks(store.TaskFilter{}) {
		if t.Status.GetState() == messages.TaskState_TASK_STATE_RUNNING {
			r.TasksRunning++
		}
	}
	return r
}

// joinToken returns the join token for a role, replacing it first when
// asked to rotate or when it has expired (an expired token is dead: no
// holder loses anything). A TTL makes the returned token stop working that
// long from now; the expiry is in the replicated cluster info, so every
// manager's join endpoint refuses it after that.
func (a *clusterAPI) joinToken(ctx actor.Context, m *messages.JoinTokenRequest) {
	st := a.cfg.Store.State
	ci := st.Cluster()
	if m.Role != messages.NodeRole_NODE_ROLE_WORKER && m.Role != messages.NodeRole_NODE_ROLE_MANAGER {
		ctx.Respond(&messages.JoinTokenReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "join tokens are for workers or managers")})
		return
	}
	const maxTTL = 10 * 365 * 24 * 3600 // seconds; beyond it, give no --ttl
	if m.TtlSeconds < 0 || m.TtlSeconds > maxTTL {
		ctx.Respond(&messages.JoinTokenReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "--ttl must be between 1s and 10 years (omit it for a token that does not expire)")})
		return
	}
	secret, expires := &ci.WorkerToken, &ci.WorkerTokenExpiresUnixNano
	if m.Role == messages.NodeRole_NODE_ROLE_MANAGER {
		secret, expires = &ci.ManagerToken, &ci.ManagerTokenExpiresUnixNano
	}
	reply := func() {
		ci := st.Cluster()
		s, exp := ci.WorkerToken, ci.WorkerTokenExpiresUnixNano
		if m.Role == messages.NodeRole_NODE_ROLE_MANAGER {
			s, exp = ci.ManagerToken, ci.ManagerTokenExpiresUnixNano
		}
		r := &messages.JoinTokenReply{Token: pki.Token(ci.CaFingerprint, s), ExpiresUnixNano: exp}
		for _, n := range st.Nodes() {
			if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER && n.Description.GetJoinAddr() != "" {
				r.JoinAddrs = append(r.JoinAddrs, n.Description.GetJoinAddr())
			}
		}
		ctx.Respond(r)
	}
	now := time.Now()
	expired := *expires != 0 && now.UnixNano() >= *expires
	if !m.Rotate && !expired && *secret != "" && m.TtlSeconds == 0 {
		reply()
		return
	}
	if m.Rotate || expired || *secret == "" {
		*secret, *expires = pki.NewSecret(), 0
	}
	if m.TtlSeconds > 0 {
		*expires = now.Add(time.Duration(m.TtlSeconds) * time.Second).UnixNano()
	}
	f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameStore), &messages.Propose{Command: &messages.Command{Op: &messages.Command_SetClusterInfo{SetClusterInfo: &messages.SetClusterInfo{Info: ci}}}}, writeTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		if r, _ := res.(*messages.CommandResult); err != nil || r == nil || r.Error != nil {
			ctx.Respond(&messages.JoinTokenReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "change join token: %v %v", err, r.GetError().GetMessage())})
			return
		}
		reply()
	})
}
