package main

import (
	"os"
	"path/filepath"
	"strings"
)

// prog is the name the CLI was invoked as: `wrn` when called through that
// name (a symlink or a copy), else `warren`. Help, usage and every hint
// that names a command use it, so a user of `wrn` is told to type `wrn`.
func prog() string {
	if filepath.Base(os.Args[0]) == "wrn" {
		return "wrn"
	}
	return "warren"
}

// asInvoked rewrites the commands an error suggests (`warren ...`, from
// this package or the client's) to the name the CLI was invoked as.
func asInvoked(msg string) string {
	if p := prog(); p != "warren" {
		msg = strings.ReplaceAll(msg, "`warren ", "`"+p+" ")
	}
	return msg
}
