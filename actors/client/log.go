package client

import (
	"io"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/remoting"
)

// loggerFactory gives protoactor a logger: silent for the CLI's output
// unless a debug log was asked for, then everything at debug level into it.
func loggerFactory(log *zap.Logger) func(*actor.ActorSystem) *slog.Logger {
	if log == nil || !log.Core().Enabled(zap.DebugLevel) {
		return func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
	}
	return remoting.LoggerFactory(log.Named("protoactor"), slog.LevelDebug, func(string) bool { return true })
}
