package host

import (
	"log/slog"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/remoting"
)

// slogFactory routes protoactor's slog output into zap at warn and above:
// its info chatter (dead letters of stopped futures, endpoint churn) is noise.
func slogFactory(log *zap.Logger) func(*actor.ActorSystem) *slog.Logger {
	return remoting.LoggerFactory(log, slog.LevelWarn, func(msg string) bool {
		// A CLI closing its endpoint after each command is how remoting
		// works here, not an error an operator can act on.
		return strings.Contains(msg, "lost connection") || strings.Contains(msg, "EndpointReader")
	})
}
