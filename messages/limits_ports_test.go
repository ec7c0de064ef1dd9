package messages

import (
	"strings"
	"testing"
)

// TestReservedPorts: each refusal row published one of Warren's own ports
// and passed validation before: --publish 4281:80 reset raft cluster-wide.
func TestReservedPorts(t *testing.T) {
	spec := func(proto string, published uint32) *ServiceSpec {
		return &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1,
			Ports: []*PortConfig{{Protocol: proto, TargetPort: 80, PublishedPort: published}}}
	}
	tests := []struct {
		name      string
		proto     string
		published uint32
		wantErr   string // substring; "" means valid
	}{
		{"remoting", "", 4280, "published port 4280/tcp is reserved for Warren's actor remoting"},
		{"raft", "tcp", 4281, "4281/tcp is reserved for Warren's raft between managers"},
		{"join", "tcp", 4282, "4282/tcp is reserved for Warren's the join endpoint"},
		{"wireguard", "udp", 51820, "51820/udp is reserved for Warren's the WireGuard mesh"},
		{"dns udp", "udp", 53, "53/udp is reserved for Warren's service DNS"},
		{"dns tcp", "tcp", 53, "53/tcp is reserved for Warren's service DNS"},
		{"metrics", "tcp", 9090, "9090/tcp is reserved for Warren's metrics"},
		{"suggests a free port", "tcp", 4280, "publish another port, e.g. --publish 4283:80"},
		{"wireguard port over tcp is free", "tcp", 51820, ""},
		{"remoting port over udp is free", "udp", 4280, ""},
		{"ordinary port", "tcp", 8080, ""},
		{"not published", "tcp", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateServiceSpec(spec(tt.proto, tt.published))
			wantValidation(t, err, tt.wantErr)
		})
	}
}

// TestValidatePublishedPortsNodeFlags: the api adds the ports its nodes were
// started with (--port 5280 and so on) to the defaults.
func TestValidatePublishedPortsNodeFlags(t *testing.T) {
	reserved := DefaultReservedPorts()
	ReserveNodePorts(reserved, 5280, 5281, 0)
	s := &ServiceSpec{Name: "web", Image: "demo:v1", Ports: []*PortConfig{
		{TargetPort: 80, PublishedPort: 5280}, {TargetPort: 81, PublishedPort: 5281},
		{TargetPort: 82, PublishedPort: 5282}, {TargetPort: 83, PublishedPort: 4282},
	}}
	err := ValidatePublishedPorts(s, reserved)
	if err == nil {
		t.Fatal("ValidatePublishedPorts accepted a node's --port and --raft-port")
	}
	for _, want := range []string{"5280/tcp is reserved for Warren's actor remoting", "5281/tcp is reserved for Warren's raft", "4282/tcp"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "5282/tcp") {
		t.Errorf("error %q refuses 5282, which no node uses (join port 0 is skipped)", err)
	}
	// The defaults map is a fresh copy: adding to one does not leak.
	if _, ok := DefaultReservedPorts()[PortKey{"tcp", 5280}]; ok {
		t.Error("DefaultReservedPorts returned a shared map")
	}
	if err := ValidatePublishedPorts(&ServiceSpec{Ports: []*PortConfig{{TargetPort: 80, PublishedPort: 8080}}}, reserved); err != nil {
		t.Errorf("ValidatePublishedPorts(8080) = %v", err)
	}
}
