package manager

import (
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
)

// TestSystemDf: an admin's df is fanned out over mutual TLS to every node
// at once; a node that answers gives its figures under the cluster's name
// for it, and one with nothing to answer (no df actor: a dead letter) is
// listed with why its figures are missing, without holding up the rest.
func TestSystemDf(t *testing.T) {
	c := startCluster(t, harnessOpts{managers: 1, workers: []string{"wrk-1", "wrk-2"}})
	m := c.mgrs[0]
	w1 := c.workers["wrk-1"]
	_, err := w1.sys.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*messages.NodeDfRequest); ok {
			ctx.Respond(&messages.NodeDiskUsage{NodeId: "forged", Hostname: "forged", DataDir: "/var/lib/warren", ImagesBytes: 7, Images: 1, RaftBytes: 0})
		}
	}), remoting.ActorDf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w1.sys.Root.StopFuture(actor.NewPID(w1.sys.Address(), remoting.ActorDf)).Wait() })

	start := time.Now()
	res, err := c.cli.ask(m, &messages.SystemDfRequest{}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := res.(*messages.SystemDfReply)
	if !ok {
		t.Fatalf("reply %T", res)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("df took %s: a node without an answer held up the others", took)
	}
	byID := map[string]*messages.NodeDiskUsage{}
	for _, n := range r.Nodes {
		byID[n.NodeId] = n
	}
	if len(r.Nodes) != 3 {
		t.Fatalf("%d rows, want one per node (manager and two workers): %v", len(r.Nodes), r.Nodes)
	}
	if got := byID["wrk-1"]; got == nil || got.ImagesBytes != 7 || got.DataDir == "" || got.Error != "" {
		t.Errorf("wrk-1's row = %v, want its figures under its own id", got)
	}
	for _, id := range []string{"wrk-2", m.id} {
		if got := byID[id]; got == nil || got.DataDir != "" || !strings.Contains(got.Error, "figures are missing") {
			t.Errorf("%s's row = %v, want no figures and why", id, got)
		}
	}
}
