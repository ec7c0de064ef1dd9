package runtime

import (
	"errors"
	"strings"
	"testing"

	"github.com/warrenorch/warren/messages"
)

// TestImageRefAgreement: the api's validator and the runtime agree on every
// reference. Before they shared a parser the validator accepted the
// rows marked "issue 10" and the runtime refused them, so a service was
// created and every one of its tasks was rejected.
func TestImageRefAgreement(t *testing.T) {
	const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in, want string // want "" means refused by both
	}{
		{"demo:v1", "docker.io/library/demo:v1"},
		{"demo", "docker.io/library/demo:latest"},
		{"registry.local:5000/team/app:1.2", "registry.local:5000/team/app:1.2"},
		{"localhost:5000/demo:v1", "localhost:5000/demo:v1"},
		{"demo@sha256:" + hex64, "docker.io/library/demo@sha256:" + hex64},
		{"registry.local:5000/team/app:1.2@sha256:" + hex64, "registry.local:5000/team/app@sha256:" + hex64},
		{hex64, ""},                           // issue 10: a bare image id
		{"0:0:0", ""},                         // issue 10
		{strings.Repeat("a", 256), ""},        // issue 10: over 255
		{"x/" + strings.Repeat("a", 254), ""}, // issue 10: path over 255
		{"", ""},
		{"Demo:V1", ""},
		{"demo:v1:v2", ""},
		{"demo@sha256:abc", ""},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			verr := messages.ValidateImageRef(tt.in)
			got, err := NormalizeImageRef(tt.in)
			if (verr == nil) != (err == nil) {
				t.Fatalf("validator and runtime disagree on %q: validator %v, runtime %v", tt.in, verr, err)
			}
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NormalizeImageRef(%q) = %q; want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidArgument) {
					t.Errorf("error %v does not wrap ErrInvalidArgument", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeImageRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}
