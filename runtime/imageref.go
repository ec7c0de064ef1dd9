package runtime

import (
	"fmt"
	"strings"

	"github.com/warrenorch/warren/messages"
)

// NormalizeImageRef turns a docker reference into containerd's canonical
// form: "demo:v1" -> "docker.io/library/demo:v1", "demo" ->
// "docker.io/library/demo:latest". Digests are kept. It is
// messages.NormalizeImageRef, the parser the api validates specs with, so
// a reference the api accepted is never refused here; errors wrap
// ErrInvalidArgument.
func NormalizeImageRef(ref string) (string, error) {
	if strings.TrimSpace(ref) == "" {
		return "", fmt.Errorf("image reference is empty: %w", ErrInvalidArgument)
	}
	name, err := messages.NormalizeImageRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference is not valid: %v: %w", err, ErrInvalidArgument)
	}
	return name, nil
}
