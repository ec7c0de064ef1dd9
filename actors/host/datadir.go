package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenorch/warren/store/pki"
)

// NodeFile marks a Warren data dir and records who the node is, so the same
// command line resumes the node after a crash or reboot.
type NodeFile struct {
	Format    int       `json:"format"`
	ClusterID string    `json:"cluster_id"`
	NodeID    string    `json:"node_id"`
	Role      string    `json:"role"`
	Advertise string    `json:"advertise"`
	Port      int       `json:"port"`
	RaftPort  int       `json:"raft_port"`
	JoinPort  int       `json:"join_port,omitempty"`
	Hostname  string    `json:"hostname"`
	Created   time.Time `json:"created"`
	// Managers and JoinAddrs are what a joined node knew of the managers
	// when it joined; the agent keeps its own fresher list.
	Managers  []string `json:"managers,omitempty"`
	JoinAddrs []string `json:"join_addrs,omitempty"`
	// Bootstrapped: this node founded the cluster (cluster init).
	Bootstrapped bool `json:"bootstrapped,omitempty"`
	// Left: the cluster removed this node and it left; it is not resumed.
	Left bool `json:"left,omitempty"`
}

const nodeFileName = "node.json"

// Layout of a data dir.
func certDir(dataDir string) string { return filepath.Join(dataDir, "certs") }

// ReadNodeFile reads the data dir's node.json. It returns (nil, nil) for an
// empty or missing dir, and an error that says what to do for a dir that is
// not Warren's or whose node.json is damaged.
func ReadNodeFile(dataDir string) (*NodeFile, error) {
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read data dir %s: %w", dataDir, err)
	}
	data, err := os.ReadFile(filepath.Join(dataDir, nodeFileName))
	if errors.Is(err, os.ErrNotExist) {
		for _, e := range entries {
			if e.Name() != "lock" {
				return nil, fmt.Errorf("data dir %s is not empty and holds no Warren node (no %s): it is not Warren's; pick an empty or new directory with --data-dir (nothing was changed)", dataDir, nodeFileName)
			}
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dataDir, nodeFileName), err)
	}
	nf := &NodeFile{}
	if err := json.Unmarshal(data, nf); err != nil || nf.Format != 1 || nf.NodeID == "" || nf.ClusterID == "" {
		return nil, fmt.Errorf("data dir %s is damaged: %s is unreadable (%v); restore the data dir from a backup, or move it away and start a new node (nothing was changed)", dataDir, nodeFileName, err)
	}
	if _, err := os.Stat(filepath.Join(certDir(dataDir), "node.pem")); err != nil {
		return nil, fmt.Errorf("data dir %s is damaged: the node certificate is missing (%v); restore the data dir from a backup, or move it away and start a new node", dataDir, err)
	}
	return nf, nil
}

func writeNodeFile(dataDir string, nf *NodeFile) error {
	data, err := json.MarshalIndent(nf, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFile(filepath.Join(dataDir, nodeFileName), append(data, '\n'))
}

// flock is syscall.Flock; a test replaces it to produce the errors of file
// systems this machine does not have.
var flock = syscall.Flock

// dirLock is an exclusive flock on <data dir>/lock, held while the node
// runs, so a second warren on the same data dir is refused, not corrupting.
type dirLock struct{ f *os.File }

func lockDataDir(dataDir string) (*dirLock, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dataDir, err)
	}
	p := filepath.Join(dataDir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	if err := flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			// Not held by anyone: the file system cannot lock (NFS without
			// a lock daemon gives ENOLCK). Blaming a running warren would
			// send the user looking for a process that does not exist.
			f.Close()
			return nil, fmt.Errorf("lock data dir %s: %w: its file system does not support file locks; use a local directory for --data-dir", dataDir, err)
		}
		b, _ := os.ReadFile(p)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("data dir %s is in use by a running warren (pid %s): stop that node first, or use another --data-dir", dataDir, holder)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &dirLock{f: f}, nil
}

func (l *dirLock) release() {
	if l != nil && l.f != nil {
		defer func() { l.f = nil }()
		_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
		l.f.Close()
	}
}
