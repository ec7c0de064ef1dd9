package manager

import (
	"context"
	"errors"
	"fmt"
	"github.com/warrenorch/warren/actors/events"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// Images is what the api needs from the node's container runtime.
type Images interface {
	ImportImage(ctx context.Context, r io.Reader) ([]string, error)
	PullImage(ctx context.Context, ref string, opts runtime.PullOptions) error
	EnsureImage(ctx context.Context, ref string) error
	ListImages(ctx context.Context) ([]string, error)
}

// APIConfig configures the api actor.
type APIConfig struct {
	Store       *store.Store
	Images      Images
	NodeID      string
	Version     string
	UploadDir   string
	EnableDebug bool // accept DebugCrash (supervision tests)
	// CA signs certificates for nodes whose role changes.
	CA  *pki.CA
	Log *zap.Logger
}

// apiActor is the remote-facing edge: it authorizes by the caller's
// certificate role, validates, forwards writes to the store actor (which
// forwards to the leader), serves reads from the local replica, and routes
// worker messages to the leader.
type apiActor struct {
	cfg     APIConfig
	uploads map[string]*os.File
	held    map[any]time.Time // writes waiting for a leader, until when
}

func newAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &apiActor{cfg: cfg, uploads: map[string]*os.File{}, held: map[any]time.Time{}}
	}, events.WithLifecycle)
}

func errReply(code messages.ErrorCode, format string, a ...any) *messages.Error {
	return &messages.Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

func (a *apiActor) Receive(ctx actor.Context) {
	msg := ctx.Message()
	switch m := msg.(type) {
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		if _, ok := m.(*actor.Stopping); ok {
			for _, f := range a.uploads {
				f.Close()
				os.Remove(f.Name())
			}
		}
		return
	case *messages.CertificateRequest:
		a.certificate(ctx, m)
		return
	case *messages.RegisterNode, *messages.Heartbeat, *messages.TaskStatusReport, *messages.NetworkProgrammed, *messages.DrainTask:
		if err := nodeMayReport(ctx); err != nil {
			if _, ok := msg.(*messages.RegisterNode); ok {
				ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%v", err)})
			}
			a.cfg.Log.Warn("refused node message", zap.Error(err))
			return
		}
		a.toLeader(ctx)
		return
	}
	// Everything below is an admin request: workers may not make them.
	if id := remoting.Identity(ctx); id.Role == pki.RoleWorker {
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "worker %s may not call the management API", id.Name)})
		return
	}
	// Writes are decided on the leader: a follower still catching up must
	// not answer "not found" or "already exists" from a stale replica.
	switch msg.(type) {
	case *messages.CreateServiceRequest, *messages.UpdateServiceRequest, *messages.ScaleServiceRequest,
		*messages.DeleteServiceRequest, *messages.UpdateNodeRequest, *messages.RemoveNodeRequest, *messages.JoinTokenRequest:
		if !a.cfg.Store.IsLeader() {
			dl, ok := a.held[msg]
			if !ok {
				dl = time.Now().Add(holdWrites)
				a.held[msg] = dl
			}
			if pid := leaderPID(a.cfg.Store, NameAPI); pid != nil && pid.Address != ctx.Self().Address && a.cfg.Store.LeaderFresh(leaderQuiet) {
				a.proxy(ctx, pid, dl)
				return
			}
			// No leader in sight: an election may be under way. Hold the
			// request a few seconds, as the store holds writes, then give up.
			if time.Now().Before(dl) {
				a.after(ctx, 50*time.Millisecond, func() { a.Receive(ctx) })
				return
			}
			delete(a.held, msg)
			ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE,
				"this manager is not in contact with a leader (no majority of managers reachable from it, or it is still joining): retry, or use another manager")})
			return
		}
		delete(a.held, msg)
	}
	st := a.cfg.Store.State
	switch m := msg.(type) {
	case *messages.ClusterInfoRequest:
		a.clusterInfo(ctx)
	case *messages.CreateServiceRequest:
		a.createService(ctx, m)
	case *messages.UpdateServiceRequest:
		a.updateService(ctx, m)
	case *messages.ScaleServiceRequest:
		v := st.ServiceByName(m.Name)
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
		spec := v.Spec
		spec.Replicas = m.Replicas
		a.propose(ctx, &messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: v.Id, ExpectedVersion: v.Meta.Version, Spec: spec}}}, v.Id)
	case *messages.DeleteServiceRequest:
		v := st.ServiceByName(m.Name)
		if v == nil {
			ctx.Respond(&messages.ServiceReply{Error: notFound("service", m.Name)})
			return
		}
		a.propose(ctx, &messages.Command{Op: &messages.Command_DeleteService{DeleteService: &messages.DeleteService{ServiceId: v.Id}}}, "")
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
	case *messages.ListNodesRequest:
		ctx.Respond(&messages.ListNodesReply{Nodes: st.Nodes()})
	case *messages.InspectNodeRequest:
		n := a.findNode(m.Node)
		if n == nil {
			ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
			return
		}
		reply := &messages.NodeReply{Node: n}
		for _, t := range st.Tasks(store.TaskFilter{NodeID: n.Id}) {
			if t.Status.GetState() == messages.TaskState_TASK_STATE_RUNNING {
				reply.TasksRunning++
			}
		}
		ctx.Respond(reply)
	case *messages.ImportImageChunk:
		a.importChunk(ctx, m)
	case *messages.PullImageRequest:
		a.pull(ctx, m)
	case *messages.ListImagesRequest:
		imgs, err := a.cfg.Images.ListImages(context.Background())
		if err != nil {
			ctx.Respond(&messages.ListImagesReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "list images: %v", err)})
			return
		}
		ctx.Respond(&messages.ListImagesReply{Images: imgs})
	case *messages.JoinTokenRequest:
		a.joinToken(ctx, m)
	case *messages.UpdateNodeRequest:
		a.updateNode(ctx, m)
	case *messages.RemoveNodeRequest:
		a.removeNode(ctx, m)
	case *messages.DemoteNodeRequest:
		// Demoting the leader: hand leadership over here first (the leader
		// actor stops the moment leadership moves), then let the new
		// leader do it.
		if n := a.findNode(m.Node); n != nil && n.Id == a.cfg.NodeID && a.cfg.Store.IsLeader() {
			a.demoteSelf(ctx)
			return
		}
		a.toLeader(ctx)
	case *messages.PromoteNodeRequest:
		a.toLeader(ctx) // membership changes are the leader's
	case *messages.DebugCrash:
		if !a.cfg.EnableDebug {
			ctx.Respond(&messages.DebugCrashReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "debug hooks are off: start the node with --enable-debug")})
			return
		}
		if m.Actor == NameAPI {
			panic("debug crash requested for the api actor")
		}
		ctx.Send(actor.NewPID(ctx.Self().Address, m.Actor), m)
		ctx.Respond(&messages.DebugCrashReply{})
	default:
		a.cfg.Log.Debug("api: unhandled message", zap.String("type", fmt.Sprintf("%T", msg)))
	}
}

