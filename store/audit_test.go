package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
)

// t0 is the audit tests' clock: the commands' own time, as a proposer stamps it.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()

func entry(id, user string, at time.Duration) *messages.AuditEntry {
	return &messages.AuditEntry{Id: id, User: user, Role: "admin", UnixNano: t0 + int64(at), Request: "CreateServiceRequest", Target: "web"}
}

func appendCmd(at time.Duration, maxEntries uint32, maxAge time.Duration, es ...*messages.AuditEntry) *messages.Command {
	return &messages.Command{UnixNano: t0 + int64(at), Op: &messages.Command_AppendAudit{AppendAudit: &messages.AppendAudit{
		Entries: es, MaxEntries: maxEntries, MaxAgeSeconds: int64(maxAge / time.Second)}}}
}

// ids lists the ids and seqs of the log, oldest first: what every manager
// must agree on.
func ids(s *State) string {
	es, last := s.Audit(AuditFilter{})
	var parts []string
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("%s#%d", e.Id, e.Seq))
	}
	return fmt.Sprintf("%s last=%d", strings.Join(parts, " "), last)
}

func TestAuditApply(t *testing.T) {
	cases := []struct {
		name string
		cmds []*messages.Command
		want string
	}{
		{"entries get seqs in commit order", []*messages.Command{
			appendCmd(0, 0, 0, entry("a", "admin", 0), entry("b", "admin", 0)),
			appendCmd(time.Second, 0, 0, entry("c", "ops", time.Second)),
		}, "a#1 b#2 c#3 last=3"},
		{"a batch proposed twice is applied once", []*messages.Command{
			appendCmd(0, 0, 0, entry("a", "admin", 0), entry("b", "admin", 0)),
			appendCmd(time.Second, 0, 0, entry("a", "admin", 0), entry("b", "admin", 0), entry("c", "admin", 0)),
		}, "a#1 b#2 c#3 last=3"},
		{"an entry without an id is dropped", []*messages.Command{
			appendCmd(0, 0, 0, entry("", "admin", 0), entry("a", "admin", 0)),
		}, "a#1 last=1"},
		{"count: the oldest go first, seqs are never reused", []*messages.Command{
			appendCmd(0, 3, 0, entry("a", "x", 0), entry("b", "x", 0)),
			appendCmd(time.Second, 3, 0, entry("c", "x", 0), entry("d", "x", 0)),
			appendCmd(2*time.Second, 3, 0, entry("e", "x", 0)),
		}, "c#3 d#4 e#5 last=5"},
		{"age: measured from the command's time, not the applier's clock", []*messages.Command{
			appendCmd(0, 0, time.Hour, entry("a", "x", 0), entry("b", "x", 30*time.Minute)),
			appendCmd(90*time.Minute, 0, time.Hour, entry("c", "x", 90*time.Minute)),
		}, "b#2 c#3 last=3"},
		{"age: an old entry behind a newer one (another manager's clock) goes too", []*messages.Command{
			appendCmd(0, 0, time.Hour, entry("a", "x", 2*time.Hour), entry("b", "x", 0), entry("c", "x", 2*time.Hour)),
			appendCmd(2*time.Hour, 0, time.Hour, entry("d", "x", 2*time.Hour)),
		}, "a#1 c#3 d#4 last=4"},
		{"a trimmed id may come again (no retry is that late)", []*messages.Command{
			appendCmd(0, 1, 0, entry("a", "x", 0)),
			appendCmd(0, 1, 0, entry("b", "x", 0)),
			appendCmd(0, 1, 0, entry("a", "x", 0)),
		}, "a#3 last=3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewState()
			for i, c := range tc.cmds {
				before := s.Index()
				res, changes := s.Apply(uint64(10+i), c)
				if res.Error != nil {
					t.Fatalf("apply %d: %v", i, res.Error)
				}
				if len(changes) != 0 || s.Index() != before {
					t.Fatalf("apply %d: an audit append changed the cluster state (changes %d, index %d -> %d)", i, len(changes), before, s.Index())
				}
			}
			if got := ids(s); got != tc.want {
				t.Fatalf("log = %s, want %s", got, tc.want)
			}
			// Every manager restoring a snapshot holds the same log.
			r := NewState()
			r.restore(s.Snapshot())
			if got := ids(r); got != tc.want {
				t.Fatalf("restored log = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAuditFilter(t *testing.T) {
	s := NewState()
	denied := entry("d", "wrk-1", time.Minute)
	denied.Role, denied.Denied, denied.Code, denied.RefusedBy = "worker", true, "PERMISSION_DENIED", "transport"
	notFound := entry("n", "admin", 2*time.Minute)
	notFound.Code = "NOT_FOUND"
	answeredDenied := entry("p", "admin", 3*time.Minute)
	answeredDenied.Code = AuditCode(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED)
	s.Apply(1, appendCmd(0, 0, 0, entry("a", "admin", 0), denied, notFound, answeredDenied, entry("o", "ops", 4*time.Minute)))
	cases := []struct {
		name string
		f    AuditFilter
		want string
	}{
		{"all", AuditFilter{}, "a d n p o"},
		{"since", AuditFilter{SinceUnixNano: t0 + int64(2*time.Minute)}, "n p o"},
		{"user", AuditFilter{User: "admin"}, "a n p"},
		{"denied: refusals and permission-denied answers", AuditFilter{Denied: true}, "d p"},
		{"limit keeps the newest", AuditFilter{Limit: 2}, "p o"},
		{"all filters at once", AuditFilter{User: "admin", Denied: true, SinceUnixNano: t0, Limit: 5}, "p"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			es, _ := s.Audit(tc.f)
			var got []string
			for _, e := range es {
				got = append(got, e.Id)
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

// TestAuditThroughRaft: entries committed through a real raft store on disk
// survive a snapshot and a restart (restore, then log replay).
func TestAuditThroughRaft(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	s := openTest(t, dir, addr)
	apply := func(s *Store, c *messages.Command) {
		t.Helper()
		res, err := s.Apply(c, 5*time.Second)
		if err != nil || res.Error != nil {
			t.Fatalf("apply: %v %v", err, res.GetError())
		}
	}
	apply(s, appendCmd(0, 0, 0, entry("a", "admin", 0), entry("b", "admin", 0)))
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	apply(s, appendCmd(time.Second, 0, 0, entry("c", "admin", time.Second)))
	const want = "a#1 b#2 c#3 last=3"
	if got := ids(s.State); got != want {
		t.Fatalf("log = %s, want %s", got, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, addr)
	defer s.Close()
	if err := s.Barrier(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := ids(s.State); got != want {
		t.Fatalf("after restart the log = %s, want %s", got, want)
	}
}
