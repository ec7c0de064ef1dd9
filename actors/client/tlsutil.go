package client

import (
	"io"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
)

// quietLogger keeps protoactor's own logging off the CLI's output.
func quietLogger(*actor.ActorSystem) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
