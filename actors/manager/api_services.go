package manager

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
)

// servicesTable is what manager/api/services takes, and from whom.
var servicesTable = table{
	typeName(&messages.CreateServiceRequest{}):   adminRoles,
	typeName(&messages.UpdateServiceRequest{}):   adminRoles,
	typeName(&messages.ScaleServiceRequest{}):    adminRoles,
	typeName(&messages.DeleteServiceRequest{}):   adminRoles,
	typeName(&messages.InspectServiceRequest{}):  adminRoles,
	typeName(&messages.ListServicesRequest{}):    adminRoles,
	typeName(&messages.WaitServiceRequest{}):     adminRoles,
	typeName(&messages.ListTasksRequest{}):       adminRoles,
	typeName(&messages.PromoteServiceRequest{}):  adminRoles,
	typeName(&messages.RollbackServiceRequest{}): adminRoles,
	typeName(&messages.PauseServiceRequest{}):    adminRoles,
	typeName(&messages.ResumeServiceRequest{}):   adminRoles,
}

// servicesAPI (manager/api/services) answers the service requests: writes
// are decided on the leader and written through the store actor; reads
// come from the local replica.
type servicesAPI struct {
	cfg    APIConfig
	leader *onLeader
}

func newServicesAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &servicesAPI{cfg: cfg, leader: newOnLeader(cfg)}
	}, events.WithLifecycle)
}

func (a *servicesAPI) Receive(ctx actor.Context) {
	st := a.cfg.Store.State
	switch m := ctx.Message().(type) {
	case *messages.CreateServiceRequest:
		a.leader.write(ctx, func() { a.createService(ctx, m) })
	case *messages.UpdateServiceRequest:
		a.leader.write(ctx, func() { a.updateService(ctx, m) })
	case *messages.ScaleServiceRequest:
		a.leader.write(ctx, func() { a.scale(ctx, m) })
	case *messages.PromoteServiceRequest:
		a.leader.write(ctx, func() { a.toDeployment(ctx, m.Name, time.Now().Add(3*time.Second)) })
	case *messages.RollbackServiceRequest:
		a.leader.write(ctx, func() { a.rollback(ctx, m) })
	case *messages.PauseServiceRequest:
		a.leader.write(ctx, func() { a.toDeployment(ctx, m.Name, time.Now().Add(3*time.Second)) })
	case *messages.ResumeServiceRequest:
		a.leader.write(ctx, func() { a.toDeployment(ctx, m.Name, time.Now().Add(3*time.Second)) })
	case *messages.DeleteServiceRequest:
		a.leader.write(ctx, func() {
			v := st.ServiceByName(m.Name)
			if v == nil {
				ctx.Respond(&messages.ServiceReply{Error: notFound("service", m.Name)})
				return
			}
			a.propose(ctx, &messages.Command{Op: &messages.Command_DeleteService{DeleteService: &messages.DeleteService{ServiceId: v.Id}}}, "")
		})
	case *messages.InspectServiceRequest:
		v := a.findService(m.Name)
		if v == nil {
			ctx.Respond(&messages.ServiceReply{Error: notFound("service", m.Name)})
			return
		}
		ctx.Respond(&messages.ServiceReply{Service: v})
	case *messages.ListServicesRequest:
		reply := &messages.ListServicesReply{}
		for _, v := range st.Services() {
			tasks := st.Tasks(store.TaskFilter{ServiceID: v.Id})
			sum := &messages.ServiceSummary{Service: v, Desired: ServiceProgress(v, tasks, st.Nodes()).Desired}
			for _, t := range tasks {
				if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING && t.Status.GetState() == messages.TaskState_TASK_STATE_RUNNING {
					sum.Running++
				}
			}
			reply.Services = append(reply.Services, sum)
		}
		ctx.Respond(reply)
	case *messages.WaitServiceRequest:
		if ctx.Sender() != nil {
			ctx.Spawn(newWaiter(st, m, ctx.Sender()))
		}
	case *messages.ListTasksRequest:
		a.listTasks(ctx, m)
	}
}

func (a *servicesAPI) scale(ctx actor.Context, m *messages.ScaleServiceRequest) {
	v := a.cfg.Store.State.ServiceByName(m.Name)
	if v == nil {
		ctx.Respond(&messages.ServiceReply{Error: notFound("service", m.Name)})
		return
	}
	if v.Spec.Mode == messages.ServiceMode_SERVICE_MODE_GLOBAL {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "service %s is global (one task per node) and cannot be scaled", m.Name)})
		return
	}
	if m.Replicas > messages.MaxReplicas {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "replicas %d is more than the limit of %d: scale to a smaller number", m.Replicas, messages.MaxReplicas)})
		return
	}
	a.proposeScale(ctx, v, m.Replicas, scaleTries)
}

