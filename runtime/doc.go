// Package runtime owns talking to containerd: images (import, pull, unpack),
// containers, tasks and their logs, and — when the user names no socket — a
// containerd daemon that warren runs and supervises itself (Daemon).
//
// It does not own networking: the caller creates a network namespace (netmesh)
// and passes its path in ContainerSpec.NetNSPath. It does not own scheduling or
// restart policy either: a task actor decides what runs where and when, and
// uses the Runtime interface to make it so.
//
// Everything the package knows about a container lives in containerd (labels,
// spec, task state held by the shim), so a restarted warren process adopts the
// containers and tasks of the previous one just by connecting again.
package runtime
