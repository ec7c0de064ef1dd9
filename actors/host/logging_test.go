package host

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestLoggerFields: every JSON line has one "component" and one "node";
// node is NodeUnknown until the id is set, then the id on every logger,
// including those derived before; code's own "component" and "node"
// fields do not make duplicate keys.
func TestLoggerFields(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger("debug", LogJSON, zapcore.AddSync(&buf))
	if err != nil {
		t.Fatal(err)
	}
	early := log.Named("join")
	early.Info("before the id")
	log = setLogNode(log, "0123456789ab")
	early.Info("derived before, logged after")
	log.Info("the process itself")
	log.Named("manager").Named("api").Warn("nested", zap.String("node", "fedcba987654"), zap.String("level", "ERROR"))
	log.Named("containerd").With(zap.String("component", "containerd")).Error("own component field")
	want := []struct{ component, node, subject string }{
		{"join", NodeUnknown, ""},
		{"join", "0123456789ab", ""},
		{"node", "0123456789ab", ""},
		{"manager.api", "0123456789ab", "fedcba987654"},
		{"containerd", "0123456789ab", ""},
	}
	sc := bufio.NewScanner(&buf)
	i := 0
	for ; sc.Scan(); i++ {
		line := sc.Text()
		keys := map[string]int{}
		dec := json.NewDecoder(strings.NewReader(line))
		if _, err := dec.Token(); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
			}
			keys[k.(string)]++
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("line %d: %v", i, err)
			}
		}
		for k, n := range keys {
			if n > 1 {
				t.Errorf("line %d has %q %d times: %s", i, k, n, line)
			}
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if i >= len(want) {
			t.Fatalf("unexpected line %s", line)
		}
		w := want[i]
		if m["component"] != w.component || m["node"] != w.node || (w.subject != "" && m["subject_node"] != w.subject) {
			t.Errorf("line %d: component %v node %v subject_node %v, want %q %q %q: %s", i, m["component"], m["node"], m["subject_node"], w.component, w.node, w.subject, line)
		}
	}
	if i != len(want) {
		t.Errorf("%d lines, want %d", i, len(want))
	}
}

func TestLoggerFormats(t *testing.T) {
	for _, tt := range []struct {
		format string
		ok     bool
	}{{"json", true}, {"console", true}, {"", true}, {"text", false}} {
		var buf bytes.Buffer
		log, err := newLogger("info", tt.format, zapcore.AddSync(&buf))
		if (err == nil) != tt.ok {
			t.Errorf("format %q: err %v, want ok %v", tt.format, err, tt.ok)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), "json") || !strings.Contains(err.Error(), "console") {
				t.Errorf("the error does not name the formats: %v", err)
			}
			continue
		}
		setLogNode(log, "0123456789ab").Named("raft").Info("hello")
		if out := buf.String(); !strings.Contains(out, "raft") || !strings.Contains(out, "0123456789ab") {
			t.Errorf("format %q: %q lacks the component or the node", tt.format, out)
		}
	}
}