// scaleTries bounds how often a scale reads the service again after its
// write was refused as stale.
const scaleTries = 3

// proposeScale writes the new replica count onto the spec as this manager
// last applied it. The version the command carries guards the rest of the
// spec (a template update that slipped in is not undone), so a CONFLICT
// only means the state moved on between the read and the commit: another
// write, or a leader that had not yet applied every entry its predecessor
// committed. The caller named no version, so the scale reads the service
// again and retries instead of handing the user "changed since version".
func (a *servicesAPI) proposeScale(ctx actor.Context, v *messages.Service, replicas uint64, tries int) {
	spec := proto.Clone(v.Spec).(*messages.ServiceSpec)
	spec.Replicas = replicas
	cmd := &messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: v.Id, ExpectedVersion: v.Meta.Version, Spec: spec}}}
	f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameStore), &messages.Propose{Command: cmd}, writeTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.CommandResult)
		if err == nil && r.GetError().GetCode() == messages.ErrorCode_ERROR_CODE_CONFLICT && tries > 1 {
			if now := a.cfg.Store.State.Service(v.Id); now != nil {
				a.cfg.Log.Debug("scale raced another write; reading the service again", zap.String("service", v.Spec.GetName()), zap.Uint64("read", v.Meta.GetVersion()), zap.Uint64("now", now.Meta.GetVersion()))
				a.proposeScale(ctx, now, replicas, tries-1)
				return
			}
		}
		a.answer(ctx, res, err, v.Id)
	})
}

func (a *servicesAPI) findService(name string) *messages.Service {
	st := a.cfg.Store.State
	if v := st.ServiceByName(name); v != nil {
		return v
	}
	return st.Service(name)
}

func (a *servicesAPI) createService(ctx actor.Context, m *messages.CreateServiceRequest) {
	spec := m.Spec
	if err := messages.ValidateServiceSpec(spec); err != nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)})
		return
	}
	if a.cfg.Store.State.ServiceByName(spec.Name) != nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "service %q already exists: pick another name, or scale it with `warren service scale %s=N`", spec.Name, spec.Name)})
		return
	}
	if err := a.portsFree(spec, ""); err != nil {
		ctx.Respond(&messages.ServiceReply{Error: err})
		return
	}
	a.withImage(ctx, spec.Image, func() {
		v := &messages.Service{Id: messages.NewID(), Spec: spec}
		a.propose(ctx, &messages.Command{Op: &messages.Command_CreateService{CreateService: &messages.CreateService{Service: v}}}, v.Id)
	})
}

// imageTimeout bounds the image check (a pull from a registry).
const imageTimeout = 60 * time.Second

// withImage runs then once this node has the image, or refuses the spec
// before any state changes, instead of creating tasks that can only be
// rejected. The check (which may pull) runs off the mailbox, so the api
// keeps answering meanwhile.
func (a *servicesAPI) withImage(ctx actor.Context, ref string, then func()) {
	images := a.cfg.Images
	blocking.Do(ctx, imageTimeout+5*time.Second, func() (struct{}, error) {
		c, cancel := context.WithTimeout(context.Background(), imageTimeout)
		defer cancel()
		return struct{}{}, images.EnsureImage(c, ref)
	}, func(_ struct{}, err error) {
		if err != nil {
			ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "image %s is not available: %v", ref, err)})
			return
		}
		then()
	})
}

func (a *servicesAPI) updateService(ctx actor.Context, m *messages.UpdateServiceRequest) {
	v := a.cfg.Store.State.ServiceByName(m.Name)
	if v == nil {
		ctx.Respond(&messages.ServiceReply{Error: notFound("service", m.Name)})
		return
	}
	if m.Spec.GetName() == "" && m.Spec != nil {
		m.Spec.Name = m.Name
	}
	if err := messages.ValidateServiceSpec(m.Spec); err != nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)})
		return
	}
	if m.ExpectedVersion != 0 && m.ExpectedVersion != v.Meta.GetVersion() {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_CONFLICT, "service %s changed since version %d (now %d): read it again and retry", m.Name, m.ExpectedVersion, v.Meta.GetVersion())})
		return
	}
	dep, err := planDeployment(v, m.Spec)
	if err != nil {
		ctx.Respond(&messages.ServiceReply{Error: err})
		return
	}
	if err := a.portsFree(m.Spec, v.Id); err != nil {
		ctx.Respond(&messages.ServiceReply{Error: err})
		return
	}
	a.withImage(ctx, m.Spec.Image, func() {
		// Decided on v: the command carries its version, so a change that
		// slipped in meanwhile (while the image was checked) is refused.
		a.propose(ctx, updateCommand(v, m.Spec, dep), v.Id)
	})
}

