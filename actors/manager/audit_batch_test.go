package manager

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/messages"
)

// fakeAuditStore is a FAKE store actor (manager/store) that counts the
// audit proposals it gets and fails the first fail of them, so a test can
// see how entries are batched and retried without raft.
type fakeAuditStore struct {
	mu        sync.Mutex
	fail      int
	proposals int
	ids       map[string]int // entry id -> times proposed in a batch that was taken
}

func (f *fakeAuditStore) receive(ctx actor.Context) {
	p, ok := ctx.Message().(*messages.Propose)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proposals++
	if f.fail > 0 {
		f.fail--
		ctx.Respond(&messages.CommandResult{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: "no leader (test)"}})
		return
	}
	for _, e := range p.Command.GetAppendAudit().GetEntries() {
		f.ids[e.Id]++
	}
	ctx.Respond(&messages.CommandResult{})
}

func (f *fakeAuditStore) counts() (proposals, distinct, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.ids {
		total += n
	}
	return f.proposals, len(f.ids), total
}

// TestAuditBatching: a burst of entries reaches raft in few proposals (at
// most auditBatch entries each, one in flight at a time), a batch raft did
// not take is proposed again, and every entry is taken exactly once with
// its own id.
func TestAuditBatching(t *testing.T) {
	cases := []struct {
		name          string
		entries       int
		fail          int
		maxProposals  int
		wantProposals int // exact when not 0
	}{
		{"one entry, one proposal", 1, 0, 0, 1},
		{"a burst of 1000 goes in batches", 1000, 0, 6, 0}, // 256 a batch: 4, and a little slack
		{"a refused batch is proposed again", 10, 2, 0, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sys := quietSystem()
			f := &fakeAuditStore{fail: tc.fail, ids: map[string]int{}}
			if _, err := sys.Root.SpawnNamed(actor.PropsFromFunc(f.receive), NameStore); err != nil {
				t.Fatal(err)
			}
			pid, err := sys.Root.SpawnNamed(newAuditLog(APIConfig{NodeID: "mgr-1"}), NameAudit)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.entries; i++ {
				sys.Root.Send(pid, &auditRecord{e: &messages.AuditEntry{User: "admin", Request: "ScaleServiceRequest", Target: fmt.Sprintf("web=%d", i)}})
			}
			within(t, 15*time.Second, "every entry proposed", func() bool {
				_, distinct, _ := f.counts()
				return distinct == tc.entries
			})
			time.Sleep(2 * auditFlushEvery) // nothing more should follow
			proposals, distinct, total := f.counts()
			if total != distinct {
				t.Fatalf("%d entries taken %d times: an entry was proposed twice after raft took it", distinct, total)
			}
			if tc.wantProposals != 0 && proposals != tc.wantProposals {
				t.Fatalf("%d proposals, want %d", proposals, tc.wantProposals)
			}
			if tc.maxProposals != 0 && proposals > tc.maxProposals {
				t.Fatalf("%d proposals for %d entries, want at most %d", proposals, tc.entries, tc.maxProposals)
			}
			t.Logf("%d entries in %d proposals", tc.entries, proposals)
		})
	}
}
