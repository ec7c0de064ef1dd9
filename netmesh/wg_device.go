package netmesh

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wgDevice is the WireGuard implementation behind the mesh interface: the
// kernel's, driven over generic netlink, or wireguard-go's in this process.
// Both take the same wgtypes configuration.
type wgDevice interface {
	configure(cfg wgtypes.Config) error
	peers() ([]wgtypes.Peer, error)
	// close releases the handle; for wireguard-go it stops the device,
	// which removes the TUN interface.
	close() error
}

// kernelDevice is a kernel WireGuard interface configured through wgctrl.
type kernelDevice struct {
	c    *wgctrl.Client
	name string
}

func (d *kernelDevice) configure(cfg wgtypes.Config) error {
	return d.c.ConfigureDevice(d.name, cfg)
}

func (d *kernelDevice) peers() ([]wgtypes.Peer, error) {
	dev, err := d.c.Device(d.name)
	if err != nil {
		return nil, err
	}
	return dev.Peers, nil
}

func (d *kernelDevice) close() error { return d.c.Close() }

// userspaceDevice is a wireguard-go device on a TUN interface, configured
// with its configuration protocol in-process (IpcSet/IpcGet): no UAPI
// socket is opened, so nothing outside this process can change it.
type userspaceDevice struct {
	dev *device.Device
}

func (d *userspaceDevice) configure(cfg wgtypes.Config) error {
	return d.dev.IpcSet(uapiSet(cfg))
}

func (d *userspaceDevice) peers() ([]wgtypes.Peer, error) {
	s, err := d.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	return parseUAPIPeers(s)
}

func (d *userspaceDevice) close() error {
	d.dev.Close()
	return nil
}

// uapiSet renders cfg in WireGuard's cross-platform configuration protocol
// (https://www.wireguard.com/xplatform/), keys in hex.
func uapiSet(cfg wgtypes.Config) string {
	var b strings.Builder
	if cfg.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *cfg.ListenPort)
	}
	if cfg.FirewallMark != nil {
		fmt.Fprintf(&b, "fwmark=%d\n", *cfg.FirewallMark)
	}
	if cfg.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.UpdateOnly {
			b.WriteString("update_only=true\n")
		}
		if p.PresharedKey != nil {
			fmt.Fprintf(&b, "preshared_key=%s\n", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", udpAddrPort(p.Endpoint))
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.String())
		}
	}
	return b.String()
}

// parseUAPIPeers reads the peers out of a configuration protocol "get"
// reply. Device-level keys before the first public_key are skipped.
func parseUAPIPeers(s string) ([]wgtypes.Peer, error) {
	var (
		out []wgtypes.Peer
		cur *wgtypes.Peer
	)
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("wireguard-go config line %q: no '='", line)
		}
		if k == "public_key" {
			b, err := hex.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("wireguard-go config: public_key %q: %w", v, err)
			}
			key, err := wgtypes.NewKey(b)
			if err != nil {
				return nil, fmt.Errorf("wireguard-go config: public_key %q: %w", v, err)
			}
			out = append(out, wgtypes.Peer{PublicKey: key})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil {
			continue
		}
		switch k {
		case "endpoint":
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return nil, fmt.Errorf("wireguard-go config: endpoint %q: %w", v, err)
			}
			cur.Endpoint = net.UDPAddrFromAddrPort(ap)
		case "persistent_keepalive_interval":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("wireguard-go config: persistent_keepalive_interval %q: %w", v, err)
			}
			cur.PersistentKeepaliveInterval = time.Duration(n) * time.Second
		case "allowed_ip":
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("wireguard-go config: allowed_ip %q: %w", v, err)
			}
			cur.AllowedIPs = append(cur.AllowedIPs, *ipNet(p))
		case "last_handshake_time_sec":
			if n, _ := strconv.ParseInt(v, 10, 64); n != 0 {
				cur.LastHandshakeTime = time.Unix(n, 0)
			}
		case "last_handshake_time_nsec":
			if n, _ := strconv.ParseInt(v, 10, 64); n != 0 && !cur.LastHandshakeTime.IsZero() {
				cur.LastHandshakeTime = cur.LastHandshakeTime.Add(time.Duration(n))
			}
		case "rx_bytes":
			cur.ReceiveBytes, _ = strconv.ParseInt(v, 10, 64)
		case "tx_bytes":
			cur.TransmitBytes, _ = strconv.ParseInt(v, 10, 64)
		case "protocol_version":
			cur.ProtocolVersion, _ = strconv.Atoi(v)
		}
	}
	return out, sc.Err()
}

// wireguardGoLogger sends wireguard-go's log to zap: its verbose lines
// (handshakes, keepalives, one per peer every few seconds) at debug, its
// errors (a send that failed, a bad packet) at warn.
func wireguardGoLogger(log *zap.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if ce := log.Check(zap.DebugLevel, ""); ce != nil {
				ce.Message = fmt.Sprintf(format, args...)
				ce.Write()
			}
		},
		Errorf: func(format string, args ...any) {
			log.Warn(fmt.Sprintf(format, args...))
		},
	}
}

// When the mesh lives in another network namespace than the calling
// process (MeshConfig.NetNS), two parts of wireguard-go would act in the
// wrong one, because they open sockets later, on whatever thread the Go
// runtime runs them:
//
//   - the UDP bind is opened by device.Up, which wireguard-go also calls
//     from its own TUN event goroutine when the link comes up;
//   - NativeTun.MTU does an ioctl by interface name on a fresh socket, on
//     every link event.
//
// nsBind and nsTUN pin both to the namespace. Their cost: wireguard-go's
// sticky-socket route listener recognises only its own *conn.StdNetBind, so
// with nsBind it is off, and a changed underlay route is noticed only when
// the peer's packets arrive from the new source. That matters on
// multi-homed hosts, not for nodes simulated in namespaces.

// nsBind opens its sockets inside a network namespace; sockets stay in the
// namespace they were made in, so everything else runs anywhere.
type nsBind struct {
	conn.Bind
	netns string
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	nsErr := withNetNS(b.netns, func() error {
		fns, actual, err = b.Bind.Open(port)
		return nil
	})
	if nsErr != nil {
		return nil, 0, nsErr
	}
	return fns, actual, err
}

// nsTUN reads the interface MTU over a netlink handle opened in the
// namespace instead of NativeTun's by-name ioctl in the caller's one.
type nsTUN struct {
	tun.Device
	h     *netlink.Handle
	index int
}

func (t *nsTUN) MTU() (int, error) {
	l, err := t.h.LinkByIndex(t.index)
	if err != nil {
		return 0, err
	}
	return l.Attrs().MTU, nil
}
