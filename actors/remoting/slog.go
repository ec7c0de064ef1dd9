package remoting

import (
	"context"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
)

// LoggerFactory routes protoactor's slog output into log, for
// actor.WithLoggerFactory: records below min are dropped; a record that
// quiet reports is logged at debug, any other at warn. A node keeps warn
// and above (protoactor's info is chatter); the CLI's --verbose takes all
// at debug.
func LoggerFactory(log *zap.Logger, min slog.Level, quiet func(msg string) bool) func(*actor.ActorSystem) *slog.Logger {
	return func(*actor.ActorSystem) *slog.Logger { return slog.New(&zapHandler{log: log, min: min, quiet: quiet}) }
}

type zapHandler struct {
	log   *zap.Logger
	min   slog.Level
	quiet func(string) bool
	attrs []zap.Field
}

func (h *zapHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := append([]zap.Field{zap.String("level", r.Level.String())}, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	if h.quiet != nil && h.quiet(r.Message) {
		h.log.Debug(r.Message, fields...)
		return nil
	}
	h.log.Warn(r.Message, fields...)
	return nil
}

func (h *zapHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]zap.Field{}, h.attrs...)
	for _, a := range as {
		n.attrs = append(n.attrs, zap.Any(a.Key, a.Value.Any()))
	}
	return &n
}

func (h *zapHandler) WithGroup(string) slog.Handler { return h }
