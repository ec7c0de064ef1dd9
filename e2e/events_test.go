package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warrenorch/warren/e2e/cluster"
)

// eventLine is the part of `warren events -o json` the test reads.
type eventLine struct {
	Seq     uint64            `json:"seq"`
	Type    string            `json:"type"`
	Service string            `json:"service"`
	Attrs   map[string]string `json:"attrs"`
}

func eventLines(t *testing.T, out string) []eventLine {
	t.Helper()
	var evs []eventLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var ev eventLine
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("events -o json printed a line that is not JSON: %q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// checkSeqs fails unless evs are numbered from..to, each once, in order.
func checkSeqs(t *testing.T, what string, evs []eventLine, from, to uint64) {
	t.Helper()
	for i, ev := range evs {
		if want := from + uint64(i); ev.Seq != want {
			t.Fatalf("%s: event %d has seq %d, want %d (a gap or a duplicate)", what, i, ev.Seq, want)
		}
	}
	if got := from + uint64(len(evs)) - 1; len(evs) == 0 || got != to {
		t.Fatalf("%s: %d events, up to %d; want %d..%d", what, len(evs), got, from, to)
	}
}

// TestEvents: issue 14's acceptance for events. A follower started with
// --since an older sequence number gets the history, then the live events,
// none twice and none missing, while services are scaled in a loop; the
// filters and --until select on the manager; a bad filter is refused
// before any connection.
func TestEvents(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 2, Bin: warrenBin})
	formCluster(t, h, 1, "--events-max-age", "168h", "--events-max-count", "100000")
	m0, w1 := h.Hosts[0], h.Hosts[1]
	cli(t, m0, "image", "import", demoV1)
	cli(t, m0, "service", "create", "web", "--image", "demo:v1", "--replicas", "2")
	cli(t, m0, "service", "create", "db", "--image", "demo:v1", "--replicas", "1")
	waitRunning(t, m0, "web", 2)

	history := eventLines(t, cli(t, m0, "events", "-o", "json"))
	if len(history) < 10 {
		t.Fatalf("history holds %d events after forming a cluster and creating two services", len(history))
	}
	older := history[len(history)/2].Seq

	// Writes go on for the whole test: web and db scaled in turn.
	var stop atomic.Bool
	var writes sync.WaitGroup
	writes.Add(1)
	go func() {
		defer writes.Done()
		for i := 0; !stop.Load(); i++ {
			svc := []string{"web", "db"}[i%2]
			if _, _, err := m0.CLI("service", "scale", fmt.Sprintf("%s=%d", svc, 1+i%4)); err != nil {
				t.Errorf("scale during the follow: %v", err)
				return
			}
		}
	}()
	defer func() { stop.Store(true); writes.Wait() }()
	// The seam falls in the middle of the writes, after a history of a few
	// batches to replay.
	time.Sleep(5 * time.Second)

	follower := exec.Command(warrenBin, "events", "-f", "--since", fmt.Sprint(older), "-o", "json")
	follower.Env = append(os.Environ(), "WARREN_CONFIG_DIR="+m0.ConfigDir)
	var stderr strings.Builder
	follower.Stderr = &stderr
	out, err := follower.StdoutPipe()
	must(t, err)
	must(t, follower.Start())
	defer follower.Process.Kill() //nolint:errcheck
	lines := make(chan eventLine, 100000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev eventLine
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				lines <- ev
			} else {
				lines <- eventLine{Type: "not json: " + sc.Text()}
			}
		}
	}()

	time.Sleep(8 * time.Second)
	stop.Store(true)
	writes.Wait()
	history = eventLines(t, cli(t, m0, "events", "-o", "json"))
	last := history[len(history)-1].Seq
	var got []eventLine
	deadline := time.After(30 * time.Second)
	for len(got) == 0 || got[len(got)-1].Seq < last {
		select {
		case ev, ok := <-lines:
			if !ok {
				t.Fatalf("the follower ended after %d events: %s", len(got), stderr.String())
			}
			got = append(got, ev)
		case <-deadline:
			t.Fatalf("after 30s the follower has %d events, want up to seq %d", len(got), last)
		}
	}
	must(t, follower.Process.Signal(syscall.SIGINT))
	if err := follower.Wait(); err != nil {
		t.Errorf("events -f did not end cleanly on SIGINT: %v: %s", err, stderr.String())
	}
	checkSeqs(t, "events -f --since "+fmt.Sprint(older), got, older+1, last)
	t.Logf("followed %d events from seq %d to %d across the seam while scaling", len(got), older+1, last)
	// It is the same history as the manager keeps.
	var kept []eventLine
	for _, ev := range history {
		if ev.Seq > older {
			kept = append(kept, ev)
		}
	}
	for i := range kept {
		if kept[i].Seq != got[i].Seq || kept[i].Type != got[i].Type {
			t.Fatalf("followed event %d is %v, the history's %v", i, got[i], kept[i])
		}
	}

	// Filters run on the manager: each key, and keys together.
	for _, ev := range eventLines(t, cli(t, m0, "events", "--since", fmt.Sprint(older), "--filter", "service=web", "-o", "json")) {
		if ev.Service != "web" {
			t.Fatalf("--filter service=web printed %+v", ev)
		}
	}
	onWorker := eventLines(t, cli(t, m0, "events", "--filter", "node="+w1.NodeID(), "--filter", "type=task.", "-o", "json"))
	if len(onWorker) == 0 {
		t.Fatalf("no task events on the worker %s", w1.NodeID())
	}
	for _, ev := range onWorker {
		if !strings.HasPrefix(ev.Type, "task.") || ev.Attrs["node"] != w1.NodeID() {
			t.Fatalf("--filter node=%s --filter type=task. printed %+v", w1.NodeID(), ev)
		}
	}
	// --since and --until by sequence number: exactly that range.
	checkSeqs(t, "--since/--until", eventLines(t, cli(t, m0, "events", "--since", fmt.Sprint(older), "--until", fmt.Sprint(older+20), "-o", "json")), older+1, older+20)
	// By time: nothing from the future, everything from the last hour.
	if evs := eventLines(t, cli(t, m0, "events", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "-o", "json")); len(evs) != 0 {
		t.Fatalf("--since an hour ahead printed %d events", len(evs))
	}
	// (Tasks may still be settling: the history only grows meanwhile.)
	if evs := eventLines(t, cli(t, m0, "events", "--since", "1h", "-o", "json")); len(evs) < len(history) || evs[0].Seq != history[0].Seq {
		t.Fatalf("--since 1h printed %d events from seq %d, the history holds %d from %d", len(evs), evs[0].Seq, len(history), history[0].Seq)
	}

	// A bad filter key is refused before any connection.
	_, _, err = m0.CLI("--manager", "192.0.2.1:4280", "events", "--filter", "colour=red")
	if err == nil || !strings.Contains(err.Error(), `unknown key "colour"`) {
		t.Fatalf("a bad filter key: %v", err)
	}
}
