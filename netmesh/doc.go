// Package netmesh owns the node's task networking: the Linux bridge that
// task traffic crosses, one named network namespace and veth pair per task,
// IP leases in the node's task subnet (persisted in bbolt so a restarted
// node gives a running task the same address), and Warren's own nftables
// table `warren` (family inet) with the masquerade and forward rules that
// let tasks reach the outside world.
//
// It does not own containers: the runtime joins a container to the
// namespace at [Sandbox.NetNSPath] that [Network.Attach] prepared. It never
// reads or writes nftables tables, links or mounts that it did not create.
//
// Files by concern:
//
//	network.go  Config, Network, New/Close/Teardown/GC: the node-level lifecycle
//	bridge.go   the bridge, its gateway address, ip_forward, subnet overlap checks
//	ipam.go     the pure address allocator (lowest free address in the subnet)
//	leases.go   the bbolt lease store keyed by task ID
//	netns.go    named network namespaces bind-mounted under Config.NetNSDir
//	sandbox.go  Attach/Detach: veth pairs and the per-task namespace setup
//	nat.go      table inet warren: masquerade and forward accepts
//	wg.go       MeshConfig, Mesh: the WireGuard interface, its peers and routes
//	wg_peer.go  Peer, its versioned record for the store, validation, peer diffing
//	wg_device.go the two WireGuard backends: kernel (wgctrl) and wireguard-go
//	wg_key.go   the node's private key file
//
// The WireGuard mesh routes every other node's task subnet through one
// interface (warren-wg) whose peers are the other nodes, each allowed its
// subnet. It uses the kernel's WireGuard when the kernel has it, and
// otherwise runs wireguard-go in this process on a TUN interface. A node's
// private key never leaves its key file; what goes through Raft is the
// node's public [Peer] record ([EncodePeerInfo]). The interface has no
// address: routes into it carry the bridge gateway as source, which the
// peers accept because it lies in the sender's subnet.
//
// The WireGuard mesh between nodes, service VIPs and DNS build on this
// package (see the places marked "VIP issue" in nat.go).
package netmesh
