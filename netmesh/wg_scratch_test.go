package netmesh

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestScratchRace(t *testing.T) {
	needKernel(t)
	for i := 0; i < 30; i++ {
		ok := t.Run(fmt.Sprint(i), func(t *testing.T) {
			a, b := newMeshPair(t, 1500)
			var ms []*Mesh
			for _, h := range []*meshHost{a, b} {
				cfg := h.meshConfig(t, filepath.Join(t.TempDir(), "k"))
				cfg.Log = nil
				m, err := NewMesh(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Teardown() })
				ms = append(ms, m)
			}
			capB := startCapture(t, b, "ul0")
			peers := []Peer{ms[0].Self(), ms[1].Self()}
			ms[0].SetPeers(peers)
			ms[1].SetPeers(peers)
			ln := echoServer(t, b.ns, "10.88.2.1:0")
			start := time.Now()
			c, err := dialFrom(a.ns, gatewayOf(a.subnet), ln.Addr().String(), 10*time.Second)
			if err == nil {
				c.Close()
				t.Logf("ok in %v", time.Since(start).Round(time.Millisecond))
				return
			}
			t.Errorf("dial: %v", err)
			for i, m := range ms {
				s, _ := m.dev.(*userspaceDevice).dev.IpcGet()
				var keep []string
				for _, l := range strings.Split(s, "\n") {
					if strings.HasPrefix(l, "private") || strings.HasPrefix(l, "preshared") {
						continue
					}
					keep = append(keep, l)
				}
				t.Logf("node %d: %s", i, strings.Join(keep, " "))
			}
			for _, h := range []*meshHost{a, b} {
				rx, tx := linkStats(t, h, DefaultMeshInterface)
				t.Logf("%s wg rx %d tx %d", h.name, rx, tx)
			}
			frames, _, _ := capB.close()
			for _, f := range frames {
				if len(f) < 14+28 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
					continue
				}
				ip := f[14:]
				ihl := int(ip[0]&0xf) * 4
				src := netip.AddrFrom4([4]byte(ip[12:16]))
				typ := ip[ihl+8]
				t.Logf("udp %s len %d wgtype %d recv_idx %x", src, len(f), typ, ip[ihl+12:ihl+16])
			}
		})
		if !ok {
			break
		}
	}
}
