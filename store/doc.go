// Package store owns Warren's replicated cluster state: a hashicorp/raft node
// with raft-boltdb on disk, the FSM that applies messages.Command entries to an
// in-memory State with read indexes, snapshots and restore, and the mutual-TLS
// stream layer raft talks over. It is plain Go with no actors inside: the
// store actor in actors/manager wraps it and is its only writer.
//
// Every stored object carries messages.Meta whose version is the raft index of
// its last write; commands may name the version they expect and are refused
// with ERROR_CODE_CONFLICT when it moved (optimistic concurrency).
package store
