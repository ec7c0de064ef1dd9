package store

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapio"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

// Config opens a store.
type Config struct {
	Dir       string // raft.db and snapshots/ live here
	NodeID    string
	Bind      string // raft listen address host:port
	Advertise string // raft address other managers dial
	TLS       *tls.Config
	Log       *zap.Logger
	// OnChange is called after every apply (see FSM.OnChange).
	OnChange func(*messages.StateChanged)
	// ForceNewCluster rewrites the raft configuration to this node alone
	// before starting: the documented recovery when a majority of managers
	// is lost for good. The state is kept; the other managers are dropped.
	ForceNewCluster bool
}

// Store is one raft node with its FSM state.
type Store struct {
	cfg    Config
	raft   *raft.Raft
	logs   *raftboltdb.BoltStore
	snaps  raft.SnapshotStore
	trans  *raft.NetworkTransport
	fsm    *FSM
	State  *State
	leader chan bool
	// openedAt is the last log index on disk at open: WaitReplayed's goal.
	openedAt uint64
	// applyDur observes Apply: propose to applied on this manager
	// (metrics.go exports it).
	applyDur prometheus.Histogram
}

// ErrNotLeader is returned by Apply on a follower.
var ErrNotLeader = errors.New("this manager is not the leader")

// Timing: fast failover without flapping on a LAN. raft's defaults (1 s
// heartbeat/election) are tuned for WANs; Swarm's ElectionTick of 10 s is
// what made its failover slow. Leader lease must be below heartbeat timeout.
func raftConfig(id string, logger hclog.Logger) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold = 2048
	c.SnapshotInterval = 30 * time.Second
	c.TrailingLogs = 4096
	c.Logger = logger
	return c
}

// HasState reports whether dir holds a raft store already.
func HasState(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	return err == nil
}

// Open opens (or creates) the raft store in cfg.Dir. bootstrap makes this
// node the single voter of a new cluster; it is ignored when state exists.
func Open(cfg Config, bootstrap bool) (*Store, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	hl := hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Warn,
		Output: &zapio.Writer{Log: cfg.Log.Named("raft"), Level: zap.WarnLevel},
	})
	existing := HasState(cfg.Dir)
	logs, err := openLogStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl)
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	// raft.NewRaft (and RecoverCluster) panic on a log entry they cannot
	// decode, at every start: check the entries they read first.
	if err := checkLog(logs, snaps); err != nil {
		logs.Close()
		return nil, damaged(cfg.Dir, fmt.Errorf("read %s: %w", filepath.Join(cfg.Dir, "raft.db"), err))
	}
	layer, err := newTLSStreamLayer(cfg.Bind, cfg.Advertise, cfg.TLS)
	if err != nil {
		logs.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 3, Timeout: 5 * time.Second, Logger: hl,
	})
	s := &Store{cfg: cfg, logs: logs, snaps: snaps, trans: trans, State: NewState(), leader: make(chan bool, 16), applyDur: newApplyHistogram()}
	s.fsm = &FSM{State: s.State, OnChange: cfg.OnChange}
	rc := raftConfig(cfg.NodeID, hl)
	if cfg.ForceNewCluster {
		if !existing {
			trans.Close()
			logs.Close()
			return nil, fmt.Errorf("--force-new-cluster needs this manager's existing raft data in %s", cfg.Dir)
		}
		// Recovery replays into a scratch FSM; the real one restores from
		// the snapshot RecoverCluster leaves behind.
		scratch := &FSM{State: NewState()}
		if err := raft.RecoverCluster(rc, scratch, logs, logs, snaps, trans, raft.Configuration{Servers: []raft.Server{{
			ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(cfg.Advertise), Suffrage: raft.Voter,
		}}}); err != nil {
			trans.Close()
			logs.Close()
			return nil, fmt.Errorf("force new cluster: %w", err)
		}
		cfg.Log.Warn("raft configuration rewritten: this manager is now the only voter (--force-new-cluster)")
	}
	rc.NotifyCh = s.leader
	r, err := newRaft(rc, s.fsm, logs, snaps, trans)
	if err != nil {
		trans.Close()
		logs.Close()
		return nil, damaged(cfg.Dir, err)
	}
	s.raft = r
	s.openedAt = r.LastIndex()
	if bootstrap && !existing {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(cfg.Advertise), Suffrage: raft.Voter,
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			s.Close()
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	return s, nil
}

