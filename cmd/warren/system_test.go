package main

import (
	"bytes"
	"testing"

	"github.com/warrenorch/warren/messages"
)

func TestRenderDf(t *testing.T) {
	r := &messages.SystemDfReply{Nodes: []*messages.NodeDiskUsage{
		{NodeId: "a1b2c3d4e5f60718293a4b5c", Hostname: "mgr-1", DataDir: "/var/lib/warren",
			ImagesBytes: 123_456_789, Images: 3, ContainersBytes: 4_200_000, Containers: 5,
			LogsBytes: 52_000, RaftBytes: 1_048_576, EventsBytes: 32_768, DataDirBytes: 412_000_000},
		{NodeId: "0f1e2d3c4b5a69788796a5b4", Hostname: "worker-2", DataDir: "/data/warren",
			Images: 1, ImagesBytes: 999, LogsBytes: 0, DataDirBytes: 5_000_000_000},
		{NodeId: "ffeeddccbbaa998877665544", Hostname: "worker-3", Error: "node is down: its figures are missing; run `system df` again once it is ready"},
	}}
	var buf bytes.Buffer
	if err := renderDf(&buf, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "system_df", buf.Bytes())
}

func TestHumanBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {1_500_000, "1.5 MB"}, {2_000_000_000_000, "2.0 TB"}} {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
