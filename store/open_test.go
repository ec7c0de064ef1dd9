package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// writtenStore leaves a closed store with a few committed entries in a new
// dir and returns the dir and its last log index.
func writtenStore(t *testing.T) (dir string, last uint64) {
	t.Helper()
	dir = t.TempDir()
	s := openTest(t, dir, freePort(t))
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.Apply(createSvc(n, n), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	last = s.raft.LastIndex()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, last
}

// withLogStore opens dir's raft.db the way raft does, for the test to
// damage it.
func withLogStore(t *testing.T, dir string, f func(*raftboltdb.BoltStore)) {
	t.Helper()
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	f(logs)
	if err := logs.Close(); err != nil {
		t.Fatal(err)
	}
}

// putRaw stores b as log entry i's encoded bytes, bypassing raft's
// encoding.
func putRaw(t *testing.T, dir string, i uint64, b []byte) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("logs")).Put(binary.BigEndian.AppendUint64(nil, i), b)
	}); err != nil {
		t.Fatal(err)
	}
}

// overwrite writes b at off in dir's raft.db.
func overwrite(t *testing.T, dir string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "raft.db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// openNoPanic opens dir's store and turns a panic or a hang into a test
// failure, as raft's decode panics were (issue 10, hole 11).
func openNoPanic(t *testing.T, dir string) (*Store, error) {
	t.Helper()
	type result struct {
		s     *Store
		err   error
		panic any
	}
	done := make(chan result, 1)
	addr := freePort(t)
	tlsCfg := testTLS(t, dir)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{panic: p}
			}
		}()
		s, err := Open(Config{Dir: dir, NodeID: "n1", Bind: addr, Advertise: addr, TLS: tlsCfg}, true)
		done <- result{s: s, err: err}
	}()
	select {
	case r := <-done:
		if r.panic != nil {
			t.Fatalf("Open panicked: %v", r.panic)
		}
		if r.s != nil {
			t.Cleanup(func() { r.s.Close() })
		}
		return r.s, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("Open hung for 20s")
		return nil, nil
	}
}

// TestOpenDamaged: damaged raft state is a clear error naming the file and
// the way back, at every start, never a panic (raft.NewRaft panicked on an
// entry it could not decode) and never "another warren" (what zeroed meta
// pages used to say).
func TestOpenDamaged(t *testing.T) {
	pageSize := int64(os.Getpagesize())
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string, last uint64)
		wantErr string
	}{
		{"junk configuration entry", func(t *testing.T, dir string, last uint64) {
			withLogStore(t, dir, func(l *raftboltdb.BoltStore) {
				if err := l.StoreLog(&raft.Log{Index: last + 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("not msgpack")}); err != nil {
					t.Fatal(err)
				}
			})
		}, "raft.db: log entry {{next}} (a cluster configuration)"},
		{"undecodable last entry", func(t *testing.T, dir string, last uint64) {
			putRaw(t, dir, last, []byte{0xc1, 0xff, 0x00})
		}, "raft.db: log entry {{last}}"},
		{"undecodable entry mid-log", func(t *testing.T, dir string, last uint64) {
			putRaw(t, dir, last-1, []byte{0xc1, 0xff, 0x00})
		}, "raft.db: log entry {{prev}}"},
		{"zeroed meta pages", func(t *testing.T, dir string, last uint64) {
			overwrite(t, dir, 0, make([]byte, 2*pageSize))
		}, "raft.db: invalid database"},
		{"garbage pages", func(t *testing.T, dir string, last uint64) {
			st, err := os.Stat(filepath.Join(dir, "raft.db"))
			if err != nil {
				t.Fatal(err)
			}
			overwrite(t, dir, 2*pageSize, bytes.Repeat([]byte{0xa5}, int(st.Size()-2*pageSize)))
		}, "raft.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, last := writtenStore(t)
			tt.damage(t, dir, last)
			want := strings.NewReplacer("{{next}}", strconv.FormatUint(last+1, 10), "{{last}}", strconv.FormatUint(last, 10), "{{prev}}", strconv.FormatUint(last-1, 10)).Replace(tt.wantErr)
			// Every start says the same: the error is not a one-off.
			for i := 0; i < 2; i++ {
				s, err := openNoPanic(t, dir)
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded on damaged raft state")
				}
				if !errors.Is(err, ErrDamaged) || errors.Is(err, ErrInUse) {
					t.Fatalf("Open = %v; want ErrDamaged", err)
				}
				msg := err.Error()
				for _, w := range []string{want, dir, "move " + dir + " away", "--force-new-cluster"} {
					if !strings.Contains(msg, w) {
						t.Errorf("error %q does not contain %q", msg, w)
					}
				}
				if strings.Contains(msg, "another warren") {
					t.Errorf("error %q blames another warren for a damaged file", msg)
				}
			}
		})
	}
}

// TestOpenInUse: a raft.db another process holds is refused within the lock
// timeout with an error that says so (bbolt's default waited forever).
func TestOpenInUse(t *testing.T) {
	old := boltLockTimeout
	boltLockTimeout = 200 * time.Millisecond
	t.Cleanup(func() { boltLockTimeout = old })
	dir, _ := writtenStore(t)
	// flock locks belong to an open file, so a second open in this process
	// is refused like another process would be.
	db, err := bolt.Open(filepath.Join(dir, "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = openNoPanic(t, dir)
	if !errors.Is(err, ErrInUse) || errors.Is(err, ErrDamaged) {
		t.Fatalf("Open = %v; want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), "another warren") || !strings.Contains(err.Error(), filepath.Join(dir, "raft.db")) {
		t.Errorf("error %q does not name the file and the likely holder", err)
	}
	db.Close()
	s, err := openNoPanic(t, dir)
	if err != nil {
		t.Fatalf("Open after the lock is released: %v", err)
	}
	s.Close()
}

// TestNewRaftRecovers: should raft.NewRaft panic on state checkLog did not
// foresee, newRaft returns an error instead (here checkLog is skipped on a
// junk configuration entry, on which raft.NewRaft panics).
func TestNewRaftRecovers(t *testing.T) {
	dir, last := writtenStore(t)
	withLogStore(t, dir, func(l *raftboltdb.BoltStore) {
		if err := l.StoreLog(&raft.Log{Index: last + 1, Term: 1, Type: raft.LogConfiguration, Data: []byte{0xc1}}); err != nil {
			t.Fatal(err)
		}
		_, trans := raft.NewInmemTransport("n1")
		snaps, err := raft.NewFileSnapshotStore(dir, 2, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		r, err := newRaft(raftConfig("n1", nil), &FSM{State: NewState()}, l, snaps, trans)
		if err == nil {
			r.Shutdown()
			t.Fatal("newRaft started on a junk configuration entry")
		}
		if !strings.Contains(err.Error(), "failed to decode configuration") {
			t.Errorf("error %q does not say what failed", err)
		}
	})
}
