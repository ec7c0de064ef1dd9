// Package cluster is Warren's multi-host e2e harness: it boots Warren hosts
// on one machine, each a network namespace on a shared switch bridge with
// its own mount, pid and uts namespaces, its own /run/containerd, its own
// embedded containerd and its own warren process, and it cleans all of it up
// (processes by PID, namespaces, cgroups, bridge, directories) even when a
// test fails. Tests drive hosts through the real CLI and inspect them with
// real tools (containerd's API, netlink, HTTP from inside a host's netns).
package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Harness is a set of hosts on one switch.
type Harness struct {
	t      testing.TB
	ID     string
	Dir    string
	Bin    string // warren binary
	bridge string
	net    byte // hosts live in 10.99.<net>.0/24
	Hosts  []*Host
}

// Host is one Warren host.
type Host struct {
	h         *Harness
	Index     int
	Name      string
	IP        string
	NetNS     string // /run/netns/<name>
	DataDir   string
	ConfigDir string
	unshare   *exec.Cmd
	InitPid   int // host-view pid of the host's init (PID 1 inside)
	warren    *exec.Cmd
	WarrenPid int
	LogPath   string
	waitErr   chan error
	joinArgs  []string // set by SetJoin: the node's command line is a join
}

// Options configure New.
type Options struct {
	Hosts int
	Bin   string // path to a built warren binary
}

// Require skips the test unless it can build hosts here.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e tests need root (network namespaces, containerd)")
	}
	for _, b := range []string{"containerd", "runc", "nsenter", "unshare", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("e2e tests need %s: run `go tool task setup`", b)
		}
	}
}

// New builds opts.Hosts hosts (without starting warren on them).
func New(t testing.TB, opts Options) *Harness {
	t.Helper()
	Require(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	dir, err := os.MkdirTemp("/tmp", "wrn-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	h := &Harness{t: t, ID: id, Dir: dir, Bin: opts.Bin, bridge: "wsw" + id, net: 100 + b[0]%150}
	t.Cleanup(h.Close)
	if err := h.makeBridge(); err != nil {
		t.Fatalf("harness bridge: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+h.Gateway()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < opts.Hosts; i++ {
		host, err := h.addHost(i)
		if err != nil {
			t.Fatalf("harness host %d: %v", i, err)
		}
		h.Hosts = append(h.Hosts, host)
	}
	return h
}

// Gateway is the machine's own address on the hosts' switch: services the
// test runs in the root namespace (a registry, say) listen there. It is
// also every host's nameserver (/etc/resolv.conf), for a test to serve.
func (h *Harness) Gateway() string { return fmt.Sprintf("10.99.%d.254", h.net) }

func (h *Harness) gateway() string { return h.Gateway() }

func (h *Harness) makeBridge() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: h.bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", h.bridge, err)
	}
	addr, _ := netlink.ParseAddr(h.gateway() + "/24")
	if err := netlink.AddrAdd(br, addr); err != nil {
		return err
	}
	return netlink.LinkSetUp(br)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (h *Harness) addHost(i int) (*Host, error) {
	host := &Host{h: h, Index: i, Name: fmt.Sprintf("wrn%s-%d", h.ID, i), IP: fmt.Sprintf("10.99.%d.%d", h.net, i+1)}
	host.NetNS = "/run/netns/" + host.Name
	host.DataDir = filepath.Join(h.Dir, fmt.Sprintf("n%d", i), "data")
	host.ConfigDir = filepath.Join(h.Dir, fmt.Sprintf("n%d", i), "cli")
	host.LogPath = filepath.Join(h.Dir, fmt.Sprintf("n%d", i), "warren.log")
	if err := os.MkdirAll(filepath.Dir(host.DataDir), 0o755); err != nil {
		return nil, err
	}
	if err := run("ip", "netns", "add", host.Name); err != nil {
		return nil, err
	}
	outer := fmt.Sprintf("wve%s%d", h.ID, i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outer, MasterIndex: 0}, PeerName: "eth0tmp"}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth: %w", err)
	}
	br, err := netlink.LinkByName(h.bridge)
	if err != nil {
		return nil, err
	}
	o, _ := netlink.LinkByName(outer)
	if err := netlink.LinkSetMaster(o, br); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(o); err != nil {
		return nil, err
	}
	peer, err := netlink.LinkByName("eth0tmp")
	if err != nil {
		return nil, err
	}
	ns, err := netns.GetFromPath(host.NetNS)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if err := netlink.LinkSetNsFd(peer, int(ns)); err != nil {
		return nil, err
	}
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer nh.Close()
	in, err := nh.LinkByName("eth0tmp")
	if err != nil {
		return nil, err
	}
	if err := nh.LinkSetName(in, "eth0"); err != nil {
		return nil, err
	}
	addr, _ := netlink.ParseAddr(host.IP + "/24")
	if err := nh.AddrAdd(in, addr); err != nil {
		return nil, err
	}
	for _, l := range []string{"lo", "eth0"} {
		link, err := nh.LinkByName(l)
		if err != nil {
			return nil, err
		}
		if err := nh.LinkSetUp(link); err != nil {
			return nil, err
		}
	}
	// A default route: VIPs and published ports need one in each host.
	if err := nh.RouteAdd(&netlink.Route{Gw: net.ParseIP(h.gateway())}); err != nil {
		return nil, fmt.Errorf("default route: %w", err)
	}
	if err := host.boot(); err != nil {
		return nil, err
	}
	return host, nil
}

