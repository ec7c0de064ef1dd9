package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/warrenorch/warren/store/pki"
)

// Config is what the CLI reads from its config dir ($HOME/.warren):
// the current cluster, and per cluster its managers and admin credentials
// under clusters/<id>/, so joining another cluster never overwrites these.
type Config struct {
	Current  string                   `json:"current"`
	Clusters map[string]*ClusterEntry `json:"clusters"`
}

// ClusterEntry is one cluster the CLI knows.
type ClusterEntry struct {
	Managers []string `json:"managers"` // actor addresses host:port, tried in order
	Dir      string   `json:"dir"`      // holds ca.pem, admin.pem, admin-key.pem
}

// ConfigFile is the config's file name inside the config dir.
const ConfigFile = "config.json"

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return &Config{Clusters: map[string]*ClusterEntry{}}, err
	}
	if err != nil {
		return nil, err
	}
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): run `warren cluster init` again on the manager, or fix the file", filepath.Join(dir, ConfigFile), err)
	}
	if c.Clusters == nil {
		c.Clusters = map[string]*ClusterEntry{}
	}
	return c, nil
}

// SaveAdminCredentials stores admin credentials for clusterID and makes it
// the current cluster.
func SaveAdminCredentials(dir, clusterID string, managers []string, caPEM []byte, admin *pki.Identity) error {
	cdir := filepath.Join(dir, "clusters", clusterID)
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", cdir, err)
	}
	if err := pki.WriteFile(filepath.Join(cdir, "ca.pem"), caPEM); err != nil {
		return err
	}
	if err := admin.Save(cdir, "admin"); err != nil {
		return err
	}
	c, err := LoadConfig(dir)
	if c == nil {
		return err // damaged: never overwrite silently
	}
	e := c.Clusters[clusterID]
	if e == nil {
		e = &ClusterEntry{}
		c.Clusters[clusterID] = e
	}
	e.Dir = cdir
	// The given managers first, in their order (this node's own address
	// leads), then the others already known.
	merged := append([]string{}, managers...)
	for _, m := range e.Managers {
		if !containsAddr(merged, m) {
			merged = append(merged, m)
		}
	}
	e.Managers = merged
	c.Current = clusterID
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFile(filepath.Join(dir, ConfigFile), append(data, '\n'))
}

func containsAddr(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// AddManagers records manager addresses for a known cluster (no-op when
// nothing is new).
func AddManagers(dir, clusterID string, managers []string) error {
	c, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	e := c.Clusters[clusterID]
	if e == nil {
		return nil
	}
	changed := false
	for _, m := range managers {
		if m != "" && !containsAddr(e.Managers, m) {
			e.Managers = append(e.Managers, m)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFile(filepath.Join(dir, ConfigFile), append(data, '\n'))
}
