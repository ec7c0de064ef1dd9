// Package manager owns the actors every manager node runs: the store actor
// (the only writer of cluster state, proposing commands to raft), the
// membership actor (the only caller of raft's membership API: voters,
// leadership transfer, barriers), the api actor (the remote-facing edge the
// CLI and embedding programs talk to: a router that checks the caller's
// role and forwards each request to its child by resource, services, nodes,
// images and cluster), and the leader actor with its leader-only children,
// spawned when this manager wins raft leadership and stopped when it loses
// it: the scheduler, one node actor per node and one service actor per
// service. Leader-only actors rebuild everything from replicated state when
// they start, so nothing is lost across a leadership change.
package manager

import (
	"time"

	"github.com/warrenorch/warren/actors/remoting"
)

// Well-known actor names; PIDs on any manager are {address, name}.
const (
	NameManager = "manager"
	NameStore   = "manager/store"
	// NameMembership owns raft membership (membership.go).
	NameMembership = "manager/membership"
	NameAPI        = remoting.ActorAPI
	NameLeader     = "manager/leader"
	NameAgent      = "agent"
	NameEvents     = remoting.ActorEvents
)

// proposeTimeout bounds a raft apply; a write that cannot commit within it
// is reported as unavailable instead of hanging the caller.
const proposeTimeout = 10 * time.Second

// writeTimeout bounds how long a caller waits for the store actor: a write
// may be held waiting for a leader, proxied, then applied.
const writeTimeout = holdWrites + forwardTimeout + time.Second
