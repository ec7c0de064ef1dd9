package client

import (
	"context"
	"io"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
)

// loggerFactory gives protoactor a logger: silent for the CLI's output
// unless a debug log was asked for, then everything at debug level into it.
func loggerFactory(log *zap.Logger) func(*actor.ActorSystem) *slog.Logger {
	if log == nil || !log.Core().Enabled(zap.DebugLevel) {
		return func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
	}
	return func(*actor.ActorSystem) *slog.Logger { return slog.New(&zapHandler{log: log.Named("protoactor")}) }
}

// zapHandler writes protoactor's slog records to zap at debug level.
type zapHandler struct {
	log   *zap.Logger
	attrs []zap.Field
}

func (h *zapHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := append([]zap.Field{zap.String("level", r.Level.String())}, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	h.log.Debug(r.Message, fields...)
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