// nodeMayReport checks that a node speaks only for itself and claims no
// role its certificate lacks; messages from inside this process (the local
// agent) and from other managers forwarding them are trusted.
func nodeMayReport(ctx actor.Context) error {
	id := remoting.Identity(ctx)
	if id.Role == "local" || id.Role == pki.RoleManager {
		return nil
	}
	var node string
	var role messages.NodeRole
	switch m := ctx.Message().(type) {
	case *messages.RegisterNode:
		node, role = m.NodeId, m.Role
	case *messages.Heartbeat:
		node = m.NodeId
	case *messages.TaskStatusReport:
		node = m.NodeId
	case *messages.NetworkProgrammed:
		node = m.NodeId
	case *messages.DrainTask:
		node = m.NodeId
	}
	if id.Role != pki.RoleWorker || id.Name != node {
		return fmt.Errorf("%s %q may not report for node %q", id.Role, id.Name, node)
	}
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		return fmt.Errorf("worker %q may not register as a manager", id.Name)
	}
	return nil
}

func notFound(kind, name string) *messages.Error {
	return errReply(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "%s %q not found: list them with `warren %s ls`", kind, name, kind)
}

// toLeader routes worker messages to the leader actor, here or on the
// leader manager.
func (a *apiActor) toLeader(ctx actor.Context) {
	if a.cfg.Store.IsLeader() {
		if _, ok := ctx.ActorSystem().ProcessRegistry.GetLocal(NameLeader); ok {
			ctx.Forward(actor.NewPID(ctx.Self().Address, NameLeader))
			return
		}
		// Leader-only actors are still starting; the caller retries.
		switch ctx.Message().(type) {
		case *messages.PromoteNodeRequest, *messages.DemoteNodeRequest:
			ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "leader starting: retry")})
		}
		if _, ok := ctx.Message().(*messages.RegisterNode); ok {
			ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "leader starting: retrying")})
		}
		if _, ok := ctx.Message().(*messages.DrainTask); ok {
			ctx.Respond(&messages.DrainTaskReply{Unconfirmed: []string{"(leader starting)"}})
		}
		return
	}
	if pid := leaderPID(a.cfg.Store, NameAPI); pid != nil && pid.Address != ctx.Self().Address {
		ctx.Forward(pid)
		return
	}
	switch ctx.Message().(type) {
	case *messages.RegisterNode:
		ctx.Respond(&messages.RegisterNodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "no leader yet: retrying")})
	case *messages.PromoteNodeRequest, *messages.DemoteNodeRequest:
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "no leader: a majority of managers must be reachable; retry shortly")})
	case *messages.DrainTask:
		// Nobody can confirm anything: the task stops unconfirmed rather
		// than wait out a partition.
		ctx.Respond(&messages.DrainTaskReply{Unconfirmed: []string{"(no leader)"}})
	}
}

