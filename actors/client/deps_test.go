package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoNodeCode: a Go program that embeds the client must not pull in a
// node (raft, containerd, nftables, WireGuard, the manager or worker
// actors): the client is the public package, node code is not.
func TestNoNodeCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/warrenorch/warren/actors/host", "github.com/warrenorch/warren/actors/manager",
		"github.com/warrenorch/warren/actors/worker", "github.com/warrenorch/warren/store",
		"github.com/warrenorch/warren/runtime", "github.com/warrenorch/warren/netmesh",
		"github.com/hashicorp/raft", "github.com/containerd/", "github.com/google/nftables", "golang.zx2c4.com/wireguard",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			// store/pki is the certificate code a client needs.
			if strings.HasPrefix(dep, f) && dep != "github.com/warrenorch/warren/store/pki" {
				t.Errorf("actors/client depends on %s (node code)", dep)
			}
		}
	}
}
