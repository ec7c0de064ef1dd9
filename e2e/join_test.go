package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
)

// TestJoinTokens: a join token given with --token does not stay on the
// running daemon's command line (what every local user reads in ps and
// /proc); a manager joined with a manager token holds its own signing CA
// and never the cluster's root key; demoted it deletes that CA, promoted it
// makes a new one; a token past its --ttl is refused with what to do, from
// a --token-file.
func TestJoinTokens(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 3, Bin: warrenBin})
	m0, m1, spare := h.Hosts[0], h.Hosts[1], h.Hosts[2]
	must(t, m0.StartAndWait(90*time.Second))
	mtok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "manager", "-q"))
	m1.SetJoin(mtok, m0.JoinAddr())
	must(t, m1.Start())
	waitNodes(t, m0, 2, 2)

	t.Run("the token is wiped from the daemon's command line", func(t *testing.T) {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m1.WarrenPid))
		must(t, err)
		if bytes.Contains(cmdline, []byte(mtok)) || bytes.Contains(cmdline, []byte(mtok[len(mtok)-32:])) {
			t.Fatalf("the join token is on the running daemon's command line: %q", cmdline)
		}
		if !bytes.Contains(cmdline, []byte("--token")) {
			t.Fatalf("command line %q: not the join command line this test meant to check", cmdline)
		}
	})

	t.Run("a joined manager holds its own signing CA, not the root key", func(t *testing.T) {
		certs := filepath.Join(m1.DataDir, "certs")
		for file, want := range map[string]bool{"ca-key.pem": false, "signer.pem": true, "signer-key.pem": true} {
			if _, err := os.Stat(filepath.Join(certs, file)); (err == nil) != want {
				t.Errorf("%s present = %v, want %v", file, err == nil, want)
			}
		}
		// Its intermediate signs what the CLI on it uses, trusted everywhere.
		cli(t, m1, "--manager", m1.IP+":4280", "node", "ls")
		cli(t, m0, "--manager", m1.IP+":4280", "node", "ls")
	})

	t.Run("demoted, a node deletes its signing CA; promoted, it makes a new one", func(t *testing.T) {
		signerKey := filepath.Join(m1.DataDir, "certs", "signer-key.pem")
		before, err := os.ReadFile(signerKey)
		must(t, err)
		cli(t, m0, "node", "demote", m1.Name)
		waitNodes(t, m0, 2, 1)
		eventually(t, 30*time.Second, "the demoted node's signing key removed", func() error {
			if _, err := os.Stat(signerKey); err == nil {
				return fmt.Errorf("%s still there", signerKey)
			}
			return nil
		})
		cli(t, m0, "node", "promote", m1.Name)
		waitNodes(t, m0, 2, 2)
		eventually(t, 30*time.Second, "the promoted node's new signing key", func() error {
			after, err := os.ReadFile(signerKey)
			if err != nil {
				return err
			}
			if bytes.Equal(after, before) {
				return fmt.Errorf("the old signing key came back")
			}
			return nil
		})
		if _, err := os.Stat(filepath.Join(m1.DataDir, "certs", "ca-key.pem")); err == nil {
			t.Fatal("the promoted node holds the root key")
		}
		eventually(t, 60*time.Second, "the promoted node serves the CLI", func() error {
			_, stderr, err := m1.CLI("--manager", m1.IP+":4280", "node", "ls")
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			return nil
		})
	})

	t.Run("an expired token is refused", func(t *testing.T) {
		tok := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "--rotate", "--ttl", "1s", "-q"))
		time.Sleep(1500 * time.Millisecond)
		file := filepath.Join(h.Dir, "expired-token")
		must(t, os.WriteFile(file, []byte(tok+"\n"), 0o600))
		args := []string{}
		for _, a := range spare.JoinArgs("unused", m0.JoinAddr()) {
			if a == "unused" {
				a = file
			} else if a == "--token" {
				a = "--token-file"
			}
			args = append(args, a)
		}
		out, err := spare.Exec(append(args, "--data-dir", h.Dir+"/spare")...)
		if err == nil || !strings.Contains(out, "expired at") || !strings.Contains(out, "warren cluster join-token worker") {
			t.Fatalf("join with an expired token: %v: %s", err, out)
		}
		// Asking again replaces the dead token.
		if again := strings.TrimSpace(cli(t, m0, "cluster", "join-token", "worker", "-q")); again == tok {
			t.Fatal("join-token handed out the expired token again")
		}
	})
}
