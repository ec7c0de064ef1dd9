package manager

import (
	"fmt"
	"slices"
	"testing"

	"github.com/warrenorch/warren/messages"
)

func line(node, task string, t int64, off int64) *messages.LogLine {
	return &messages.LogLine{NodeId: node, TaskId: task, TimeUnixNano: t, Text: fmt.Sprintf("%s@%d", task, t), Gen: 1, EndOffset: off}
}

func TestMergeLogs(t *testing.T) {
	start := func(node, task string) *messages.LogCursor {
		return &messages.LogCursor{NodeId: node, TaskId: task, Gen: 1}
	}
	end := func(node, task string, off int64) *messages.LogCursor {
		return &messages.LogCursor{NodeId: node, TaskId: task, Gen: 1, Offset: off}
	}
	tests := []struct {
		name        string
		replies     map[string]*messages.ReadNodeLogsReply
		wantLines   []string
		wantCursors map[string]int64 // task -> offset
		wantMore    bool
	}{
		{
			name: "everything sent: all lines, by time",
			replies: map[string]*messages.ReadNodeLogsReply{
				"n1": {Lines: []*messages.LogLine{line("n1", "a", 1, 10), line("n1", "a", 4, 20)}, Starts: []*messages.LogCursor{start("n1", "a")}, Cursors: []*messages.LogCursor{end("n1", "a", 20)}},
				"n2": {Lines: []*messages.LogLine{line("n2", "b", 2, 10), line("n2", "b", 3, 20)}, Starts: []*messages.LogCursor{start("n2", "b")}, Cursors: []*messages.LogCursor{end("n2", "b", 20)}},
			},
			wantLines:   []string{"a@1", "b@2", "b@3", "a@4"},
			wantCursors: map[string]int64{"a": 20, "b": 20},
		},
		{
			name: "a task with more holds back later lines of others",
			replies: map[string]*messages.ReadNodeLogsReply{
				"n1": {Lines: []*messages.LogLine{line("n1", "a", 1, 10), line("n1", "a", 2, 20)}, More: []string{"a"}, Starts: []*messages.LogCursor{start("n1", "a")}, Cursors: []*messages.LogCursor{end("n1", "a", 20)}},
				"n2": {Lines: []*messages.LogLine{line("n2", "b", 1, 10), line("n2", "b", 3, 20), line("n2", "b", 5, 30)}, Starts: []*messages.LogCursor{start("n2", "b")}, Cursors: []*messages.LogCursor{end("n2", "b", 30)}},
			},
			wantLines:   []string{"a@1", "b@1", "a@2"},
			wantCursors: map[string]int64{"a": 20, "b": 10},
			wantMore:    true,
		},
		{
			name: "a task with more and no line holds back everything",
			replies: map[string]*messages.ReadNodeLogsReply{
				"n1": {More: []string{"a"}, Starts: []*messages.LogCursor{start("n1", "a")}, Cursors: []*messages.LogCursor{end("n1", "a", 500)}},
				"n2": {Lines: []*messages.LogLine{line("n2", "b", 1, 10)}, Starts: []*messages.LogCursor{end("n2", "b", 7)}, Cursors: []*messages.LogCursor{end("n2", "b", 10)}},
			},
			wantLines:   nil,
			wantCursors: map[string]int64{"a": 500, "b": 7},
			wantMore:    true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := mergeLogs(nil, tc.replies)
			var got []string
			for _, l := range out.Lines {
				got = append(got, l.Text)
			}
			if !slices.Equal(got, tc.wantLines) {
				t.Errorf("lines %q, want %q", got, tc.wantLines)
			}
			cur := map[string]int64{}
			for _, c := range out.Cursors {
				cur[c.TaskId] = c.Offset
			}
			for task, off := range tc.wantCursors {
				if cur[task] != off {
					t.Errorf("cursor of %s at %d, want %d", task, cur[task], off)
				}
			}
			if out.More != tc.wantMore {
				t.Errorf("more = %v, want %v", out.More, tc.wantMore)
			}
		})
	}
}
