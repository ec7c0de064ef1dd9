package messages

import (
	"fmt"
	"sort"
	"strings"
)

// Warren's own ports with the default flags. A published port is answered
// on every node, so a service publishing one of these would take it from
// the node itself: 4281 resets raft cluster-wide, 4280 locks the CLI out.
const (
	DefaultRemotingPort  = 4280  // actor remoting: the CLI, the api, workers (--port)
	DefaultRaftPort      = 4281  // raft between managers (--raft-port)
	DefaultJoinPort      = 4282  // join endpoint on managers (--join-port)
	DefaultWireGuardPort = 51820 // the mesh's WireGuard (udp)
	DefaultDNSPort       = 53    // service DNS on each node's gateway (tcp and udp)
	DefaultMetricsPort   = 9090  // metrics and pprof (--metrics-addr, 127.0.0.1 by default)
)

// PortKey is one port of a node: Protocol is "tcp" or "udp".
type PortKey struct {
	Protocol string
	Port     uint32
}

func (k PortKey) String() string { return fmt.Sprintf("%d/%s", k.Port, k.Protocol) }

// DefaultReservedPorts returns the ports a Warren node uses with its default
// flags, each with the Warren service that uses it. The map is new on each
// call: a caller that knows its nodes' flags adds their ports to it (see
// ReserveNodePorts) and passes it to ValidatePublishedPorts.
func DefaultReservedPorts() map[PortKey]string {
	r := map[PortKey]string{
		{"udp", DefaultWireGuardPort}: "the WireGuard mesh between nodes",
		{"tcp", DefaultDNSPort}:       "service DNS on each node's gateway",
		{"udp", DefaultDNSPort}:       "service DNS on each node's gateway",
		{"tcp", DefaultMetricsPort}:   "metrics and pprof (--metrics-addr)",
	}
	ReserveNodePorts(r, DefaultRemotingPort, DefaultRaftPort, DefaultJoinPort)
	return r
}

// ReserveNodePorts adds the tcp ports a node was started with (its --port,
// --raft-port and --join-port; 0 skips one) to reserved.
func ReserveNodePorts(reserved map[PortKey]string, remoting, raft, join uint32) {
	for _, p := range []struct {
		port uint32
		what string
	}{
		{remoting, "actor remoting, which the CLI and every node use (--port)"},
		{raft, "raft between managers (--raft-port)"},
		{join, "the join endpoint of managers (--join-port)"},
	} {
		if p.port != 0 {
			reserved[PortKey{"tcp", p.port}] = p.what
		}
	}
}

// ValidatePublishedPorts refuses a spec that publishes a port in reserved
// (see DefaultReservedPorts): publishing it would take the port from
// Warren itself on every node. ValidateServiceSpec already checks the
// default ports; the api calls this with its cluster's ports added.
func ValidatePublishedPorts(spec *ServiceSpec, reserved map[PortKey]string) error {
	var errs []string
	for _, p := range spec.GetPorts() {
		if p.GetPublishedPort() == 0 {
			continue
		}
		proto := p.GetProtocol()
		if proto == "" {
			proto = "tcp"
		}
		k := PortKey{proto, p.GetPublishedPort()}
		if what, ok := reserved[k]; ok {
			errs = append(errs, fmt.Sprintf("published port %s is reserved for Warren's %s: publish another port, e.g. --publish %d:%d", k, what, suggestPort(k, reserved), p.GetTargetPort()))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

// suggestPort returns the next free port above k's, for the error message.
func suggestPort(k PortKey, reserved map[PortKey]string) uint32 {
	for p := k.Port + 1; p <= 65535; p++ {
		if _, ok := reserved[PortKey{k.Protocol, p}]; !ok {
			return p
		}
	}
	return 8080
}
