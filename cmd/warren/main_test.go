package main

import (
	"os"
	"testing"
)

// TestMain lets a test run this test binary as the CLI itself (the
// completion scripts call the binary they complete): with
// WARREN_TEST_AS_CLI=1 it is `warren`, under whatever name it was called.
func TestMain(m *testing.M) {
	if os.Getenv("WARREN_TEST_AS_CLI") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
