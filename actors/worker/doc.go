// Package worker owns the actors every node runs to execute tasks: the agent
// (registers with the managers, heartbeats, takes assignment sets, caches
// them in bbolt so the node keeps running its tasks while no manager is
// reachable and after its own restart, and batches status reports) and one
// task actor per task, which owns that task's containerd container, its
// network sandbox and its restart policy.
package worker

import (
	"context"

	"github.com/warrenorch/warren/netmesh"
)

// Network is what task actors need from the node's networking.
type Network interface {
	Attach(ctx context.Context, taskID string) (*netmesh.Sandbox, error)
	Detach(ctx context.Context, taskID string) error
	NetNSPath(taskID string) string
}
