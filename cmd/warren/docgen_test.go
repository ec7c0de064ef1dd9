package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestCLIReference keeps docs/reference/cli.md equal to what the CLI says
// about itself: a new command or flag without a regenerated page fails here.
func TestCLIReference(t *testing.T) {
	t.Setenv("HOME", "/home/user") // defaults under $HOME render the same on every machine
	path := filepath.Join("..", "..", "docs", "reference", "cli.md")
	got := cliReference(newApp())
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run `go test ./cmd/warren -run TestCLIReference -update` to create it", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run `go test ./cmd/warren -run TestCLIReference -update` and commit it", path)
	}
	for _, must := range []string{"## warren service create", "## warren cluster init", "--config-dir"} {
		if !bytes.Contains(got, []byte(must)) {
			t.Errorf("reference lacks %q", must)
		}
	}
}
