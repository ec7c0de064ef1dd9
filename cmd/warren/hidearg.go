package main

import (
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// hideArg overwrites secret with 'x' wherever it appears in this process's
// arguments, and reports whether it found it. On Linux os.Args shares its
// memory with the argument area the kernel shows in /proc/PID/cmdline (and
// so in ps and /debug/pprof/cmdline): once wiped there, a long-running
// node no longer shows the join token to every local user. Only bytes
// inside that area are written, as /proc/self/stat bounds it; elsewhere
// (another OS, arguments rebuilt in Go memory) nothing is touched, and
// wiped is false.
func hideArg(secret string) (found, wiped bool) {
	if secret == "" {
		return false, false
	}
	start, end, ok := argArea()
	wiped = true
	for _, a := range os.Args {
		i := strings.Index(a, secret)
		if i < 0 {
			continue
		}
		found = true
		p := uintptr(unsafe.Pointer(unsafe.StringData(a)))
		if !ok || p < start || p+uintptr(len(a)) > end {
			wiped = false
			continue
		}
		b := unsafe.Slice(unsafe.StringData(a), len(a)) //nolint:gosec // the kernel's argv area, writable
		for ; i >= 0; i = strings.Index(a, secret) {
			for j := range len(secret) {
				b[i+j] = 'x'
			}
		}
	}
	return found, found && wiped
}

// argArea is the address range of this process's arguments (arg_start and
// arg_end in /proc/self/stat, fields 48 and 49).
func argArea() (start, end uintptr, ok bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name (field 2) may hold spaces; fields after its
	// closing parenthesis are plain.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 47 {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(f[45], 10, 64)
	e, err2 := strconv.ParseUint(f[46], 10, 64)
	if err1 != nil || err2 != nil || s == 0 || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
