package manager

import (
	"errors"
	"net"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// certificate signs a certificate for a node's current role: a node that
// was promoted or demoted asks for one before it restarts in the new role.
// A node may ask only for itself, and gets the role the state gives it (an
// admin's promote or demote), never one it asks for. A manager also gets
// its own intermediate CA, for the key it generated; no private key is
// ever in the reply.
func (a *clusterAPI) certificate(ctx actor.Context, m *messages.CertificateRequest) {
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
	ctx.Respond(signForNode(a.cfg.CA, n, m))
}

// signForNode answers a certificate request for node n with ca.
func signForNode(ca *pki.CA, n *messages.Node, m *messages.CertificateRequest) *messages.CertificateReply {
	role, roleName := n.Spec.GetRole(), pki.RoleWorker
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		roleName = pki.RoleManager
	}
	var ips []net.IP
	if host, _, err := net.SplitHostPort(n.Description.GetAddr()); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			ips = append(ips, ip)
		}
	}
	cert, signer, err := ca.SignNode(n.Id, roleName, ips, m.CsrPem, m.SignerCsrPem)
	if errors.Is(err, pki.ErrPathExhausted) {
		return &messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "%v", err)}
	}
	if err != nil {
		return &messages.CertificateReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)}
	}
	return &messages.CertificateReply{Role: role, CertPem: cert, CaPem: ca.PEM, SignerCertPem: signer}
}
