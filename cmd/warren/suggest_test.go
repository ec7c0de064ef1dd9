package main

import (
	"io"
	"testing"
)

// TestUnknownCommandSuggests runs the real app: a mistyped command, at the
// top or under a group, is refused with the nearest command named.
func TestUnknownCommandSuggests(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"servce"}, `unknown command "servce": did you mean "service"? (--help lists the commands)`},
		{[]string{"service", "lss"}, `unknown command "lss": did you mean "ls"? (--help lists the commands)`},
		{[]string{"service", "crate", "web"}, `unknown command "crate": did you mean "create"? (--help lists the commands)`},
		{[]string{"nodee", "ls"}, `unknown command "nodee": did you mean "node"? (--help lists the commands)`},
	}
	for _, tt := range tests {
		t.Run(tt.args[len(tt.args)-1], func(t *testing.T) {
			app := newApp()
			app.Writer, app.ErrWriter = io.Discard, io.Discard
			err := app.Run(append([]string{"warren"}, tt.args...))
			if err == nil {
				t.Fatalf("%v ran", tt.args)
			}
			if got := friendly(err); got != tt.want {
				t.Fatalf("%v: %q, want %q", tt.args, got, tt.want)
			}
		})
	}
}
