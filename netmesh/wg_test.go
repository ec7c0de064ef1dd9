package netmesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func TestValidatePeer(t *testing.T) {
	key := testKey(t).String()
	sub := netip.MustParsePrefix("10.88.1.0/24")
	for _, tc := range []struct {
		name string
		in   Peer
		want string // substring of the error; "" = accepted
	}{
		{"format 1", Peer{NodeID: "n1", PublicKey: key, Endpoint: "192.0.2.1:51820", Subnet: sub, Format: 1}, ""},
		{"format unset (0) is 1", Peer{NodeID: "n1", PublicKey: key, Subnet: sub}, ""},
		{"IPv6 endpoint", Peer{NodeID: "n1", PublicKey: key, Endpoint: "[2001:db8::1]:51820", Subnet: sub}, ""},
		{"newer format", Peer{NodeID: "n1", PublicKey: key, Subnet: sub, Format: 2}, "format 2 is newer than this node understands (up to 1); upgrade warren"},
		{"bad key", Peer{NodeID: "n1", PublicKey: "abc", Subnet: sub}, "not a base64 WireGuard key"},
		{"zero key", Peer{NodeID: "n1", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", Subnet: sub}, "all zeros"},
		{"no node", Peer{PublicKey: key, Subnet: sub}, "no node ID"},
		{"hostname endpoint", Peer{NodeID: "n1", PublicKey: key, Endpoint: "node1.example:51820", Subnet: sub}, "not an IP address"},
		{"endpoint without port", Peer{NodeID: "n1", PublicKey: key, Endpoint: "192.0.2.1", Subnet: sub}, "not ip:port"},
		{"endpoint port 0", Peer{NodeID: "n1", PublicKey: key, Endpoint: "192.0.2.1:0", Subnet: sub}, "cannot be dialled"},
		{"no subnet", Peer{NodeID: "n1", PublicKey: key}, "subnet"},
		{"subnet with host bits", Peer{NodeID: "n1", PublicKey: key, Subnet: netip.MustParsePrefix("10.88.1.1/24")}, "host bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePeer(tc.in)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidatePeer: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidatePeer error = %v, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidPeer) {
				t.Errorf("error %v does not wrap ErrInvalidPeer", err)
			}
		})
	}
}

func TestSelectPeers(t *testing.T) {
	self := testKey(t)
	selfSubnet := netip.MustParsePrefix("10.88.1.0/24")
	k2, k3, k4 := testKey(t), testKey(t), testKey(t)
	peer := func(id string, k wgtypes.Key, subnet string) Peer {
		return Peer{NodeID: id, PublicKey: k.String(), Endpoint: "192.0.2.1:51820", Subnet: netip.MustParsePrefix(subnet)}
	}
	ids := func(ps []meshPeer) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.nodeID)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		peers   []Peer
		want    []string
		wantErr []string
	}{
		{"own record by key and by ID is skipped silently", []Peer{
			peer("self", self, "10.88.1.0/24"), peer("n2", k2, "10.88.2.0/24"), peer("me", k3, "10.88.9.0/24"),
		}, []string{"n2"}, nil},
		{"overlap with own subnet", []Peer{peer("n2", k2, "10.88.0.0/16"), peer("n3", k3, "10.88.3.0/24")},
			[]string{"n3"}, []string{`node "n2": subnet 10.88.0.0/16 overlaps this node's subnet`}},
		{"overlap between peers: the later node ID loses, whatever the order", []Peer{
			peer("n4", k4, "10.88.2.128/25"), peer("n2", k2, "10.88.2.0/24"),
		}, []string{"n2"}, []string{`node "n4": subnet 10.88.2.128/25 overlaps 10.88.2.0/24 of node "n2"`}},
		{"duplicate key", []Peer{peer("n2", k2, "10.88.2.0/24"), peer("n3", k2, "10.88.3.0/24")},
			[]string{"n2"}, []string{`node "n3" has the same public key as node "n2"`}},
		{"invalid record skipped, others kept", []Peer{
			{NodeID: "bad", PublicKey: "x", Subnet: netip.MustParsePrefix("10.88.5.0/24")}, peer("n2", k2, "10.88.2.0/24"),
		}, []string{"n2"}, []string{`node "bad": public key`}},
		{"empty", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := selectPeers("me", self, selfSubnet, tc.peers)
			if !reflect.DeepEqual(ids(got), tc.want) {
				t.Errorf("peers = %v, want %v", ids(got), tc.want)
			}
			if len(tc.wantErr) == 0 && err != nil {
				t.Errorf("unexpected error %v", err)
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error = %v, want it to contain %q", err, w)
				}
			}
			if err != nil && !errors.Is(err, ErrInvalidPeer) {
				t.Errorf("error %v does not wrap ErrInvalidPeer", err)
			}
		})
	}
}

