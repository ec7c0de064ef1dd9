package host

// A role change: the node stores the certificate of its new role and
// restarts in it.

import (
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// changeRole stores the certificate of the node's new role and asks the
// runner to restart the node in it. A demoted manager drops its raft data
// and its signing keys (its intermediate, and the root key if it founded
// the cluster); a promoted worker stores the intermediate CA it was
// issued for the key it made (signerCertPEM, signerKeyPEM), starts raft
// empty and is added as a voter when it registers.
func (n *Node) changeRole(role messages.NodeRole, certPEM, keyPEM, caPEM, signerCertPEM, signerKeyPEM []byte) {
	// Once per run: a second call (a late assignment while this node stops)
	// would rewrite the key pair under the restarting node.
	if !n.roleChanging.CompareAndSwap(false, true) {
		return
	}
	log := setLogNode(n.cfg.Log, n.File.NodeID[:12])
	cd := certDir(n.cfg.DataDir)
	nf := *n.File
	nf.Role = pki.RoleWorker
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		nf.Role = pki.RoleManager
		// What an interrupted earlier change left goes first: the
		// intermediate key is written as a new file.
		s, err := pki.SignerFromPEM(caPEM, signerCertPEM, signerKeyPEM)
		if err == nil {
			err = pki.RemoveSigner(cd)
		}
		if err == nil {
			err = s.SaveSigner(cd)
		}
		if err != nil {
			log.Error("role change: signing CA", zap.Error(err))
			return
		}
	}
	if err := pki.WriteFile(filepath.Join(cd, pki.RootCertFile), caPEM); err != nil {
		log.Error("role change", zap.Error(err))
		return
	}
	if err := (&pki.Identity{CertPEM: certPEM, KeyPEM: keyPEM}).Save(cd, "node"); err != nil {
		log.Error("role change", zap.Error(err))
		return
	}
	nf.Bootstrapped = false
	if err := writeNodeFile(n.cfg.DataDir, &nf); err != nil {
		log.Error("role change", zap.Error(err))
		return
	}
	if nf.Role != pki.RoleManager {
		// A node keeps no signing key it has no role for: what a worker
		// holds, a compromised worker gives away. Removed only now, so a
		// crash before leaves a manager that still starts (and start
		// finishes the removal on a worker).
		if err := pki.RemoveSigner(cd); err != nil {
			log.Error("role change: remove signing keys", zap.Error(err))
		}
	}
	log.Info("role changed; restarting the node in its new role", zap.String("role", nf.Role))
	select {
	case n.restart <- struct{}{}:
	default:
	}
}

// DropRaft removes a demoted manager's raft data (call after Stop).
func DropRaft(dataDir string) error {
	nf, err := ReadNodeFile(dataDir)
	if err != nil || nf == nil || nf.Role == pki.RoleManager {
		return err
	}
	return os.RemoveAll(filepath.Join(dataDir, "raft"))
}
