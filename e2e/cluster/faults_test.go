package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests need no warren binary: they check each fault with real
// traffic between the hosts' network namespaces, and real processes.

func newHarness(t *testing.T, hosts int) *Harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fault tests need root (network namespaces, nftables)")
	}
	return New(t, Options{Hosts: hosts})
}

// probeServer answers "ok" to every TCP connection and counts UDP
// datagrams, on one port of a host (the gateway when host is nil).
type probeServer struct {
	addr string // ip:port
	ln   net.Listener
}

func serve(t *testing.T, h *Harness, host *Host) *probeServer {
	t.Helper()
	var ln net.Listener
	listen := func() error {
		var err error
		ln, err = net.Listen("tcp4", ":0")
		return err
	}
	ip := h.Gateway()
	if host == nil {
		must(t, listen())
	} else {
		must(t, host.InNetNS(listen))
		ip = host.IP
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok"))
			c.Close()
		}
	}()
	return &probeServer{addr: net.JoinHostPort(ip, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), ln: ln}
}

// dial connects from host (the gateway when nil) and reads the answer.
func dial(from *Host, addr string, timeout time.Duration) error {
	try := func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(b) != "ok" {
			return errors.New("answer " + strconv.Quote(string(b)))
		}
		return nil
	}
	if from == nil {
		return try()
	}
	return from.InNetNS(try)
}

func who(host *Host) string {
	if host == nil {
		return "gateway"
	}
	return host.Name
}

func reachable(t *testing.T, from *Host, to *probeServer) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = dial(from, to.addr, time.Second); err == nil {
			return
		}
	}
	t.Errorf("%s cannot reach %s: %v", who(from), to.addr, err)
}

// blocked expects a silent drop: a timeout, not a refusal (which would mean
// the packet got through) nor an error on send.
func blocked(t *testing.T, from *Host, to *probeServer) {
	t.Helper()
	err := dial(from, to.addr, 500*time.Millisecond)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%s -> %s: want a timeout, got %v", who(from), to.addr, err)
	}
}