func TestPlanPeers(t *testing.T) {
	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	ep := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	want := func(k wgtypes.Key, endpoint, subnet string) meshPeer {
		mp := meshPeer{nodeID: "n", key: k, subnet: netip.MustParsePrefix(subnet)}
		if endpoint != "" {
			mp.endpoint = ep(endpoint)
		}
		return mp
	}
	have := func(k wgtypes.Key, endpoint, subnet string, keepalive time.Duration) wgtypes.Peer {
		p := wgtypes.Peer{PublicKey: k, PersistentKeepaliveInterval: keepalive, AllowedIPs: []net.IPNet{*ipNet(netip.MustParsePrefix(subnet))}}
		if endpoint != "" {
			p.Endpoint = net.UDPAddrFromAddrPort(ep(endpoint))
		}
		return p
	}
	ka := PersistentKeepalive
	full := func(k wgtypes.Key, endpoint, subnet string) wgtypes.PeerConfig {
		pc := wgtypes.PeerConfig{PublicKey: k, ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{*ipNet(netip.MustParsePrefix(subnet))}, PersistentKeepaliveInterval: &ka}
		if endpoint != "" {
			pc.Endpoint = net.UDPAddrFromAddrPort(ep(endpoint))
		}
		return pc
	}
	noKeepalive := func(pc wgtypes.PeerConfig) wgtypes.PeerConfig {
		pc.PersistentKeepaliveInterval = nil
		return pc
	}
	var high wgtypes.Key // this node's key when it is above every peer's; the zero key is below
	for i := range high {
		high[i] = 0xff
	}
	type tcase struct {
		name     string
		self     wgtypes.Key
		current  []wgtypes.Peer
		desired  []meshPeer
		last     map[wgtypes.Key]netip.AddrPort
		held     map[wgtypes.Key]bool
		want     []wgtypes.PeerConfig
		wantHold []wgtypes.Key
	}
	lastEP := map[wgtypes.Key]netip.AddrPort{k1: ep("192.0.2.1:51820")}
	for _, tc := range []tcase{
		{name: "new peer gets everything",
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24")},
			want:    []wgtypes.PeerConfig{full(k1, "192.0.2.1:51820", "10.88.2.0/24")}},
		{name: "new peer without endpoint",
			desired: []meshPeer{want(k1, "", "10.88.2.0/24")},
			want:    []wgtypes.PeerConfig{full(k1, "", "10.88.2.0/24")}},
		{name: "new peer of a node with a higher key: keepalive held back",
			self:     high,
			desired:  []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24")},
			want:     []wgtypes.PeerConfig{noKeepalive(full(k1, "192.0.2.1:51820", "10.88.2.0/24"))},
			wantHold: []wgtypes.Key{k1}},
		{name: "held peer is not given keepalive by a second SetPeers",
			self:    high,
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", 0)},
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24")},
			last:    lastEP, held: map[wgtypes.Key]bool{k1: true}},
		{name: "unchanged: nothing to do",
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", ka)},
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24")},
			last:    lastEP},
		{name: "gone peer removed before others change",
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", ka)},
			desired: []meshPeer{want(k2, "192.0.2.2:51820", "10.88.2.0/24")},
			want:    []wgtypes.PeerConfig{{PublicKey: k1, Remove: true}, full(k2, "192.0.2.2:51820", "10.88.2.0/24")}},
		{name: "subnet change replaces allowed IPs only",
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", ka)},
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.7.0/24")},
			last:    lastEP,
			want:    []wgtypes.PeerConfig{{PublicKey: k1, ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{*ipNet(netip.MustParsePrefix("10.88.7.0/24"))}}}},
		{name: "keepalive repaired",
			self:    high,
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", 0)},
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24")},
			last:    lastEP,
			want:    []wgtypes.PeerConfig{{PublicKey: k1, PersistentKeepaliveInterval: &ka}}},
		{name: "roamed peer with unchanged record is left where it roamed",
			current: []wgtypes.Peer{have(k1, "198.51.100.7:40000", "10.88.2.0/24", ka)},
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24")},
			last:    lastEP},
		{name: "changed record moves the endpoint",
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", ka)},
			desired: []meshPeer{want(k1, "192.0.2.99:51820", "10.88.2.0/24")},
			last:    lastEP,
			want:    []wgtypes.PeerConfig{{PublicKey: k1, Endpoint: net.UDPAddrFromAddrPort(ep("192.0.2.99:51820"))}}},
		{name: "after a restart the device's endpoint is the reference",
			current: []wgtypes.Peer{have(k1, "192.0.2.1:51820", "10.88.2.0/24", ka), have(k2, "192.0.2.5:51820", "10.88.3.0/24", ka)},
			desired: []meshPeer{want(k1, "192.0.2.1:51820", "10.88.2.0/24"), want(k2, "192.0.2.2:51820", "10.88.3.0/24")},
			want:    []wgtypes.PeerConfig{{PublicKey: k2, Endpoint: net.UDPAddrFromAddrPort(ep("192.0.2.2:51820"))}}},
		{name: "peer without endpoint keeps the learned one",
			current: []wgtypes.Peer{have(k3, "198.51.100.7:40000", "10.88.4.0/24", ka)},
			desired: []meshPeer{want(k3, "", "10.88.4.0/24")}},
		{name: "all removed",
			current: []wgtypes.Peer{have(k1, "", "10.88.2.0/24", ka)},
			want:    []wgtypes.PeerConfig{{PublicKey: k1, Remove: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, hold := planPeers(tc.self, tc.current, tc.desired, tc.last, tc.held)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan:\n got %s\nwant %s", uapiSet(wgtypes.Config{Peers: got}), uapiSet(wgtypes.Config{Peers: tc.want}))
			}
			if !reflect.DeepEqual(hold, tc.wantHold) {
				t.Errorf("hold = %v, want %v", hold, tc.wantHold)
			}
		})
	}
}

