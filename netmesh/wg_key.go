package netmesh

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// loadOrCreateKey returns the node's WireGuard private key from path,
// generating it on first use. The file holds the key in base64 and a
// newline, as `wg genkey` writes it, mode 0600. It is written to a
// temporary file and renamed into place, so a crash never leaves a
// truncated key that would give the node a new identity on restart.
func loadOrCreateKey(path string) (key wgtypes.Key, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err := parseKeyFile(path, b)
		return key, false, err
	case !errors.Is(err, os.ErrNotExist):
		return wgtypes.Key{}, false, fmt.Errorf("read WireGuard key file: %w", err)
	}
	key, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, false, fmt.Errorf("generate WireGuard key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wgtypes.Key{}, false, fmt.Errorf("create directory for WireGuard key: %w", err)
	}
	f, err := os.CreateTemp(dir, ".wgkey-*") // mode 0600
	if err != nil {
		return wgtypes.Key{}, false, fmt.Errorf("write WireGuard key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	_, werr := f.WriteString(key.String() + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return wgtypes.Key{}, false, fmt.Errorf("write WireGuard key %s: %w", tmp, werr)
	}
	// Link, not rename: if another process created the key meanwhile,
	// keep its key rather than replace an identity peers may know.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadOrCreateKey(path)
		}
		return wgtypes.Key{}, false, fmt.Errorf("install WireGuard key file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return key, true, nil
}

func parseKeyFile(path string, b []byte) (wgtypes.Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("stat WireGuard key file: %w", err)
	}
	if mode := st.Mode().Perm(); mode&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s is readable or writable by group or others (mode %04o): the private key must stay with this node; run chmod 600 %s", path, mode, path)
	}
	key, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s does not hold a base64 private key (as `wg genkey` writes): %w; remove it to generate a new key (the node then needs its new public key published)", path, err)
	}
	return key, nil
}

// MeshPublicKey returns the node's WireGuard public key, creating the key
// file (0600) on first use: the node can announce its key before its mesh
// interface exists.
func MeshPublicKey(keyFile string) (string, error) {
	k, _, err := loadOrCreateKey(keyFile)
	if err != nil {
		return "", err
	}
	return k.PublicKey().String(), nil
}

// KernelWireGuard reports whether the kernel's WireGuard module is loaded,
// which decides what NewMesh runs (else wireguard-go in-process).
func KernelWireGuard() bool {
	_, err := os.Stat("/sys/module/wireguard")
	return err == nil
}