// udpDelivered sends datagrams from one host to another for up to wait and
// reports whether one arrived.
func udpDelivered(t *testing.T, from, to *Host, wait time.Duration) bool {
	t.Helper()
	var pc net.PacketConn
	must(t, to.InNetNS(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", ":0")
		return err
	}))
	defer pc.Close()
	var c net.Conn
	addr := net.JoinHostPort(to.IP, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
	must(t, from.InNetNS(func() error {
		var err error
		c, err = net.Dial("udp4", addr)
		return err
	}))
	defer c.Close()
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	buf := make([]byte, 64)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		if _, err := c.Write([]byte(token)); err != nil {
			t.Fatalf("send %s -> %s: %v (a drop must be silent)", from.Name, to.Name, err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := pc.ReadFrom(buf); err == nil && string(buf[:n]) == token {
			return true
		}
	}
	return false
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPartition(t *testing.T) {
	h := newHarness(t, 3)
	a, b, c := h.Hosts[0], h.Hosts[1], h.Hosts[2]
	sa, sb, sc, sgw := serve(t, h, a), serve(t, h, b), serve(t, h, c), serve(t, h, nil)
	// Warren's own table must survive every fault and every heal.
	_, err := a.Exec("nft", "add", "table", "inet", "warren")
	must(t, err)

	t.Run("all connected at first", func(t *testing.T) {
		for _, from := range []*Host{nil, a, b, c} {
			for _, to := range []*probeServer{sa, sb, sc, sgw} {
				reachable(t, from, to)
			}
		}
	})

	t.Run("a|b cuts both ways and nothing else", func(t *testing.T) {
		must(t, h.Partition([]*Host{a}, []*Host{b}))
		blocked(t, a, sb)
		blocked(t, b, sa)
		for _, p := range []struct {
			from *Host
			to   *probeServer
		}{{a, sc}, {c, sa}, {b, sc}, {c, sb}, {nil, sa}, {nil, sb}, {a, sgw}, {b, sgw}} {
			reachable(t, p.from, p.to)
		}
	})

	t.Run("heal restores, twice is fine", func(t *testing.T) {
		must(t, h.Heal())
		reachable(t, a, sb)
		reachable(t, b, sa)
		must(t, h.Heal())
		out, err := a.Exec("nft", "list", "tables")
		must(t, err)
		if strings.Contains(out, FaultsTable) || !strings.Contains(out, "table inet warren") {
			t.Fatalf("tables after heal:\n%s", out)
		}
	})

	t.Run("a set against a set", func(t *testing.T) {
		must(t, h.Partition([]*Host{a}, []*Host{b, c}))
		blocked(t, a, sb)
		blocked(t, a, sc)
		blocked(t, c, sa)
		reachable(t, b, sc)
		reachable(t, c, sb)
		must(t, h.Heal())
	})

	t.Run("isolate keeps the gateway", func(t *testing.T) {
		must(t, h.Isolate(c))
		blocked(t, c, sa)
		blocked(t, c, sb)
		blocked(t, a, sc)
		blocked(t, b, sc)
		reachable(t, a, sb)
		reachable(t, nil, sc)
		reachable(t, c, sgw)
		must(t, h.Heal())
		reachable(t, a, sc)
	})

	t.Run("bad sides are refused", func(t *testing.T) {
		if err := h.Partition(nil, []*Host{b}); err == nil {
			t.Error("partition with an empty side succeeded")
		}
		if err := h.Partition([]*Host{a}, []*Host{a, b}); err == nil {
			t.Error("partition with a host on both sides succeeded")
		}
		if err := h.Isolate(a, b, c); err == nil {
			t.Error("isolating every host succeeded")
		}
	})
}

func TestPartitionOneWay(t *testing.T) {
	h := newHarness(t, 3)
	a, b, c := h.Hosts[0], h.Hosts[1], h.Hosts[2]
	if !udpDelivered(t, a, b, 3*time.Second) {
		t.Fatal("a -> b not delivered before any fault")
	}
	must(t, h.PartitionOneWay([]*Host{a}, []*Host{b}))
	if udpDelivered(t, a, b, time.Second) {
		t.Error("a -> b delivered through a one-way partition a -> b")
	}
	if !udpDelivered(t, b, a, 3*time.Second) {
		t.Error("b -> a not delivered: a one-way partition a -> b cut both ways")
	}
	if !udpDelivered(t, a, c, 3*time.Second) || !udpDelivered(t, c, b, 3*time.Second) {
		t.Error("a one-way partition a -> b cut a third host")
	}
	// TCP needs both directions.
	blocked(t, a, serve(t, h, b))
	must(t, h.Heal())
	if !udpDelivered(t, a, b, 3*time.Second) {
		t.Error("a -> b not delivered after heal")
	}
}

func TestUnplug(t *testing.T) {
	h := newHarness(t, 2)
	a, b := h.Hosts[0], h.Hosts[1]
	sa, sb, sgw := serve(t, h, a), serve(t, h, b), serve(t, h, nil)
	reachable(t, a, sb)
	must(t, b.Unplug())
	for _, p := range []struct {
		from *Host
		to   *probeServer
	}{{a, sb}, {nil, sb}, {b, sa}, {b, sgw}} {
		if err := dial(p.from, p.to.addr, 500*time.Millisecond); err == nil {
			t.Errorf("%s reached %s through a pulled cable", who(p.from), p.to.addr)
		}
	}
	reachable(t, a, sgw)
	must(t, b.Plug())
	must(t, b.Plug())
	reachable(t, a, sb)
	reachable(t, nil, sb)
	reachable(t, b, sa)
}

// TestKillContainerd runs a real containerd the way Warren embeds it
// (`containerd --config <DataDir>/containerd/config.toml`) and kills it.
func TestKillContainerd(t *testing.T) {
	h := newHarness(t, 1)
	host := h.Hosts[0]
	if _, err := host.KillContainerd(); err == nil {
		t.Fatal("KillContainerd found a containerd on a host that runs none")
	}
	dir := filepath.Join(host.DataDir, "containerd")
	must(t, os.MkdirAll(dir, 0o700))
	config := filepath.Join(dir, "config.toml")
	must(t, os.WriteFile(config, []byte(`version = 2
root = "`+dir+`/root"
state = "/run/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "`+host.ContainerdSocket()+`"
`), 0o600))
	cmd := exec.Command("nsenter", host.nsenterArgs("containerd", "--config", config)...)
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	must(t, err)
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	want, err := childOf(cmd.Process.Pid)
	must(t, err)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(host.ContainerdSocket()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up; its log is %s", log.Name())
		}
	}

	pid, err := host.KillContainerd()
	must(t, err)
	if pid != want {
		t.Fatalf("KillContainerd killed %d, containerd is %d", pid, want)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("containerd's nsenter ended with %v, want killed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("containerd's nsenter did not exit")
	}
}

func alive(pid int) bool { return !procGone(pid, 0) }

func TestPowerOffBoot(t *testing.T) {
	h := newHarness(t, 2)
	a, b := h.Hosts[0], h.Hosts[1]
	// A stand-in for warren (named so: no binary is built here) lets Start,
	// Running and the warren bookkeeping be checked across a power-off.
	fake := filepath.Join(t.TempDir(), "fake-warren")
	must(t, os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755))
	h.Bin = fake
	must(t, b.Start())
	if !b.Running() {
		t.Fatal("the fake warren is not running")
	}
	_, err := b.Exec("sh", "-c", "echo on > /run/warren/marker")
	must(t, err)
	sleeper := exec.Command("nsenter", b.nsenterArgs("sleep", "1000")...)
	must(t, sleeper.Start())
	slept := make(chan error, 1)
	go func() { slept <- sleeper.Wait() }()
	sleepPid, err := childOf(sleeper.Process.Pid)
	must(t, err)
	oldInit, warrenPid := b.InitPid, b.WarrenPid

	must(t, b.PowerOff())
	for what, pid := range map[string]int{"init": oldInit, "sleep": sleepPid, "warren": warrenPid} {
		if alive(pid) {
			t.Errorf("%s (%d) survived the power-off", what, pid)
		}
	}
	select {
	case <-slept:
	case <-time.After(5 * time.Second):
		t.Error("the sleep's nsenter did not exit")
	}
	if b.Running() || b.PoweredOn() {
		t.Errorf("after power-off: Running=%v PoweredOn=%v", b.Running(), b.PoweredOn())
	}
	if _, err := b.Exec("true"); err == nil {
		t.Error("Exec works on a powered-off host")
	}
	if err := b.PowerOff(); err == nil {
		t.Error("powering off twice succeeded")
	}
	if _, err := os.Stat(b.NetNS); err != nil {
		t.Errorf("the network namespace did not survive: %v", err)
	}

	must(t, b.Boot())
	if err := b.Boot(); err == nil {
		t.Error("booting a running host succeeded")
	}
	if b.InitPid == 0 || b.InitPid == oldInit || !b.PoweredOn() {
		t.Fatalf("after boot: init %d (was %d), PoweredOn=%v", b.InitPid, oldInit, b.PoweredOn())
	}
	out, err := b.Exec("hostname")
	must(t, err)
	if strings.TrimSpace(out) != b.Name {
		t.Errorf("hostname %q, want %q", strings.TrimSpace(out), b.Name)
	}
	if _, err := b.Exec("test", "-e", "/run/warren/marker"); err == nil {
		t.Error("/run/warren kept its content across a power cycle")
	}
	if b.Running() {
		t.Error("warren runs right after boot")
	}
	reachable(t, a, serve(t, h, b))
	must(t, b.Start())
	if !b.Running() {
		t.Error("warren does not start after boot")
	}
}

// TestCloseAfterFaults leaves every fault in place and checks that Close
// removes all of it.
func TestCloseAfterFaults(t *testing.T) {
	h := newHarness(t, 3)
	a, b, c := h.Hosts[0], h.Hosts[1], h.Hosts[2]
	must(t, h.Partition([]*Host{a}, []*Host{b}))
	must(t, h.PartitionOneWay([]*Host{b}, []*Host{c}))
	must(t, c.Unplug())
	must(t, b.PowerOff())
	inits := []int{a.InitPid, c.InitPid}
	netnss := []string{a.NetNS, b.NetNS, c.NetNS}
	bridge, dir := h.bridge, h.Dir

	done := make(chan struct{})
	go func() { h.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Close hangs after faults")
	}
	for _, pid := range inits {
		if alive(pid) {
			t.Errorf("init %d survived Close", pid)
		}
	}
	for _, ns := range netnss {
		if _, err := os.Stat(ns); err == nil {
			t.Errorf("%s survived Close", ns)
		}
	}
	if _, err := net.InterfaceByName(bridge); err == nil {
		t.Errorf("bridge %s survived Close", bridge)
	}
	if os.Getenv("WARREN_E2E_KEEP") == "" {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s survived Close", dir)
		}
	}
}
