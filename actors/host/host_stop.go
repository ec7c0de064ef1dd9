package host

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/manager"
)

// Stop shuts the node down cleanly; containers keep running.
func (n *Node) Stop() {
	n.stopNetMesh()
	if n.metrics != nil {
		n.metrics.Close()
	}
	if n.join != nil {
		n.join.srv.Close()
	}
	if n.st != nil {
		// Hand leadership over first: the others need not wait out an
		// election timeout for a planned stop.
		if err := manager.TransferLeadership(n.system, 20*time.Second); err != nil {
			n.cfg.Log.Warn("leadership transfer", zap.Error(err))
		}
	}
	if n.system != nil {
		for _, name := range []string{manager.NameAgent, manager.NameManager, manager.NameEvents} {
			_ = n.system.Root.StopFuture(actor.NewPID(n.system.Address(), name)).Wait()
		}
	}
	if n.remote != nil {
		n.remote.Shutdown(false)
	}
	if n.st != nil {
		if err := n.st.Close(); err != nil {
			n.cfg.Log.Warn("close store", zap.Error(err))
		}
	}
	if n.dns != nil {
		n.dns.Close()
	}
	n.meshMu.Lock()
	if n.mesh != nil {
		n.mesh.Close()
	}
	n.meshMu.Unlock()
	if n.net != nil {
		n.net.Close()
	}
	if n.rt != nil {
		n.rt.Close()
	}
	if n.daemon != nil {
		if err := n.daemon.Stop(); err != nil {
			n.cfg.Log.Warn("stop containerd", zap.Error(err))
		}
	}
	n.lock.release()
}