func (a *apiActor) clusterInfo(ctx actor.Context) {
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

func (a *apiActor) clusterInfoReply() *messages.ClusterInfoReply {
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

func (a *apiActor) findService(name string) *messages.Service {
	st := a.cfg.Store.State
	if v := st.ServiceByName(name); v != nil {
		return v
	}
	return st.Service(name)
}

func (a *apiActor) findNode(ref string) *messages.Node { return findNode(a.cfg.Store.State, ref) }

func (a *apiActor) createService(ctx actor.Context, m *messages.CreateServiceRequest) {
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
func (a *apiActor) withImage(ctx actor.Context, ref string, then func()) {
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

// pull fetches an image off the mailbox and answers when it is done.
func (a *apiActor) pull(ctx actor.Context, m *messages.PullImageRequest) {
	ref, err := runtime.NormalizeImageRef(m.Ref)
	if err != nil {
		ctx.Respond(&messages.PullImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)})
		return
	}
	images, plain := a.cfg.Images, m.PlainHttp
	blocking.Do(ctx, imageTimeout+5*time.Second, func() (struct{}, error) {
		c, cancel := context.WithTimeout(context.Background(), imageTimeout)
		defer cancel()
		return struct{}{}, images.PullImage(c, ref, runtime.PullOptions{PlainHTTP: plain})
	}, func(_ struct{}, err error) {
		if err != nil {
			ctx.Respond(&messages.PullImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "pull %s: %v", ref, err)})
			return
		}
		ctx.Respond(&messages.PullImageReply{Image: ref})
	})
}

func (a *apiActor) updateService(ctx actor.Context, m *messages.UpdateServiceRequest) {
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
	if err := a.portsFree(m.Spec, v.Id); err != nil {
		ctx.Respond(&messages.ServiceReply{Error: err})
		return
	}
	a.withImage(ctx, m.Spec.Image, func() {
		a.propose(ctx, &messages.Command{Op: &messages.Command_UpdateService{UpdateService: &messages.UpdateService{ServiceId: v.Id, ExpectedVersion: m.ExpectedVersion, Spec: m.Spec}}}, v.Id)
	})
}

// propose sends cmd to the store actor and, once committed, answers the
// caller with the service as applied (svcID) or the error. The api stays
// responsive meanwhile: the continuation runs when the future completes.
func (a *apiActor) propose(ctx actor.Context, cmd *messages.Command, svcID string) {
	f := ctx.RequestFuture(actor.NewPID(ctx.Self().Address, NameStore), &messages.Propose{Command: cmd}, writeTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
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
	})
}

func (a *apiActor) listTasks(ctx actor.Context, m *messages.ListTasksRequest) {
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
		n := a.findNode(m.Node)
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
		reply.Tasks = append(reply.Tasks, t)
	}
	ctx.Respond(reply)
}

