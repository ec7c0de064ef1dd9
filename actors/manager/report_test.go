package manager

import (
	"strings"
	"testing"

	"github.com/warrenorch/warren/messages"
)

func TestCheckStatus(t *testing.T) {
	node := &messages.Node{Id: "n1", Subnet: "10.88.3.0/24"}
	running := func(ip string) *messages.TaskStatus {
		return &messages.TaskStatus{State: messages.TaskState_TASK_STATE_RUNNING, Ip: ip}
	}
	tests := []struct {
		name   string
		node   *messages.Node
		status *messages.TaskStatus
		want   string // substring of the error; "" for accepted
	}{
		{"own subnet", node, running("10.88.3.7"), ""},
		{"no address yet", node, running(""), ""},
		{"another node's subnet", node, running("10.88.4.7"), "outside the node's task subnet"},
		{"the manager's address", node, running("127.0.0.1"), "outside"},
		{"a host on the underlay", node, running("192.168.1.10"), "outside"},
		{"IPv6", node, running("fd00::1"), "not an IPv4"},
		{"IPv4-mapped IPv6", node, running("::ffff:10.88.3.7"), "not an IPv4"},
		{"garbage", node, running("10.88.3.7; drop"), "not an IPv4"},
		{"network address", node, running("10.88.3.0"), "network, gateway or broadcast"},
		{"gateway", node, running("10.88.3.1"), "network, gateway or broadcast"},
		{"broadcast", node, running("10.88.3.255"), "network, gateway or broadcast"},
		{"node without a subnet", &messages.Node{Id: "n2"}, running("10.88.3.7"), "without a task subnet"},
		{"unknown state", node, &messages.TaskStatus{State: 99}, "unknown task state"},
		{"unknown health", node, &messages.TaskStatus{Health: 42}, "unknown health"},
		{"huge container id", node, &messages.TaskStatus{ContainerId: strings.Repeat("a", 200)}, "container id"},
		{"no status", node, nil, "no status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkStatus(tt.node, tt.status)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	long := &messages.TaskStatus{Message: strings.Repeat("x", 1<<20)}
	if err := checkStatus(node, long); err != nil || len(long.Message) > maxStatusText+8 {
		t.Fatalf("a long message is cut, not refused: err %v, %d bytes", err, len(long.Message))
	}
}
