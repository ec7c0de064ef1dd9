// Package e2e holds Warren's end-to-end tests: real warren binaries on
// network-namespace hosts (see e2e/cluster), real containerd and runc, real
// raft on disk, driven through the real CLI. `go tool task test` runs them;
// they need root and skip otherwise.
package e2e
