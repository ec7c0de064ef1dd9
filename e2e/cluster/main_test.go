package cluster

import (
	"os"
	"testing"
)

// The harness re-executes the test binary as each host's init.
func TestMain(m *testing.M) {
	MaybeRunInit()
	os.Exit(m.Run())
}