// boot starts the host's init in fresh mount, pid and uts namespaces inside
// the host's network namespace (nsenter + unshare, not `ip netns exec`,
// which remounts /sys and hides the cgroups from runc).
func (host *Host) boot() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "--net="+host.NetNS, "--",
		"unshare", "--mount", "--pid", "--fork", "--mount-proc", "--uts", "--propagation", "private", self)
	cmd.Env = append(os.Environ(), initEnv+"="+host.Name, resolvEnv+"="+filepath.Join(host.h.Dir, "resolv.conf"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start host init: %w", err)
	}
	host.unshare = cmd
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
				return
			}
		}
		ready <- fmt.Errorf("host init exited before it was ready")
	}()
	select {
	case err := <-ready:
		if err != nil {
			return err
		}
	case <-time.After(15 * time.Second):
		return fmt.Errorf("host init not ready after 15s")
	}
	// nsenter execs unshare, which forks the init: find that child.
	pid, err := childOf(cmd.Process.Pid)
	if err != nil {
		return err
	}
	host.InitPid = pid
	return nil
}

// childOf returns the single child of pid.
func childOf(pid int) (int, error) {
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("process %d has no child", pid)
}

// nsenterArgs run a command in the host (all its namespaces).
func (host *Host) nsenterArgs(cmd ...string) []string {
	return append([]string{"-t", strconv.Itoa(host.InitPid), "--net", "--mount", "--pid", "--uts", "--"}, cmd...)
}

// InitArgs is the node's command line, the same on every start.
func (host *Host) InitArgs(extra ...string) []string {
	return append([]string{host.h.Bin, "--config-dir", host.ConfigDir, "cluster", "init",
		"--data-dir", host.DataDir, "--advertise", host.IP, "--hostname", host.Name,
		"--metrics-addr", "", "--enable-debug", "--log-level", "debug"}, extra...)
}

// Start runs the host's node command line in the background: `warren
// cluster init` unless SetJoin made it a `cluster join`.
func (host *Host) Start(extra ...string) error {
	args := host.InitArgs(extra...)
	if host.joinArgs != nil {
		args = append(append([]string{}, host.joinArgs...), extra...)
	}
	logf, err := os.OpenFile(host.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", host.nsenterArgs(args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start warren on %s: %w", host.Name, err)
	}
	host.warren = cmd
	host.waitErr = make(chan error, 1)
	go func() { host.waitErr <- cmd.Wait() }()
	// nsenter forks into the pid namespace; warren is its child.
	pid, err := childOf(cmd.Process.Pid)
	if err != nil {
		return err
	}
	host.WarrenPid = pid
	return nil
}

// StartAndWait starts warren and waits until the CLI gets an answer.
func (host *Host) StartAndWait(timeout time.Duration, extra ...string) error {
	if err := host.Start(extra...); err != nil {
		return err
	}
	return host.WaitReady(timeout)
}

// WaitReady waits until `warren cluster info` answers.
func (host *Host) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-host.waitErr:
			host.waitErr <- err
			return fmt.Errorf("warren on %s exited: %v\n%s", host.Name, err, host.LogTail(40))
		default:
		}
		// Ask this host itself, not whichever manager its config lists first.
		if _, _, err := host.CLI("--manager", host.IP+":4280", "cluster", "info"); err == nil {
			return nil
		} else {
			last = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("warren on %s not ready after %s: %v\n%s", host.Name, timeout, last, host.LogTail(40))
}

