package main

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
)

// TestEventsFlags runs the real app with no cluster configured: good flags
// get as far as the connection, bad ones are refused before it, naming
// the flag and what to give.
func TestEventsFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error; "" = the flags were fine (the dial fails)
	}{
		{[]string{"--filter", "type=task.", "--filter", "service=web", "--filter", "node=n2", "--filter", "task=abc"}, ""},
		{[]string{"-f", "--since", "1h", "--until", "2026-12-03T15:04:05Z"}, ""},
		{[]string{"--since", "1234", "--until", "2000"}, ""},
		{[]string{"--filter", "colour=red"}, `--filter "colour=red": unknown key "colour": use type, service, node or task`},
		{[]string{"--filter", "service"}, `--filter "service": give KEY=VALUE`},
		{[]string{"--filter", "service="}, `--filter "service=": give KEY=VALUE`},
		{[]string{"--since", "yesterday"}, `--since "yesterday": give a duration back from now (10m, 1h30m) or a time (2026-12-03T15:04:05Z), or a sequence number (1234)`},
		{[]string{"--until", "-5m"}, `--until -5m: give how long ago as a positive duration`},
		{[]string{"-o", "yaml"}, "unknown output format"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			app := newApp()
			app.Writer, app.ErrWriter = io.Discard, io.Discard
			args := append([]string{"warren", "--config-dir", filepath.Join(t.TempDir(), "none"), "events"}, tt.args...)
			err := app.Run(args)
			if err == nil {
				t.Fatalf("ran with no cluster")
			}
			got := friendly(err)
			if tt.want == "" {
				if !strings.Contains(got, "no cluster configured") {
					t.Fatalf("good flags refused: %s", got)
				}
				return
			}
			if !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

func TestSeqOrTime(t *testing.T) {
	now := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		seq  uint64
		time time.Time
	}{
		{"0", 0, time.Time{}},
		{"1234", 1234, time.Time{}},
		{"1h", 0, now.Add(-time.Hour)},
		{"90s", 0, now.Add(-90 * time.Second)},
		{"2026-12-03T15:04:05Z", 0, time.Date(2026, 12, 3, 15, 4, 5, 0, time.UTC)},
		{"2026-12-03T15:04:05.5+01:00", 0, time.Date(2026, 12, 3, 14, 4, 5, 5e8, time.UTC)},
		{"2026-12-03", 0, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			seq, tm, err := seqOrTime("--since", tt.in, now)
			if err != nil || seq != tt.seq || !tm.Equal(tt.time) {
				t.Fatalf("= %d, %v, %v; want %d, %v", seq, tm, err, tt.seq, tt.time)
			}
		})
	}
}

func TestNodeIDs(t *testing.T) {
	nodes := []*messages.Node{
		{Id: "aaaa1111", Description: &messages.NodeDescription{Hostname: "n1"}},
		{Id: "bbbb2222", Description: &messages.NodeDescription{Hostname: "n2"}},
	}
	got := nodeIDs([]string{"n2", "aaaa", "unknown"}, nodes)
	if fmt.Sprint(got) != "[bbbb2222 aaaa unknown]" {
		t.Fatalf("nodeIDs = %v", got)
	}
}

// streamEvents is a stream as the hub sends it: a task's life, a
// deployment, an actor's restart; sequence numbers with filtered-out gaps.
var streamEvents = []*messages.Event{
	{Seq: 41, UnixNano: ns(3 * time.Minute), Type: "service.updated", Subject: "web", Node: "7c1e4b2a9f3d5e6c8a0b1d2f",
		Attrs: map[string]string{"service": "web", "index": "88", "replicas": "3", "image": "demo:v2"}},
	{Seq: 42, UnixNano: ns(3 * time.Minute), Type: "deployment.rolling", Subject: "web", Node: "7c1e4b2a9f3d5e6c8a0b1d2f",
		Attrs: map[string]string{"service": "web", "index": "88", "deployment": "d-1", "strategy": "rolling", "from": "1", "to": "2", "updated": "0/3"}},
	{Seq: 45, UnixNano: ns(2 * time.Minute), Type: "task.running", Subject: "3f2a9c1d8e7b-task-1", Node: "7c1e4b2a9f3d5e6c8a0b1d2f", Message: "started",
		Attrs: map[string]string{"service": "web", "node": "0a9b8c7d6e5f4a3b2c1d0e9f", "desired": "running", "index": "91"}},
	{Seq: 50, UnixNano: ns(time.Minute), Type: "task.failed", Subject: "3f2a9c1d8e7b-task-1", Node: "7c1e4b2a9f3d5e6c8a0b1d2f", Message: "exit code 137",
		Attrs: map[string]string{"service": "web", "node": "0a9b8c7d6e5f4a3b2c1d0e9f", "desired": "running", "index": "95"}},
	{Seq: 51, UnixNano: ns(time.Second), Type: "node.down", Subject: "edge-2", Node: "7c1e4b2a9f3d5e6c8a0b1d2f",
		Attrs: map[string]string{"id": "0a9b8c7d6e5f4a3b2c1d0e9f", "node": "0a9b8c7d6e5f4a3b2c1d0e9f", "index": "96"}},
	{Seq: 52, UnixNano: ns(0), Type: "actor.restarting", Actor: "manager/leader/scheduler", Node: "7c1e4b2a9f3d5e6c8a0b1d2f"},
}

// TestEventsOutput: the table and the JSON lines `warren events` prints.
func TestEventsOutput(t *testing.T) {
	for _, tt := range []struct {
		name string
		json bool
	}{{"events_stream", false}, {"events_stream_json", true}} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			print := eventPrinter(&b, tt.json)
			for _, ev := range streamEvents {
				if err := print(ev); err != nil {
					t.Fatal(err)
				}
			}
			golden(t, tt.name, b.Bytes())
		})
	}
}
