package host

import (
	"fmt"
	"os"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Log formats a node writes (--log-format).
const (
	LogJSON    = "json"
	LogConsole = "console"
)

// NodeUnknown is the node field of lines logged before this process knows
// its node's id: a node created or joining logs a few lines (the data dir
// lock, the join) before its identity exists; a resumed node knows it at
// once from its node file.
const NodeUnknown = "unknown"

// NewLogger builds a node's logger: every line carries "component" (the
// logger's name: runtime, raft, api ...; "node" for the process itself)
// and "node" (this node's id, 12 characters, once known; NodeUnknown
// before). It writes to stderr in the given format at level.
func NewLogger(level, format string) (*zap.Logger, error) {
	return newLogger(level, format, zapcore.Lock(os.Stderr))
}

func newLogger(level, format string, w zapcore.WriteSyncer) (*zap.Logger, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	var enc zapcore.Encoder
	switch format {
	case LogJSON, "":
		ec := zap.NewProductionEncoderConfig()
		ec.NameKey = "component"
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case LogConsole:
		ec := zap.NewDevelopmentEncoderConfig()
		ec.NameKey = "component"
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("invalid --log-format %q: use json (one JSON object a line, for jq and log shippers) or console (for people)", format)
	}
	node := &atomic.Value{}
	node.Store(NodeUnknown)
	core := &nodeCore{Core: zapcore.NewCore(enc, w, zap.NewAtomicLevelAt(l)), node: node}
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel), zap.ErrorOutput(w)), nil
}

// setLogNode makes every line of log (and of every logger derived from
// it, before or after) carry node id. A logger not built by NewLogger
// (a test's, an embedding program's) gets the field added instead.
func setLogNode(log *zap.Logger, id string) *zap.Logger {
	if c, ok := log.Core().(*nodeCore); ok {
		c.node.Store(id)
		return log
	}
	return log.With(zap.String("node", id))
}

// nodeCore adds the node field to each line and keeps every key once: a "component" field given by code (the embedded
// containerd's) names the component, and a "node" field given by code (a
// manager naming another node) becomes "subject_node".
type nodeCore struct {
	zapcore.Core
	node      *atomic.Value // string, shared by every core derived from the root
	component string        // from a With(component) field; "" keeps the logger's name
}

func (c *nodeCore) With(fields []zapcore.Field) zapcore.Core {
	comp, fields := c.rewrite(fields)
	return &nodeCore{Core: c.Core.With(fields), node: c.node, component: comp}
}

func (c *nodeCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *nodeCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	comp, fields := c.rewrite(fields)
	switch {
	case comp != "":
		e.LoggerName = comp
	case e.LoggerName == "":
		e.LoggerName = "node"
	}
	return c.Core.Write(e, append(fields, zap.String("node", c.node.Load().(string))))
}

// rewrite takes a "component" field out of fields (returning its value,
// else c's) and renames a "node" field; fields itself is not modified.
func (c *nodeCore) rewrite(fields []zapcore.Field) (string, []zapcore.Field) {
	comp := c.component
	out := make([]zapcore.Field, 0, len(fields)+1)
	for _, f := range fields {
		switch f.Key {
		case "component":
			if f.Type == zapcore.StringType {
				comp = f.String
				continue
			}
		case "node":
			f.Key = "subject_node"
		case "level", "ts", "msg", "caller", "stacktrace":
			// The encoder's own keys: a library's attribute of that name
			// (protoactor's slog "level") must not make a second one.
			f.Key = "attr_" + f.Key
		}
		out = append(out, f)
	}
	return comp, out
}