// importChunk appends an upload chunk to a temp file; the last chunk imports
// it into this node's containerd and then into every other ready node's
// (air-gapped clusters have no registry to pull from).
func (a *apiActor) importChunk(ctx actor.Context, m *messages.ImportImageChunk) {
	f, ok := a.uploads[m.UploadId]
	if !ok {
		if m.Seq != 0 {
			ctx.Respond(&messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "upload %s: chunk %d without a start: run the import again", m.UploadId, m.Seq)})
			return
		}
		var err error
		if f, err = newUpload(a.cfg.UploadDir); err != nil {
			ctx.Respond(&messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "store upload: %v", err)})
			return
		}
		a.uploads[m.UploadId] = f
	}
	if _, err := f.Write(m.Data); err != nil {
		a.dropUpload(m.UploadId)
		ctx.Respond(&messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "store upload: %v (is the data dir's disk full?)", err)})
		return
	}
	if !m.Last {
		ctx.Respond(&messages.ImportImageReply{})
		return
	}
	delete(a.uploads, m.UploadId) // the goroutine below owns the file now
	var peers []string
	for _, n := range a.cfg.Store.State.Nodes() {
		if n.Id != a.cfg.NodeID && n.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY && n.Description.GetAddr() != "" {
			peers = append(peers, n.Description.GetAddr())
		}
	}
	root, images := ctx.ActorSystem().Root, a.cfg.Images
	blocking.Do(ctx, 10*time.Minute, func() (*messages.ImportImageReply, error) {
		defer func() { f.Close(); os.Remove(f.Name()) }()
		reply := &messages.ImportImageReply{}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			reply.Error = errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "read upload: %v", err)
		} else if reply.Images, err = images.ImportImage(c, f); err != nil {
			reply.Error = errReply(messages.ErrorCode_ERROR_CODE_INVALID, "import image: %v (expected an OCI layout or docker save tarball)", err)
		} else if errs := sendImage(root, f, peers); len(errs) > 0 {
			reply.Error = errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "imported here but on %d of %d other nodes it failed: %s; import again once they are up", len(errs), len(peers), strings.Join(errs, "; "))
		}
		return reply, nil
	}, func(reply *messages.ImportImageReply, err error) {
		if err != nil {
			reply = &messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "import: %v", err)}
		}
		ctx.Respond(reply)
	})
}

func newUpload(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, "import-*.tar")
}

// sendImage streams the tarball in f to the agent of every peer node, one
// acknowledged chunk at a time, and returns the failures.
func sendImage(root *actor.RootContext, f *os.File, peers []string) []string {
	var errs []string
	buf := make([]byte, 1<<20)
	for _, addr := range peers {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return append(errs, err.Error())
		}
		id := messages.NewID()
		for seq := uint64(0); ; seq++ {
			n, err := io.ReadFull(f, buf)
			last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
			if err != nil && !last {
				errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
				break
			}
			res, err := root.RequestFuture(actor.NewPID(addr, NameAgent), &messages.ImportImageChunk{UploadId: id, Seq: seq, Data: append([]byte(nil), buf[:n]...), Last: last}, 2*time.Minute).Result()
			r, _ := res.(*messages.ImportImageReply)
			if err != nil || r == nil || r.Error != nil {
				errs = append(errs, fmt.Sprintf("%s: %v %s", addr, err, r.GetError().GetMessage()))
				break
			}
			if last {
				break
			}
		}
	}
	return errs
}

func (a *apiActor) dropUpload(id string) {
	if f, ok := a.uploads[id]; ok {
		f.Close()
		os.Remove(f.Name())
		delete(a.uploads, id)
	}
}

// joinToken returns the join token for a role, replacing it first when
// asked to rotate or when it has expired (an expired token is dead: no
// holder loses anything). A TTL makes the returned token stop working that
// long from now; the expiry is in the replicated cluster info, so every
// manager's join endpoint refuses it after that.
func (a *apiActor) joinToken(ctx actor.Context, m *messages.JoinTokenRequest) {
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

// updateNode changes a node's availability and labels.
func (a *apiActor) updateNode(ctx actor.Context, m *messages.UpdateNodeRequest) {
	n := a.findNode(m.Node)
	if n == nil {
		ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
		return
	}
	if m.SetAvailability {
		n.Spec.Availability = m.Availability
	}
	if n.Spec.Labels == nil {
		n.Spec.Labels = map[string]string{}
	}
	for k, v := range m.LabelAdd {
		n.Spec.Labels[k] = v
	}
	for _, k := range m.LabelRm {
		delete(n.Spec.Labels, k)
	}
	a.writeNode(ctx, &messages.Command{Op: &messages.Command_UpsertNode{UpsertNode: &messages.UpsertNode{Node: n, ExpectedVersion: n.Meta.GetVersion()}}}, n.Id)
}

// removeNode forgets a node. A node that is still up must be drained and
// stopped first (or --force); a manager must be demoted first.
func (a *apiActor) removeNode(ctx actor.Context, m *messages.RemoveNodeRequest) {
	n := a.findNode(m.Node)
	if n == nil {
		ctx.Respond(&messages.NodeReply{Error: notFound("node", m.Node)})
		return
	}
	if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is a manager: demote it first (`warren node demote %s`)", m.Node, m.Node)})
		return
	}
	if n.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY && !m.Force {
		ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "node %s is up: drain and stop it first, or remove it anyway with --force", m.Node)})
		return
	}
	a.writeNode(ctx, &messages.Command{Op: &messages.Command_RemoveNode{RemoveNode: &messages.RemoveNode{NodeId: n.Id}}}, "")
}

