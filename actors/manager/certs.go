package manager

import (
	"net"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// certificate signs a certificate for a node's current role: a node that
// was promoted or demoted asks for one before it restarts in the new role.
// A node may ask only for itself, and gets the role the state gives it.
func (a *apiActor) certificate(ctx actor.Context, m *messages.CertificateRequest) {
	id := remoting.Identity(ctx)
	if id.Role != "local" && id.Name != m.NodeId {
		ctx.Respond(&messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "%s may not ask for a certificate for node %s", id.Name, m.NodeId)})
		return
	}
	n := a.cfg.Store.State.Node(m.NodeId)
	if n == nil || a.cfg.CA == nil {
		ctx.Respond(&messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_NOT_FOUND, "node %s unknown here", m.NodeId)})
		return
	}
	role, roleName := n.Spec.GetRole(), pki.RoleWorker
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		roleName = pki.RoleManager
	}
	var ips []net.IP
	if host, _, err := net.SplitHostPort(n.Description.GetAddr()); err == nil {
		ips = append(ips, net.ParseIP(host))
	}
	cert, err := a.cfg.CA.SignCSR(m.CsrPem, n.Id, roleName, ips, 5*365*24*time.Hour)
	if err != nil {
		ctx.Respond(&messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)})
		return
	}
	reply := &messages.CertificateReply{Role: role, CertPem: cert, CaPem: a.cfg.CA.PEM}
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		if reply.CaKeyPem, err = a.cfg.CA.KeyPEM(); err != nil {
			ctx.Respond(&messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "%v", err)})
			return
		}
	}
	ctx.Respond(reply)
}