// LeaderCh delivers true when this node becomes leader and false when it
// stops being leader.
func (s *Store) LeaderCh() <-chan bool { return s.leader }

// IsLeader reports whether this node is the raft leader now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's raft address and id ("" when unknown).
func (s *Store) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// WaitLeader blocks until some node is leader or timeout passes.
func (s *Store) WaitLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if a, _ := s.Leader(); a != "" {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("no raft leader after %s: a majority of managers must be reachable", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Apply proposes cmd and waits until it is committed and applied here.
func (s *Store) Apply(cmd *messages.Command, timeout time.Duration) (*messages.CommandResult, error) {
	if cmd.UnixNano == 0 {
		cmd.UnixNano = time.Now().UnixNano()
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("marshal command: %w", err)
	}
	start := time.Now()
	f := s.raft.Apply(data, timeout)
	err = f.Error()
	if err == nil {
		s.applyDur.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	res, _ := f.Response().(*messages.CommandResult)
	if res == nil {
		return nil, errors.New("raft apply returned no result")
	}
	return res, nil
}

// Barrier waits until every committed entry is applied locally (a
// read-your-writes point for a new leader). Only the manager's membership
// actor calls it (a test there checks).
func (s *Store) Barrier(timeout time.Duration) error { return s.raft.Barrier(timeout).Error() }

// Snapshot forces a snapshot now (tests, and before a planned stop).
func (s *Store) Snapshot() error { return s.raft.Snapshot().Error() }

// Stats exposes raft's counters for `cluster info`.
func (s *Store) Stats() map[string]string { return s.raft.Stats() }

// Close stops raft and closes the log store.
func (s *Store) Close() error {
	var errs []error
	if s.raft != nil {
		errs = append(errs, s.raft.Shutdown().Error())
	}
	if s.trans != nil {
		errs = append(errs, s.trans.Close())
	}
	errs = append(errs, s.logs.Close())
	return errors.Join(errs...)
}

var _ io.Closer = (*Store)(nil)

// Server is one raft voter.
type Server struct {
	ID, Addr string
	Voter    bool
}

// Servers returns the raft configuration.
// Only the manager's membership actor calls it (a test there checks).
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(sv.ID), Addr: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds a manager to the raft configuration (leader only).
// Only the manager's membership actor calls it (a test there checks).
func (s *Store) AddVoter(id, addr string, timeout time.Duration) error {
	return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout).Error()
}

// RemoveServer removes a manager from the raft configuration (leader only).
// Only the manager's membership actor calls it (a test there checks).
func (s *Store) RemoveServer(id string, timeout time.Duration) error {
	return s.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error()
}

// TransferLeadership hands leadership to another voter before a planned
// stop, so the cluster does not wait out an election timeout. Only the
// manager's membership actor calls it (a test there checks).
func (s *Store) TransferLeadership() error {
	if !s.IsLeader() {
		return nil
	}
	servers, err := s.Servers()
	if err != nil || len(servers) < 2 {
		return err
	}
	return s.raft.LeadershipTransfer().Error()
}

// LeaderFresh reports whether a follower heard from its leader within d:
// a follower that has not is about to start an election, and a write
// forwarded to that leader would likely be lost.
func (s *Store) LeaderFresh(d time.Duration) bool {
	return time.Since(s.raft.LastContact()) < d
}

// WaitReplayed waits until this node applied every entry its log held when
// it opened (a follower applies them only once a leader tells it they are
// committed), so a restarted manager does not serve an empty state.
func (s *Store) WaitReplayed(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for s.raft.AppliedIndex() < s.openedAt {
		if time.Now().After(deadline) {
			return fmt.Errorf("raft log replayed to %d of %d after %s: is a majority of managers reachable?", s.raft.AppliedIndex(), s.openedAt, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