func (a *apiActor) writeNode(ctx actor.Context, cmd *messages.Command, nodeID string) {
	write(ctx, cmd, writeTimeout, func(e *messages.Error) {
		reply := &messages.NodeReply{Error: e}
		if e == nil && nodeID != "" {
			reply.Node = a.cfg.Store.State.Node(nodeID)
		}
		ctx.Respond(reply)
	})
}

// after runs fn on the actor after d, in the context of the message being
// handled now (same sender), without blocking the mailbox meanwhile.
func (a *apiActor) after(ctx actor.Context, d time.Duration, fn func()) {
	f := actor.NewFuture(ctx.ActorSystem(), d+time.Second)
	root, pid := ctx.ActorSystem().Root, f.PID()
	time.AfterFunc(d, func() { root.Send(pid, &messages.Error{}) })
	ctx.ReenterAfter(f, func(any, error) { fn() })
}

func (a *apiActor) demoteSelf(ctx actor.Context) {
	st := a.cfg.Store
	askMembership(ctx, &transferLeadership{}, transferTimeout+time.Second, func(r *membershipReply) {
		if errors.Is(r.err, errOnlyVoter) || errors.Is(r.err, errNotLeading) {
			a.toLeader(ctx) // the leader refuses demoting the last voter, with the reason
			return
		}
		if err := r.err; err != nil {
			ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "hand over leadership: %v", err)})
			return
		}
		// Wait until this follower knows the new leader, then forward.
		deadline := time.Now().Add(5 * time.Second)
		var forward func()
		forward = func() {
			if pid := leaderPID(st, NameAPI); pid != nil && pid.Address != ctx.Self().Address {
				ctx.Forward(pid)
				return
			}
			if time.Now().After(deadline) {
				ctx.Respond(&messages.NodeReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "leadership moved but no new leader is known yet: run the command again")})
				return
			}
			a.after(ctx, 50*time.Millisecond, forward)
		}
		forward()
	})
}

// leaderQuiet: a follower that has not heard from its leader for this long
// (heartbeats come every 50 ms) stops sending it work; an election is due.
const leaderQuiet = 300 * time.Millisecond

// proxy passes a write to the leader's api and relays the answer. A leader
// that does not answer in time (it died: a healthy one answers in
// milliseconds) is given up on and the request decided again, until the
// hold deadline: writes survive a failover with a short delay.
func (a *apiActor) proxy(ctx actor.Context, leader *actor.PID, deadline time.Time) {
	msg := ctx.Message()
	timeout := time.Second
	switch msg.(type) {
	case *messages.CreateServiceRequest, *messages.UpdateServiceRequest:
		timeout = imageTimeout + writeTimeout // the leader may pull the image
	}
	f := ctx.RequestFuture(leader, msg, timeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		if err == nil {
			delete(a.held, msg)
			ctx.Respond(res)
			return
		}
		if time.Now().Before(deadline) {
			a.cfg.Log.Debug("leader did not answer a forwarded write; deciding again", zap.String("leader", leader.Address), zap.Error(err))
			a.after(ctx, 20*time.Millisecond, func() { a.Receive(ctx) })
			return
		}
		delete(a.held, msg)
		ctx.Respond(&messages.ServiceReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE,
			"the leader did not answer (%v): the write may or may not have been applied; check and retry", err)})
	})
}

// portsFree refuses a published port another service already publishes:
// the routing mesh answers it on every node, for one service only.
func (a *apiActor) portsFree(spec *messages.ServiceSpec, self string) *messages.Error {
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
