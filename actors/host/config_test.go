package host

import (
	"strings"
	"testing"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/netmesh"
)

// The format managers write must be the one nodes read.
func TestPeerFormatsAgree(t *testing.T) {
	if messages.MeshPeerFormat != netmesh.PeerFormat {
		t.Fatalf("messages.MeshPeerFormat %d != netmesh.PeerFormat %d", messages.MeshPeerFormat, netmesh.PeerFormat)
	}
}

func TestConfigWGEndpoint(t *testing.T) {
	cases := []struct {
		endpoint string
		wantErr  string
	}{
		{endpoint: ""},
		{endpoint: "203.0.113.7:51999"},
		{endpoint: "[2001:db8::7]:51820"},
		{endpoint: "vpn.example.com:51820", wantErr: "not an IP address"},
		{endpoint: "203.0.113.7", wantErr: "not ip:port"},
		{endpoint: "203.0.113.7:0", wantErr: "non-zero port"},
		{endpoint: "0.0.0.0:51820", wantErr: "unicast"},
	}
	for _, c := range cases {
		t.Run(c.endpoint, func(t *testing.T) {
			cfg := Config{DataDir: t.TempDir(), WGEndpoint: c.endpoint}
			err := cfg.defaults()
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("defaults: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "--wg-endpoint")):
				t.Fatalf("defaults = %v, want an error about --wg-endpoint containing %q", err, c.wantErr)
			}
		})
	}
}