// propose sends cmd to the store actor and, once committed, answers the
// caller with the service as applied (svcID) or the error. The api stays
// responsive meanwhile: the continuation runs when the future completes.
func (a *servicesAPI) propose(ctx actor.Context, cmd *messages.Command, svcID string) {
	f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameStore), &messages.Propose{Command: cmd}, writeTimeout)
	ctx.ReenterAfter(f, func(res any, err error) { a.answer(ctx, res, err, svcID) })
}

// answer replies to a write with the store's result: the service as
// applied (svcID), or the error.
func (a *servicesAPI) answer(ctx actor.Context, res any, err error, svcID string) {
	if err != nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "write not committed: %v; the cluster may have lost its leader, retry", err)})
		return
	}
	r, _ := res.(*messages.CommandResult)
	if r == nil {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "unexpected store reply %T", res)})
		return
	}
	if r.Error != nil {
		ctx.Respond(&messages.ServiceReply{Error: r.Error})
		return
	}
	reply := &messages.ServiceReply{}
	if svcID != "" {
		reply.Service = a.cfg.Store.State.Service(svcID)
	}
	ctx.Respond(reply)
}

func (a *servicesAPI) listTasks(ctx actor.Context, m *messages.ListTasksRequest) {
	st := a.cfg.Store.State
	f := store.TaskFilter{}
	if m.Service != "" {
		v := a.findService(m.Service)
		if v == nil {
			ctx.Respond(&messages.ListTasksReply{Error: notFound("service", m.Service)})
			return
		}
		f.ServiceID = v.Id
	}
	if m.Node != "" {
		n := findNode(a.cfg.Store.State, m.Node)
		if n == nil {
			ctx.Respond(&messages.ListTasksReply{Error: notFound("node", m.Node)})
			return
		}
		f.NodeID = n.Id
	}
	reply := &messages.ListTasksReply{}
	for _, t := range st.Tasks(f) {
		if !m.All && t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			continue
		}
		if v := st.Service(t.ServiceId); v != nil {
			t.Side = sideOf(v, t) // a copy: the replica's task is not touched
		}
		reply.Tasks = append(reply.Tasks, t)
	}
	ctx.Respond(reply)
}

// portsFree refuses a published port another service already publishes:
// the routing mesh answers it on every node, for one service only.
func (a *servicesAPI) portsFree(spec *messages.ServiceSpec, self string) *messages.Error {
	if err := messages.ValidatePublishedPorts(spec, clusterPorts(a.cfg.Store.State)); err != nil {
		return errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)
	}
	for _, v := range a.cfg.Store.State.Services() {
		if v.Id == self {
			continue
		}
		for _, p := range v.Spec.GetPorts() {
			for _, q := range spec.GetPorts() {
				if p.PublishedPort != 0 && p.PublishedPort == q.PublishedPort && protoOf(p) == protoOf(q) {
					return errReply(messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS, "port %d/%s is already published by service %s: pick another published port", q.PublishedPort, protoOf(q), v.Spec.GetName())
				}
			}
		}
	}
	return nil
}

// clusterPorts is every port Warren itself uses on some node of the cluster:
// the defaults, and the remoting, raft, join and WireGuard ports the nodes
// were started with. A published port is answered on every node, so it
// must be none of them.
func clusterPorts(st *store.State) map[messages.PortKey]string {
	r := messages.DefaultReservedPorts()
	port := func(addr string) uint32 {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return 0
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return 0
		}
		return uint32(n)
	}
	for _, n := range st.Nodes() {
		d := n.GetDescription()
		messages.ReserveNodePorts(r, port(d.GetAddr()), port(d.GetRaftAddr()), port(d.GetJoinAddr()))
		if p := port(d.GetWgEndpoint()); p != 0 {
			r[messages.PortKey{Protocol: "udp", Port: p}] = "the WireGuard mesh between nodes (--wg-endpoint)"
		}
	}
	return r
}

func protoOf(p *messages.PortConfig) string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}