// Running reports whether the warren process is alive.
func (host *Host) Running() bool {
	if host.warren == nil {
		return false
	}
	select {
	case err := <-host.waitErr:
		host.waitErr <- err
		return false
	default:
		return true
	}
}

// Kill sends sig to warren and waits for it to exit.
func (host *Host) Kill(sig syscall.Signal, timeout time.Duration) error {
	if !host.Running() {
		return nil
	}
	_ = syscall.Kill(host.WarrenPid, sig)
	select {
	case <-host.waitErr:
		host.warren = nil
		return nil
	case <-time.After(timeout):
		_ = syscall.Kill(host.WarrenPid, syscall.SIGKILL)
		<-host.waitErr
		host.warren = nil
		return fmt.Errorf("warren on %s did not exit within %s of %v", host.Name, timeout, sig)
	}
}

// CLI runs the warren CLI (from the machine's root namespace, as an admin
// would from their workstation) against this host.
func (host *Host) CLI(args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(host.h.Bin, args...)
	cmd.Env = append(os.Environ(), "WARREN_CONFIG_DIR="+host.ConfigDir)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("warren %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), e.String(), err
}

// JSON runs the CLI with -o json and decodes its output.
func (host *Host) JSON(v any, args ...string) error {
	out, _, err := host.CLI(append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

// Exec runs a command inside the host.
func (host *Host) Exec(args ...string) (string, error) {
	out, err := exec.Command("nsenter", host.nsenterArgs(args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %v: %s", strings.Join(args, " "), host.Name, err, out)
	}
	return string(out), nil
}

// InNetNS runs fn on a thread inside the host's network namespace; sockets
// fn creates stay in it.
func (host *Host) InNetNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(host.NetNS)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- err // leave the thread locked: it dies with the goroutine
			return
		}
		goruntime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// HTTPGet fetches url from inside the host's network namespace.
func (host *Host) HTTPGet(url string, timeout time.Duration) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := host.InNetNS(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	cl := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	if resp.StatusCode != http.StatusOK {
		return b.String(), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b.String(), nil
}

// LogTail returns the last n lines of warren's log on the host.
func (host *Host) LogTail(n int) string {
	b, _ := os.ReadFile(host.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// NodeID reads the node id from the data dir.
func (host *Host) NodeID() string {
	var nf struct {
		NodeID string `json:"node_id"`
	}
	b, _ := os.ReadFile(filepath.Join(host.DataDir, "node.json"))
	_ = json.Unmarshal(b, &nf)
	return nf.NodeID
}

// ContainerdSocket is the host's embedded containerd socket (on disk, so
// the test can use containerd's API from outside the host).
func (host *Host) ContainerdSocket() string {
	return filepath.Join(host.DataDir, "containerd", "containerd.sock")
}

// Close tears everything down; it is safe to call more than once.
func (h *Harness) Close() {
	h.undoFaults() // faults.go: heal and plug first
	for _, host := range h.Hosts {
		if h.t.Failed() {
			h.t.Logf("--- warren log of %s ---\n%s", host.Name, host.LogTail(60))
		}
		host.shutdown()
	}
	for _, host := range h.Hosts {
		removeCgroups(host.NodeID())
		_ = run("ip", "netns", "del", host.Name)
	}
	h.Hosts = nil
	if l, err := netlink.LinkByName(h.bridge); err == nil {
		_ = netlink.LinkDel(l)
	}
	if os.Getenv("WARREN_E2E_KEEP") == "" {
		_ = os.RemoveAll(h.Dir)
	}
}

func (host *Host) shutdown() {
	if err := host.Kill(syscall.SIGTERM, 20*time.Second); err != nil {
		host.h.t.Logf("%v", err)
	}
	if host.unshare != nil && host.InitPid != 0 {
		// unshare ignores SIGTERM; its child, the init, stops the rest.
		_ = syscall.Kill(host.InitPid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = host.unshare.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(host.InitPid, syscall.SIGKILL)
			_ = syscall.Kill(-host.unshare.Process.Pid, syscall.SIGKILL)
			<-done
		}
		host.unshare = nil
	}
}

// removeCgroups deletes the node's task cgroups in every hierarchy; tasks
// killed with their pid namespace never ran runc delete.
func removeCgroups(nodeID string) {
	if len(nodeID) < 12 {
		return
	}
	parent := "warren-" + nodeID[:12]
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup/unified")
	for _, r := range roots {
		dir := filepath.Join(r, parent)
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}
