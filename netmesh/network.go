package netmesh

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Defaults for Config fields left zero.
const (
	DefaultBridgeName = "warren0"
	DefaultNetNSDir   = "/run/warren/netns"
	DefaultMTU        = 1500
)

// Config says how this node's task network looks. The zero value of every
// field but Subnet and StateDir has a default.
type Config struct {
	// BridgeName is the Linux bridge all task veths join; default warren0.
	BridgeName string
	// Subnet is this node's task subnet, e.g. 10.88.1.0/24. Its first
	// address is the gateway and sits on the bridge.
	Subnet netip.Prefix
	// StateDir holds the lease db (netmesh.db).
	StateDir string
	// NetNSDir is where per-task network namespaces are bind-mounted, one
	// file per task ID; default /run/warren/netns. Warren owns this
	// directory: unless it already is a mount point, a tmpfs with shared
	// propagation is mounted there, and Teardown unmounts and removes it.
	NetNSDir string
	// MTU of the bridge and of both ends of every veth, in bytes; default
	// 1500. Set it below the uplink's MTU minus overlay overhead once the
	// WireGuard mesh carries task traffic.
	MTU int
	// Log receives lifecycle events; nil discards them.
	Log *zap.Logger
}

func (c *Config) setDefaults() {
	if c.BridgeName == "" {
		c.BridgeName = DefaultBridgeName
	}
	if c.NetNSDir == "" {
		c.NetNSDir = DefaultNetNSDir
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

func (c *Config) validate() error {
	if err := validateSubnet(c.Subnet); err != nil {
		return err
	}
	if len(c.BridgeName) >= unix.IFNAMSIZ {
		return fmt.Errorf("bridge name %q is longer than %d bytes, the kernel's limit for interface names", c.BridgeName, unix.IFNAMSIZ-1)
	}
	if c.StateDir == "" {
		return errors.New("no state dir configured: set the directory that holds the lease db")
	}
	if !filepath.IsAbs(c.NetNSDir) {
		return fmt.Errorf("netns dir %q is not an absolute path", c.NetNSDir)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("MTU %d is out of range: use 576 to 65535 (or 0 for %d)", c.MTU, DefaultMTU)
	}
	return nil
}

// Network is this node's task network. Its methods are safe for concurrent
// use; they are serialised, because every one of them reads and changes the
// same kernel state.
type Network struct {
	cfg     Config
	log     *zap.Logger
	gateway netip.Addr

	mu     sync.Mutex
	leases *leaseStore // nil once closed
}

// Sandbox is one task's network: the namespace the runtime puts the
// container into, and how it is wired.
type Sandbox struct {
	TaskID    string
	NetNSPath string     // named netns file to pass to the runtime
	IP        netip.Addr // the task's address on eth0, in Config.Subnet
	Gateway   netip.Addr // the bridge address; the task's default route
	HostVeth  string     // host end of the veth pair, a bridge port
	MAC       string     // MAC of eth0 in the task's namespace
}

// New brings the node's task network to the configured state and opens the
// lease db. It is idempotent: run it on every start. It creates or
// refreshes the bridge (up, gateway address, MTU), enables IPv4 forwarding,
// and ensures nftables table inet warren. It refuses a subnet that
// overlaps another interface's address or route.
func New(cfg Config) (*Network, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("netmesh config: %w", err)
	}
	n := &Network{
		cfg:     cfg,
		log:     cfg.Log.With(zap.String("bridge", cfg.BridgeName), zap.Stringer("subnet", cfg.Subnet)),
		gateway: gatewayOf(cfg.Subnet),
	}
	leases, err := openLeaseStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if err := n.setup(); err != nil {
		_ = leases.close()
		return nil, err
	}
	n.leases = leases
	n.log.Info("task network ready", zap.Stringer("gateway", n.gateway))
	return n, nil
}

func (n *Network) setup() error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()

	bridgeIndex := 0
	if l, err := h.LinkByName(n.cfg.BridgeName); err == nil {
		bridgeIndex = l.Attrs().Index
	}
	if err := checkOverlap(h, n.cfg.Subnet, bridgeIndex); err != nil {
		return err
	}
	if err := ensureNetNSDir(n.cfg.NetNSDir); err != nil {
		return err
	}
	gw := netip.PrefixFrom(n.gateway, n.cfg.Subnet.Bits())
	if _, err := ensureBridge(h, n.cfg.BridgeName, gw, n.cfg.MTU, n.log); err != nil {
		return err
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	return ensureTable(n.cfg.Subnet, n.cfg.BridgeName)
}

var errClosed = errors.New("netmesh: network is closed")

// lock takes the Network's lock, failing if it is closed; callers unlock.
func (n *Network) lock() error {
	n.mu.Lock()
	if n.leases == nil {
		n.mu.Unlock()
		return errClosed
	}
	return nil
}

// Close closes the lease db. The bridge, the table and all sandboxes stay:
// running tasks keep their network while the node restarts.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.leases == nil {
		return nil
	}
	err := n.leases.close()
	n.leases = nil
	if err != nil {
		return fmt.Errorf("close lease db: %w", err)
	}
	return nil
}

