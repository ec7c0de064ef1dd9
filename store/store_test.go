package store

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

func testTLS(t testing.TB, dir string) *tls.Config {
	t.Helper()
	// The CA is kept on disk so the crash child and the parent share it.
	ca, err := pki.LoadCA(dir)
	if err != nil {
		ca, err = pki.NewCA("test")
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
	}
	id, err := ca.Issue("n1", pki.RoleManager, []net.IP{net.ParseIP("127.0.0.1")}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.TLSConfig(ca.PEM, id)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func openTest(t testing.TB, dir, addr string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, NodeID: "n1", Bind: addr, Advertise: addr, TLS: testTLS(t, dir)}, true)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("single voter did not become leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// TestCrashWriter is the child of TestCrashRecovery: it writes services
// forever and prints each one whose commit raft acknowledged.
func TestCrashWriter(t *testing.T) {
	dir := os.Getenv("WARREN_STORE_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	s := openTest(t, dir, os.Getenv("WARREN_STORE_CRASH_ADDR"))
	prefix := os.Getenv("WARREN_STORE_CRASH_PREFIX")
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		res, err := s.Apply(createSvc(name, name), 5*time.Second)
		if err != nil || res.Error != nil {
			fmt.Printf("error %v %v\n", err, res.GetError())
			os.Exit(3)
		}
		fmt.Printf("committed %s\n", name)
		if i%50 == 0 {
			// Snapshots mid-stream exercise restore plus log replay.
			_ = s.Snapshot()
		}
	}
}

// TestCrashRecovery SIGKILLs a process in the middle of a stream of raft
// writes many times over, and checks after every restart that no write raft
// acknowledged was lost and the state reads back whole.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	addr := freePort(t)
	committed := map[string]bool{}
	rng := rand.New(rand.NewSource(1))
	const rounds = 12
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriter$", "-test.v")
		cmd.Env = append(os.Environ(), "WARREN_STORE_CRASH_DIR="+dir, "WARREN_STORE_CRASH_ADDR="+addr, fmt.Sprintf("WARREN_STORE_CRASH_PREFIX=r%d", round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after a random number of acknowledged writes, mid-stream.
		want := 20 + rng.Intn(120)
		got := 0
		timeout := time.After(60 * time.Second)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("round %d: writer exited early", round)
				}
				if name, ok := strings.CutPrefix(l, "committed "); ok {
					committed[name] = true
					got++
					if got >= want {
						break read
					}
				} else if strings.HasPrefix(l, "error") {
					t.Fatalf("round %d: %s", round, l)
				}
			case <-timeout:
				t.Fatalf("round %d: writer too slow", round)
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for l := range lines { // acknowledged before the kill landed
			if name, ok := strings.CutPrefix(l, "committed "); ok {
				committed[name] = true
			}
		}
		_ = cmd.Wait()

		s := openTest(t, dir, addr)
		if err := s.Barrier(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, v := range s.State.Services() {
			if names[v.Spec.Name] {
				t.Fatalf("round %d: service %s twice", round, v.Spec.Name)
			}
			names[v.Spec.Name] = true
		}
		for name := range committed {
			if !names[name] {
				t.Fatalf("round %d: committed write %s lost after SIGKILL", round, name)
			}
		}
		// And the store still accepts writes.
		res, err := s.Apply(&messages.Command{Op: &messages.Command_SetClusterInfo{SetClusterInfo: &messages.SetClusterInfo{Info: &messages.ClusterInfo{ClusterId: "c"}}}}, 5*time.Second)
		if err != nil || res.Error != nil {
			t.Fatalf("round %d: write after restart: %v %v", round, err, res.GetError())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes, none lost", rounds, len(committed))
}
