package pki

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode 0600, so that a crash or power cut
// leaves either the old file or the whole new one, never half a key: the
// data goes to a temp file that is synced before it is renamed over path,
// and the directory is synced after, so the rename itself is on disk.
func WriteFile(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(path)
}

// CreateFile writes data to path, mode 0600, like WriteFile, but only if
// path does not exist yet: a key that must be new (a cluster's root key, a
// manager's intermediate key) never silently replaces one already there.
// The synced temp file is hard-linked to path, which fails if path exists,
// so the name appears whole or not at all.
func CreateFile(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("write %s: it already exists and is not replaced: remove it only if you know it is stale", path)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("write %s: remove temp file: %w", path, err)
	}
	return syncDir(path)
}

// writeTemp writes data to path.tmp, created anew (O_EXCL: never through a
// file or link someone left there), synced and closed.
func writeTemp(path string, data []byte) (string, error) {
	tmp := path + ".tmp"
	// A temp file left by a crash is garbage; remove it, then create
	// exclusively so a concurrent writer cannot interleave with this one.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("write %s: remove stale temp file: %w", path, err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp, nil
}

// syncDir makes a rename or link in path's directory durable.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("sync directory of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory of %s: %w", path, err)
	}
	return nil
}

// RemoveFile deletes path if it exists and makes the removal durable: a
// demoted manager's signing key must not come back after a power cut.
func RemoveFile(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(path)
}
