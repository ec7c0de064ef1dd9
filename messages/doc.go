// Package messages holds every type that crosses an actor or network boundary
// in Warren: stored objects (Node, Service, Task), raft commands and
// snapshots, worker assignments and reports, events, and the API requests
// and replies. The .proto files are the source; the .pb.go files are
// generated (`go tool task gen`) and committed. Helpers here are pure
// functions over these types (validation, names); no I/O.
package messages
