package worker

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// The node's standing in the cluster: a role change the cluster decided
// (a new certificate, then the host restarts the node in that role), and
// leaving once the cluster removed the node.

// changeRole gets a certificate for the role the cluster now gives this
// node and hands it to the host, which restarts the node in that role. The
// node keeps running its tasks throughout; containers are adopted again.
func (a *agent) changeRole(ctx actor.Context, role messages.NodeRole) {
	if a.switching || a.cfg.OnRoleChange == nil {
		return
	}
	keyPEM, csrPEM, err := pki.NewCSR(a.cfg.NodeID)
	var signerKeyPEM, signerCSR []byte
	if err == nil && role == messages.NodeRole_NODE_ROLE_MANAGER {
		// A manager signs with its own intermediate CA; its key is made
		// here and never leaves the node.
		signerKeyPEM, signerCSR, err = pki.NewCSR("warren-manager-ca-" + a.cfg.NodeID)
	}
	if err != nil {
		a.cfg.Log.Error("role change: key", zap.Error(err))
		return
	}
	a.switching = true
	a.cfg.Log.Info("role changed by the cluster; asking for a new certificate", zap.String("role", role.String()))
	// Ask another manager than ourselves: a demoted node's own replica may
	// not know yet what the leader decided.
	target := a.managerPID()
	for i := range a.managers {
		if m := a.managers[(a.mgr+i)%len(a.managers)]; m != a.cfg.Description.GetAddr() {
			target = actor.NewPID(m, a.cfg.APIName)
			break
		}
	}
	f := ctx.RequestFuture(target, &messages.CertificateRequest{NodeId: a.cfg.NodeID, CsrPem: csrPEM, SignerCsrPem: signerCSR}, 10*time.Second)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*messages.CertificateReply)
		if err != nil || r == nil || r.Error != nil || r.Role != role {
			a.cfg.Log.Warn("role change: no certificate yet; retrying on the next assignment", zap.String("error", fmt.Sprint(err, r.GetError())))
			a.switching = false
			return
		}
		a.cfg.OnRoleChange(r.Role, r.CertPem, keyPEM, r.CaPem, r.SignerCertPem, signerKeyPEM)
	})
}

// leave: the cluster removed this node. Its tasks were replaced elsewhere
// already; stop and delete them all here, forget the cached assignments
// (a restart must not bring them back), then hand over to the host.
func (a *agent) leave(ctx actor.Context, why string) {
	if a.leaving != "" {
		return
	}
	a.leaving = why
	a.cfg.Log.Warn("this node was removed from the cluster; stopping its tasks and leaving", zap.String("why", why))
	for _, c := range a.cancel {
		c()
	}
	a.cancel = nil
	if a.db != nil {
		if err := a.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(cacheBucket)
			return errors.Join(b.Delete(keyAssign), b.Delete(keyManagers))
		}); err != nil {
			a.cfg.Log.Warn("forget cached assignments", zap.Error(err))
		}
	}
	if len(a.actors) == 0 {
		a.left(ctx)
		return
	}
	for _, pid := range a.actors {
		ctx.Send(pid, &removeTask{})
	}
	// A task whose cleanup keeps failing must not hold the node forever.
	scheduler.NewTimerScheduler(ctx).SendOnce(leaveWait, ctx.Self(), &leaveNow{})
}

func (a *agent) left(actor.Context) {
	if a.hasLeft {
		return
	}
	a.hasLeft = true
	if len(a.actors) > 0 {
		a.cfg.Log.Warn("leaving with tasks whose cleanup did not finish", zap.Int("tasks", len(a.actors)))
	} else {
		a.cfg.Log.Info("all tasks stopped; leaving the cluster")
	}
	if a.cfg.OnLeft != nil {
		go a.cfg.OnLeft(a.leaving) // it stops this actor: not from its mailbox
	}
}
