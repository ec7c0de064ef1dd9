package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const testSecret = "WRN-1-00000000000000000000000000000000000000000000000000000000000000ab-0123456789abcdef0123456789abcdef"

// TestHideArgHelper runs in a child process whose arguments hold the
// secret: it wipes them and prints what the kernel shows of its command line.
func TestHideArgHelper(t *testing.T) {
	if os.Getenv("WARREN_TEST_HIDEARG") == "" {
		t.Skip("helper process for TestHideArg")
	}
	found, wiped := hideArg(testSecret)
	cmdline, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.Write([]byte("found=" + boolStr(found) + " wiped=" + boolStr(wiped) + "\n"))
	os.Stdout.Write(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	os.Stdout.Write([]byte("\n"))
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestHideArg: a join token given with --token is gone from
// /proc/PID/cmdline (what ps and other local users see) once hidden, in
// both flag spellings, and the rest of the command line is untouched.
func TestHideArg(t *testing.T) {
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		t.Skip("no /proc here")
	}
	for name, args := range map[string][]string{
		"separate": {"--token", testSecret, "10.0.0.1"},
		"equals":   {"--token=" + testSecret, "10.0.0.1"},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHideArgHelper$", "--"}, args...)...)
			cmd.Env = append(os.Environ(), "WARREN_TEST_HIDEARG=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "found=true wiped=true") {
				t.Fatalf("helper did not wipe the token:\n%s", out)
			}
			if strings.Contains(string(out), testSecret) || strings.Contains(string(out), "0123456789abcdef") {
				t.Fatalf("the token is still in /proc/PID/cmdline:\n%s", out)
			}
			if !strings.Contains(string(out), "10.0.0.1") || !strings.Contains(string(out), strings.Repeat("x", len(testSecret))) {
				t.Fatalf("the command line around the token changed:\n%s", out)
			}
		})
	}
}
