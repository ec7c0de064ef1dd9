package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/warrenorch/warren/e2e/cluster"
	"github.com/warrenorch/warren/e2e/testimage"
)

// Built once per run by TestMain.
var (
	warrenBin string
	demoV1    string
)

func TestMain(m *testing.M) {
	cluster.MaybeRunInit()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: not root; tests will skip")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "wrn-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	warrenBin = filepath.Join(dir, "warren")
	build := exec.Command("go", "build", "-o", warrenBin, "./cmd/warren")
	build.Dir = moduleRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build warren:", err)
		return 2
	}
	demoV1 = filepath.Join(dir, "demo-v1.tar")
	if err := testimage.Build(context.Background(), demoV1, "demo", "v1", "v1"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build demo image:", err)
		return 2
	}
	return m.Run()
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return ".."
	}
	return filepath.Dir(string(out[:len(out)-1]))
}
