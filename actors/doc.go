// Package actors is the root of Warren's actor tree (protoactor-go). Each
// subpackage owns one role:
//
//   - events:   lifecycle middleware and the events hub (history in bbolt)
//   - remoting: protoactor remote over mutual TLS, with per-message
//     authorization by certificate role
//   - manager:  store actor (only writer), api actor, and the leader-only
//     actors: scheduler, node actors, service actors
//   - worker:   the agent (assignment cache, autonomy) and one task actor per
//     task, owning its containerd container and network sandbox
//   - client:   the public Go client the CLI and embedding programs use
//   - host:     assembles a node process: data dir, certificates, embedded
//     containerd, store, actor system
//
// Actors share nothing but PIDs; what they send each other is in messages/.
package actors
