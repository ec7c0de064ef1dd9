package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func TestLogsRender(t *testing.T) {
	at := func(s int) int64 { return renderNow.Add(time.Duration(s) * time.Millisecond).UnixNano() }
	names := map[string]string{"aaaaaaaaaaaaaaaaaaaaaaaa": "web.1", "bbbbbbbbbbbbbbbbbbbbbbbb": "web.12", "n1n1n1n1n1n1n1n1n1n1n1n1": "node-1", "n2n2n2n2n2n2n2n2n2n2n2n2": "n2"}
	lines := []*messages.LogLine{
		{TaskId: "aaaaaaaaaaaaaaaaaaaaaaaa", NodeId: "n1n1n1n1n1n1n1n1n1n1n1n1", Stream: "stdout", TimeUnixNano: at(1), Text: "listening on :80"},
		{TaskId: "bbbbbbbbbbbbbbbbbbbbbbbb", NodeId: "n2n2n2n2n2n2n2n2n2n2n2n2", Stream: "stderr", TimeUnixNano: at(2), Text: "warning: \"cold\" cache"},
		{TaskId: "cccccccccccccccccccccccc", NodeId: "n3n3n3n3n3n3n3n3n3n3n3n3", Stream: "stdout", TimeUnixNano: at(3), Text: "a task the cluster forgot"},
		{TaskId: "aaaaaaaaaaaaaaaaaaaaaaaa", NodeId: "n1n1n1n1n1n1n1n1n1n1n1n1", Stream: "stdout", TimeUnixNano: at(4), Text: "partial ", Partial: true},
		{TaskId: "aaaaaaaaaaaaaaaaaaaaaaaa", NodeId: "n1n1n1n1n1n1n1n1n1n1n1n1", Stream: "stdout", TimeUnixNano: at(5), Text: "line"},
	}
	for _, tc := range []struct {
		name string
		f    logFormat
	}{
		{"logs", logFormat{}},
		{"logs_timestamps", logFormat{timestamps: true}},
		{"logs_no_task_ids", logFormat{noTaskIDs: true}},
		{"logs_raw", logFormat{raw: true}},
		{"logs_json", logFormat{json: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			p := &logPrinter{f: tc.f, stdout: &out, stderr: &errs}
			for _, l := range lines {
				if err := p.line(l, names); err != nil {
					t.Fatal(err)
				}
			}
			p.notice(client.LogNotice{Unreachable: []string{"n3 (n3n3n3n3n3n3n3n3n3n3n3n3)"}, Skipped: []string{"aaaaaaaaaaaaaaaaaaaaaaaa"}})
			p.notice(client.LogNotice{Back: []string{"n3 (n3n3n3n3n3n3n3n3n3n3n3n3)"}})
			golden(t, tc.name, append(append(out.Bytes(), "--- stderr\n"...), errs.Bytes()...))
		})
	}
}

func TestLogsFlags(t *testing.T) {
	for in, want := range map[string]int{"all": 0, "": 0, "5": 5, "0": 0} {
		if got, err := parseTail(in); err != nil || got != want {
			t.Errorf("parseTail(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseTail("-3"); err == nil {
		t.Error("--tail -3 accepted")
	}
}
