package host

import (
	"context"
	"log/slog"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
)

// slogFactory routes protoactor's slog output into zap at warn and above:
// its info chatter (dead letters of stopped futures, endpoint churn) is noise.
func slogFactory(log *zap.Logger) func(*actor.ActorSystem) *slog.Logger {
	return func(*actor.ActorSystem) *slog.Logger { return slog.New(&zapHandler{log: log}) }
}

type zapHandler struct {
	log   *zap.Logger
	attrs []zap.Field
}

func (h *zapHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := append([]zap.Field{}, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	// A CLI closing its endpoint after each command is how remoting works
	// here, not an error an operator can act on.
	if strings.Contains(r.Message, "lost connection") || strings.Contains(r.Message, "EndpointReader") {
		h.log.Debug(r.Message, fields...)
		return nil
	}
	h.log.Warn(r.Message, fields...)
	return nil
}

func (h *zapHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &zapHandler{log: h.log, attrs: append([]zap.Field{}, h.attrs...)}
	for _, a := range as {
		n.attrs = append(n.attrs, zap.Any(a.Key, a.Value.Any()))
	}
	return n
}

func (h *zapHandler) WithGroup(string) slog.Handler { return h }
