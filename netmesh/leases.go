package netmesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// leaseDBName is the bbolt file under Config.StateDir.
const leaseDBName = "netmesh.db"

var leaseBucket = []byte("leases")

// lease is one task's address, as stored in bbolt under the task ID.
type lease struct {
	TaskID string     `json:"-"`
	IP     netip.Addr `json:"ip"`
	// Since is when the address was first leased, for operators reading
	// the db; nothing decides on it.
	Since time.Time `json:"since"`
}

// leaseStore persists leases so that a restarted node hands a running task
// the address it already has, and two tasks never share one. All
// allocation happens inside one bbolt write transaction, which serialises
// allocators even across goroutines.
type leaseStore struct {
	db *bolt.DB
}

func openLeaseStore(dir string) (*leaseStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, leaseDBName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open lease db %s: it is locked by another process; is another warren running with the same state dir?", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open lease db %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(leaseBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init lease db %s: %w", path, err)
	}
	return &leaseStore{db: db}, nil
}

func (s *leaseStore) close() error { return s.db.Close() }

func decodeLease(k, v []byte) (lease, error) {
	var l lease
	if err := json.Unmarshal(v, &l); err != nil {
		return lease{}, fmt.Errorf("decode lease of task %s: %w", k, err)
	}
	l.TaskID = string(k)
	return l, nil
}

// get returns the lease of taskID, if any.
func (s *leaseStore) get(taskID string) (lease, bool, error) {
	var (
		l  lease
		ok bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(leaseBucket).Get([]byte(taskID))
		if v == nil {
			return nil
		}
		var err error
		l, err = decodeLease([]byte(taskID), v)
		ok = err == nil
		return err
	})
	return l, ok, err
}

// acquire returns taskID's lease in subnet, allocating the lowest free
// address if it has none. A lease outside subnet (the node's subnet was
// changed) is replaced, because that address cannot be routed any more.
// fresh reports whether the address was allocated by this call.
func (s *leaseStore) acquire(taskID string, subnet netip.Prefix, now time.Time) (l lease, fresh bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(leaseBucket)
		if v := b.Get([]byte(taskID)); v != nil {
			old, err := decodeLease([]byte(taskID), v)
			if err != nil {
				return err
			}
			if IsTaskAddr(subnet, old.IP) {
				l = old
				return nil
			}
		}
		used := map[netip.Addr]bool{}
		n := 0
		if err := b.ForEach(func(k, v []byte) error {
			other, err := decodeLease(k, v)
			if err != nil {
				return err
			}
			if other.TaskID != taskID {
				used[other.IP] = true
				n++
			}
			return nil
		}); err != nil {
			return err
		}
		ip, err := lowestFree(subnet, used, n)
		if err != nil {
			return err
		}
		l = lease{TaskID: taskID, IP: ip, Since: now.UTC()}
		v, err := json.Marshal(l)
		if err != nil {
			return err
		}
		fresh = true
		return b.Put([]byte(taskID), v)
	})
	return l, fresh, err
}

// release forgets taskID's lease; releasing an unknown task is not an error.
func (s *leaseStore) release(taskID string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(leaseBucket).Delete([]byte(taskID))
	})
}

// list returns all leases ordered by address, then task ID.
func (s *leaseStore) list() ([]lease, error) {
	var out []lease
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(leaseBucket).ForEach(func(k, v []byte) error {
			l, err := decodeLease(k, v)
			if err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].IP.Compare(out[j].IP); c != 0 {
			return c < 0
		}
		return out[i].TaskID < out[j].TaskID
	})
	return out, err
}