func TestUAPI(t *testing.T) {
	var priv, pub wgtypes.Key
	priv[0], pub[0] = 0xaa, 0xbb
	port := 51820
	ka := PersistentKeepalive
	got := uapiSet(wgtypes.Config{PrivateKey: &priv, ListenPort: &port, Peers: []wgtypes.PeerConfig{
		{PublicKey: priv, Remove: true},
		{PublicKey: pub, Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:51820")),
			PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{*ipNet(netip.MustParsePrefix("10.88.2.0/24"))}},
	}})
	hexKey := func(b byte) string { return fmt.Sprintf("%02x", b) + strings.Repeat("0", 62) }
	want := "private_key=" + hexKey(0xaa) + "\nlisten_port=51820\n" +
		"public_key=" + hexKey(0xaa) + "\nremove=true\n" +
		"public_key=" + hexKey(0xbb) + "\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.88.2.0/24\n"
	if got != want {
		t.Errorf("uapiSet:\n%s\nwant:\n%s", got, want)
	}

	// A reply as wireguard-go's IpcGet writes it.
	reply := "private_key=" + hexKey(0xaa) + "\nlisten_port=51820\n" +
		"public_key=" + hexKey(0xbb) + "\npreshared_key=" + strings.Repeat("0", 64) + "\nprotocol_version=1\n" +
		"endpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\n" +
		"persistent_keepalive_interval=25\nallowed_ip=10.88.2.0/24\n" +
		"public_key=" + hexKey(0xcc) + "\nprotocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n" +
		"persistent_keepalive_interval=0\n"
	peers, err := parseUAPIPeers(reply)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Fatalf("parsed %d peers, want 2: %+v", len(peers), peers)
	}
	p := peers[0]
	if p.PublicKey != pub || udpAddrPort(p.Endpoint) != netip.MustParseAddrPort("192.0.2.1:51820") ||
		p.PersistentKeepaliveInterval != 25*time.Second || !sameAllowedIPs(p.AllowedIPs, netip.MustParsePrefix("10.88.2.0/24")) ||
		p.TransmitBytes != 10 || p.ReceiveBytes != 20 || !p.LastHandshakeTime.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("peer 0 = %+v", p)
	}
	if q := peers[1]; q.Endpoint != nil || len(q.AllowedIPs) != 0 || !q.LastHandshakeTime.IsZero() {
		t.Errorf("peer 1 = %+v", q)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "wg.key")
	k1, created, err := loadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first load: created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != k1.String() || !strings.HasSuffix(string(b), "\n") {
		t.Errorf("key file holds %q, want the base64 key and a newline", b)
	}
	k2, created, err := loadOrCreateKey(path)
	if err != nil || created || k2 != k1 {
		t.Fatalf("second load: same=%v created=%v err=%v", k2 == k1, created, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files, want only the key (no temp files left)", len(entries))
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key file: err = %v, want a refusal naming chmod 600", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "does not hold a base64 private key") {
		t.Errorf("garbage key file: err = %v", err)
	}
}

