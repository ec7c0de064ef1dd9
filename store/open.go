package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Opening the raft state on disk, and telling a damaged one from a busy one.

var (
	// ErrDamaged: the raft state on disk cannot be read. The error wrapping
	// it says which file and how to recover.
	ErrDamaged = errors.New("raft state is damaged")
	// ErrInUse: another process holds raft.db open.
	ErrInUse = errors.New("raft log is in use by another process")
)

// boltLockTimeout is how long opening raft.db waits for another process's
// lock. bbolt's default waits forever: a second warren on the same data
// dir would hang instead of saying so. A var so a test need not wait.
var boltLockTimeout = 2 * time.Second

// openLogStore opens <dir>/raft.db. A lock held elsewhere, a file bbolt
// cannot read (zeroed or torn meta pages, garbage pages, a wrong version)
// and a refusing file system are three different errors, each saying what
// to do.
func openLogStore(dir string) (*raftboltdb.BoltStore, error) {
	path := filepath.Join(dir, "raft.db")
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		// raftboltdb.New panics on some damaged pages while holding the
		// file's lock, which a recover could not release: check the file
		// read-only first, on a handle this function closes.
		if err := checkBolt(path); err != nil {
			return nil, classifyOpenErr(dir, err)
		}
	}
	opts := *bolt.DefaultOptions
	opts.Timeout = boltLockTimeout
	logs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &opts})
	if err != nil {
		return nil, classifyOpenErr(dir, err)
	}
	return logs, nil
}

// checkBolt opens path read-only and walks every page (bbolt's consistency
// check), turning a panic on a garbage page into an error.
func checkBolt(path string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: boltLockTimeout})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err // the first problem is enough to say the file is damaged
		}
		return nil
	})
}

// classifyOpenErr says whether opening raft.db failed on a lock, on the
// file system, or on what the file holds.
func classifyOpenErr(dir string, err error) error {
	path := filepath.Join(dir, "raft.db")
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open raft log %s: %w: another process kept it locked for %s (is another warren running on this data dir?); stop that process first, or use another --data-dir", path, ErrInUse, boltLockTimeout)
	case errors.As(err, &pathErr):
		// Permissions or a full disk: the data may be intact, so no
		// recovery that drops it is suggested.
		return fmt.Errorf("open raft log %s: %w", path, err)
	}
	return damaged(dir, fmt.Errorf("read %s: %w", path, err))
}

// damaged wraps err, a failure to read the raft state in dir, with
// ErrDamaged and the ways back: the state lives on in the other managers,
// or in a backup.
func damaged(dir string, err error) error {
	return fmt.Errorf("%w: %w: this manager cannot start from %s. To recover: "+
		"if the other managers still hold a majority, stop this node, move %s away (keep it for diagnosis) and start the node again with the same command: it rejoins with no state and the leader sends it the cluster's; "+
		"if this was the only manager or a majority is lost, restore %s from a backup and start once with `warren cluster init --force-new-cluster`, "+
		"or run that on another manager whose raft state is intact (see docs/architecture.md#quorum-and-recovery)",
		ErrDamaged, err, dir, dir, dir)
}

// checkLog reads every log entry raft.NewRaft will read at start and
// decodes the configurations among them, returning an error where raft
// would panic: entries after the newest snapshot, and the last one.
func checkLog(logs *raftboltdb.BoltStore, snaps raft.SnapshotStore) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	last, err := logs.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 {
		return nil
	}
	// NewRaft restores the newest snapshot it can, then reads every entry
	// after it (and panics where one fails), so start where it starts.
	from := uint64(1)
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) > 0 {
		from = metas[0].Index + 1
	}
	for i := from; i <= last; i++ {
		if err := checkEntry(logs, i); err != nil {
			return err
		}
	}
	if last < from {
		return checkEntry(logs, last)
	}
	return nil
}

// checkEntry reads log entry i and, for a configuration, decodes it the way
// raft does (raft.DecodeConfiguration panics on bad data).
func checkEntry(logs *raftboltdb.BoltStore, i uint64) (err error) {
	var e raft.Log
	if err := logs.GetLog(i, &e); err != nil {
		return fmt.Errorf("log entry %d: %w", i, err)
	}
	if e.Type == raft.LogConfiguration {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("log entry %d (a cluster configuration): %v", i, p)
			}
		}()
		raft.DecodeConfiguration(e.Data)
	}
	return nil
}

// newRaft is raft.NewRaft, with a panic inside it (on state checkLog did
// not foresee) turned into an error: a manager that cannot start must say
// why once, not crash at every start.
func newRaft(rc *raft.Config, fsm raft.FSM, logs *raftboltdb.BoltStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("start raft: %v", p)
		}
	}()
	r, err = raft.NewRaft(rc, fsm, logs, logs, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	return r, nil
}
