// Package actors is the root of Warren's actor tree (protoactor-go). Each
// subpackage owns one role:
//
//   - events:   lifecycle middleware and the events hub (history in bbolt)
//   - remoting: protoactor remote over mutual TLS, with per-message
//     authorization by certificate role
//   - manager:  store actor (only writer), membership actor (only caller of
//     raft's membership API), api router with one child per resource
//     (services, nodes, images, cluster), and the leader-only actors:
//     scheduler, network view, node actors, service actors
//   - worker:   the agent (assignment cache, autonomy), one task actor per
//     task, owning its containerd container and network sandbox, and the
//     netmesh actor, which programs VIPs, DNS and mesh peers
//   - blocking: the one helper that runs blocking work off a mailbox
//   - client:   the public Go client the CLI and embedding programs use; it
//     imports no node code
//   - host:     assembles a node process: data dir, certificates, embedded
//     containerd, store, actor system
//
// Actors share nothing but PIDs; what they send each other is in messages/.
package actors