func TestMeshConfigValidate(t *testing.T) {
	base := func() MeshConfig {
		c := MeshConfig{KeyFile: "/k", NodeID: "n1", Subnet: netip.MustParsePrefix("10.88.1.0/24")}
		c.setDefaults()
		return c
	}
	for _, tc := range []struct {
		name   string
		change func(*MeshConfig)
		want   string
	}{
		{"defaults", func(*MeshConfig) {}, ""},
		{"with everything", func(c *MeshConfig) {
			c.Endpoint = "192.0.2.1:51820"
			c.ClusterRange = netip.MustParsePrefix("10.88.0.0/16")
			c.UnderlayMTU = 9000
		}, ""},
		{"long name", func(c *MeshConfig) { c.Interface = "warren-wireguard0" }, "longer than 15 bytes"},
		{"port", func(c *MeshConfig) { c.ListenPort = 70000 }, "listen port 70000 is out of range"},
		{"no key file", func(c *MeshConfig) { c.KeyFile = "" }, "no WireGuard key file"},
		{"no node", func(c *MeshConfig) { c.NodeID = "" }, "no node ID"},
		{"no subnet", func(c *MeshConfig) { c.Subnet = netip.Prefix{} }, "no subnet configured"},
		{"endpoint name", func(c *MeshConfig) { c.Endpoint = "host:51820" }, "advertised endpoint"},
		{"range without subnet", func(c *MeshConfig) { c.ClusterRange = netip.MustParsePrefix("10.99.0.0/16") }, "does not contain"},
		{"range narrower than subnet", func(c *MeshConfig) { c.ClusterRange = netip.MustParsePrefix("10.88.1.0/25") }, "does not contain"},
		{"small underlay", func(c *MeshConfig) { c.UnderlayMTU = 1300 }, "underlay MTU 1300 is out of range: use 1360"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(&c)
			err := c.validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