// Sandboxes returns every task that holds a lease, ordered by IP. It reads
// the lease db only; GC is what reconciles it with the kernel.
func (n *Network) Sandboxes() ([]Sandbox, error) {
	if err := n.lock(); err != nil {
		return nil, err
	}
	defer n.mu.Unlock()
	ls, err := n.leases.list()
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out := make([]Sandbox, 0, len(ls))
	for _, l := range ls {
		out = append(out, n.sandbox(l))
	}
	return out, nil
}

func (n *Network) sandbox(l lease) Sandbox {
	return Sandbox{
		TaskID:    l.TaskID,
		NetNSPath: n.netnsPath(l.TaskID),
		IP:        l.IP,
		Gateway:   n.gateway,
		HostVeth:  hostVethName(l.TaskID),
		MAC:       macFor(l.IP).String(),
	}
}

func (n *Network) netnsPath(taskID string) string {
	return filepath.Join(n.cfg.NetNSDir, taskID)
}

// NetNSPath is where Attach puts the task's network namespace: a container
// can be created with it before Attach finishes (runc joins it at start).
func (n *Network) NetNSPath(taskID string) string { return n.netnsPath(taskID) }

// GC detaches every task that is not in keep but has a lease, a namespace
// file under NetNSDir or a veth on this node. Run it after a restart with
// the tasks that still run, so no address, namespace or veth leaks. Kept
// tasks are not checked or repaired; Attach them again for that.
func (n *Network) GC(ctx context.Context, keep map[string]bool) error {
	if err := n.lock(); err != nil {
		return err
	}
	defer n.mu.Unlock()
	found, err := n.knownTasks()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range found {
		if keep[id] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := n.detach(id); err != nil {
			errs = append(errs, err)
			continue
		}
		n.log.Info("collected stale task network", zap.String("task", id))
	}
	if err := n.removeOrphanVeths(keep); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("gc task networks: %w", errors.Join(errs...))
	}
	return nil
}

// knownTasks is every task ID with any trace on this node: a lease, a file
// under NetNSDir, or a veth labelled with it.
func (n *Network) knownTasks() ([]string, error) {
	set := map[string]bool{}
	ls, err := n.leases.list()
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	for _, l := range ls {
		set[l.TaskID] = true
	}
	entries, err := os.ReadDir(n.cfg.NetNSDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list netns dir %s: %w", n.cfg.NetNSDir, err)
	}
	for _, e := range entries {
		if validTaskID(e.Name()) == nil {
			set[e.Name()] = true
		}
	}
	veths, err := taskVeths()
	if err != nil {
		return nil, err
	}
	for id := range veths {
		set[id] = true
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// Teardown removes everything Warren created on this node: all sandboxes,
// the bridge, table inet warren and the NetNSDir mount. The lease db stays
// open (and empty); Close it afterwards. IPv4 forwarding stays on.
func (n *Network) Teardown(ctx context.Context) error {
	if err := n.lock(); err != nil {
		return err
	}
	defer n.mu.Unlock()
	found, err := n.knownTasks()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range found {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := n.detach(id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.removeOrphanVeths(nil); err != nil {
		errs = append(errs, err)
	}
	if l, err := netlink.LinkByName(n.cfg.BridgeName); err == nil {
		if l.Type() != "bridge" {
			errs = append(errs, fmt.Errorf("interface %s is a %s, not Warren's bridge; left it alone", n.cfg.BridgeName, l.Type()))
		} else if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", n.cfg.BridgeName, err))
		}
	}
	if err := deleteTable(); err != nil {
		errs = append(errs, err)
	}
	if err := n.removeNetNSDir(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("teardown task network: %w", errors.Join(errs...))
	}
	n.log.Info("task network torn down")
	return nil
}

// removeNetNSDir undoes ensureNetNSDir: unmounts everything at or under
// the directory (namespace files a failed detach left, then the tmpfs) and
// removes it if empty.
func (n *Network) removeNetNSDir() error {
	dir := filepath.Clean(n.cfg.NetNSDir)
	for range 16 {
		mps, err := mountPoints(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			break
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("remove netns dir %s: %w", dir, err)
	}
	return nil
}
