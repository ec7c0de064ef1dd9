package netmesh

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func addrs(ss ...string) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, s := range ss {
		m[netip.MustParseAddr(s)] = true
	}
	return m
}

func TestLowestFree(t *testing.T) {
	tests := []struct {
		name    string
		subnet  string
		used    map[netip.Addr]bool
		want    string
		wantErr string
	}{
		{name: "empty /24 starts after gateway", subnet: "10.88.1.0/24", want: "10.88.1.2"},
		{name: "skips used", subnet: "10.88.1.0/24", used: addrs("10.88.1.2", "10.88.1.3"), want: "10.88.1.4"},
		{name: "fills the lowest hole", subnet: "10.88.1.0/24", used: addrs("10.88.1.2", "10.88.1.4"), want: "10.88.1.3"},
		{name: "addresses outside the subnet do not count", subnet: "10.88.1.0/24", used: addrs("10.88.2.2"), want: "10.88.1.2"},
		{name: "last task address before broadcast", subnet: "10.88.1.0/29", used: addrs("10.88.1.2", "10.88.1.3", "10.88.1.4", "10.88.1.5"), want: "10.88.1.6"},
		{name: "/30 has exactly one", subnet: "10.88.1.0/30", want: "10.88.1.2"},
		{name: "/30 exhausted", subnet: "10.88.1.0/30", used: addrs("10.88.1.2"), wantErr: "all 1 task addresses in 10.88.1.0/30 are leased (1 leases exist)"},
		{name: "/29 exhausted", subnet: "10.88.1.0/29", used: addrs("10.88.1.2", "10.88.1.3", "10.88.1.4", "10.88.1.5", "10.88.1.6"), wantErr: "all 5 task addresses in 10.88.1.0/29 are leased (5 leases exist)"},
		{name: "crosses an octet in a /23", subnet: "10.88.2.0/23", used: func() map[netip.Addr]bool {
			m := map[netip.Addr]bool{}
			for a := netip.MustParseAddr("10.88.2.2"); a.Compare(netip.MustParseAddr("10.88.3.0")) < 0; a = a.Next() {
				m[a] = true
			}
			return m
		}(), want: "10.88.3.0"},
		{name: "invalid subnet", subnet: "10.88.1.0/31", wantErr: "prefix between /8 and /30"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lowestFree(netip.MustParsePrefix(tc.subnet), tc.used, len(tc.used))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("lowestFree = %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "leased") && !errors.Is(err, ErrSubnetExhausted) {
					t.Fatalf("error %v is not ErrSubnetExhausted", err)
				}
				return
			}
			if err != nil || got != netip.MustParseAddr(tc.want) {
				t.Fatalf("lowestFree = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestSubnetAddresses(t *testing.T) {
	tests := []struct {
		subnet, gateway, broadcast string
		count                      int
	}{
		{"10.88.1.0/24", "10.88.1.1", "10.88.1.255", 253},
		{"10.88.0.0/16", "10.88.0.1", "10.88.255.255", 65533},
		{"10.88.1.8/29", "10.88.1.9", "10.88.1.15", 5},
		{"10.88.1.4/30", "10.88.1.5", "10.88.1.7", 1},
	}
	for _, tc := range tests {
		t.Run(tc.subnet, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.subnet)
			if got := gatewayOf(p).String(); got != tc.gateway {
				t.Errorf("gateway = %s, want %s", got, tc.gateway)
			}
			if got := broadcastOf(p).String(); got != tc.broadcast {
				t.Errorf("broadcast = %s, want %s", got, tc.broadcast)
			}
			if got := taskAddrCount(p); got != tc.count {
				t.Errorf("task addresses = %d, want %d", got, tc.count)
			}
			for _, a := range []netip.Addr{p.Addr(), gatewayOf(p), broadcastOf(p)} {
				if IsTaskAddr(p, a) {
					t.Errorf("%s must not be a task address", a)
				}
			}
		})
	}
}

func TestValidateSubnet(t *testing.T) {
	tests := []struct {
		subnet  string
		wantErr string
	}{
		{"10.88.1.0/24", ""},
		{"10.88.1.0/30", ""},
		{"10.0.0.0/8", ""},
		{"10.88.1.1/24", "did you mean 10.88.1.0/24"},
		{"10.88.1.0/31", "between /8 and /30"},
		{"10.0.0.0/7", "between /8 and /30"},
		{"fd00::/64", "not IPv4"},
		{"127.0.0.0/24", "not a unicast range"},
		{"224.0.0.0/24", "not a unicast range"},
		{"169.254.1.0/24", "not a unicast range"},
	}
	for _, tc := range tests {
		t.Run(tc.subnet, func(t *testing.T) {
			err := validateSubnet(netip.MustParsePrefix(tc.subnet))
			if tc.wantErr == "" && err != nil {
				t.Fatalf("validateSubnet: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("validateSubnet = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
	if err := validateSubnet(netip.Prefix{}); err == nil {
		t.Fatal("validateSubnet accepted the zero prefix")
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		return Config{Subnet: netip.MustParsePrefix("10.88.1.0/24"), StateDir: "/tmp/x"}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "defaults are valid", mod: func(*Config) {}},
		{name: "no subnet", mod: func(c *Config) { c.Subnet = netip.Prefix{} }, wantErr: "no subnet configured"},
		{name: "no state dir", mod: func(c *Config) { c.StateDir = "" }, wantErr: "no state dir"},
		{name: "long bridge name", mod: func(c *Config) { c.BridgeName = "warren-bridge-01" }, wantErr: "longer than 15 bytes"},
		{name: "relative netns dir", mod: func(c *Config) { c.NetNSDir = "run/netns" }, wantErr: "not an absolute path"},
		{name: "tiny MTU", mod: func(c *Config) { c.MTU = 100 }, wantErr: "MTU 100 is out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			c.setDefaults()
			err := c.validate()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("validate: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("validate = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, id := range []string{"a", "web.1.0f3c9a", strings.Repeat("x", 128)} {
		n := hostVethName(id)
		if len(n) > 15 || !strings.HasPrefix(n, vethPrefix) || n != hostVethName(id) {
			t.Errorf("hostVethName(%q) = %q: want a stable name of at most 15 bytes starting with %q", id, n, vethPrefix)
		}
	}
	if hostVethName("a") == hostVethName("b") {
		t.Error("different tasks got the same veth name")
	}
	tests := []struct {
		id string
		ok bool
	}{
		{"web.1.0f3c9a", true},
		{"0f3c9a_b-c", true},
		{"", false},
		{".hidden", false},
		{"..", false},
		{"a/b", false},
		{"a b", false},
		{strings.Repeat("x", 129), false},
	}
	for _, tc := range tests {
		if err := validTaskID(tc.id); (err == nil) != tc.ok {
			t.Errorf("validTaskID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
	if got := macFor(netip.MustParseAddr("10.88.1.2")).String(); got != "02:57:0a:58:01:02" {
		t.Errorf("macFor = %s", got)
	}
	if got := unescapeMountinfo(`/run/a\040b\134c`); got != `/run/a b\c` {
		t.Errorf("unescapeMountinfo = %q", got)
	}
}

func TestLeaseStore(t *testing.T) {
	dir := t.TempDir()
	subnet := netip.MustParsePrefix("10.88.1.0/29")
	s, err := openLeaseStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	steps := []struct {
		op, task string
		want     string // address, or error substring
		fresh    bool
	}{
		{"acquire", "a", "10.88.1.2", true},
		{"acquire", "b", "10.88.1.3", true},
		{"acquire", "a", "10.88.1.2", false},
		{"release", "a", "", false},
		{"acquire", "c", "10.88.1.2", true},
		{"acquire", "d", "10.88.1.4", true},
		{"acquire", "e", "10.88.1.5", true},
		{"acquire", "f", "10.88.1.6", true},
		{"acquire", "g", "5 leases exist", false},
		{"release", "nobody", "", false},
	}
	for i, st := range steps {
		switch st.op {
		case "acquire":
			l, fresh, err := s.acquire(st.task, subnet, now)
			if strings.Contains(st.want, "leases") {
				if !errors.Is(err, ErrSubnetExhausted) || !strings.Contains(err.Error(), st.want) {
					t.Fatalf("step %d: acquire %s = %v, %v; want exhaustion error with %q", i, st.task, l.IP, err, st.want)
				}
				continue
			}
			if err != nil || l.IP.String() != st.want || fresh != st.fresh {
				t.Fatalf("step %d: acquire %s = %v fresh=%v, %v; want %s fresh=%v", i, st.task, l.IP, fresh, err, st.want, st.fresh)
			}
		case "release":
			if err := s.release(st.task); err != nil {
				t.Fatalf("step %d: release %s: %v", i, st.task, err)
			}
		}
	}
	before, err := s.list()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: same leases, and a subnet change moves a task to the new
	// subnet instead of keeping an unroutable address.
	s, err = openLeaseStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	after, err := s.list()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 5 || len(after) != len(before) {
		t.Fatalf("after reopen: %d leases, want %d", len(after), len(before))
	}
	for i := range after {
		if after[i].TaskID != before[i].TaskID || after[i].IP != before[i].IP {
			t.Fatalf("lease %d changed across reopen: %+v -> %+v", i, before[i], after[i])
		}
	}
	l, fresh, err := s.acquire("b", netip.MustParsePrefix("10.88.9.0/24"), now)
	if err != nil || !fresh || l.IP.String() != "10.88.9.2" {
		t.Fatalf("acquire after subnet change = %v fresh=%v, %v; want 10.88.9.2 fresh", l.IP, fresh, err)
	}
}
