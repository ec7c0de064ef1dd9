package store

import (
	"strings"
	"time"

	"github.com/warrenorch/warren/messages"
)

// The audit log's retention when a proposer names none: enough for a
// month of a busy team's changes, and small enough for every snapshot
// (an entry is a few hundred bytes: 10,000 are a few MB).
const (
	DefaultAuditMaxEntries = 10000
	DefaultAuditMaxAge     = 30 * 24 * time.Hour
)

// maxAuditMessage bounds an entry's error message, so one long error
// cannot grow every snapshot.
const maxAuditMessage = 1024

// appendAudit applies an AppendAudit at index: each entry not already
// present (by id: a batch proposed twice is applied once) gets the next
// seq, then the log is trimmed by the command's retention, measured from
// the command's own time (now), so every manager keeps the same entries.
// It changes no cluster object, so it neither moves Index nor publishes a
// change: readers that wait for the state to move (network views, drains,
// tests that check a refused write changed nothing) never see audit
// traffic. Callers hold mu.
func (s *State) appendAudit(index uint64, a *messages.AppendAudit, now int64) *messages.CommandResult {
	res := &messages.CommandResult{Index: index}
	for _, e := range a.GetEntries() {
		if e.GetId() == "" {
			continue // unaddressable: could not be told from a retry
		}
		if _, dup := s.auditIDs[e.Id]; dup {
			continue
		}
		e = clone(e)
		s.auditSeq++
		e.Seq = s.auditSeq
		if len(e.Message) > maxAuditMessage {
			e.Message = e.Message[:maxAuditMessage] + "…"
		}
		s.audit = append(s.audit, e)
		s.auditIDs[e.Id] = struct{}{}
		res.Ids = append(res.Ids, e.Id)
	}
	s.trimAudit(int(a.GetMaxEntries()), time.Duration(a.GetMaxAgeSeconds())*time.Second, now)
	return res
}

// trimAudit drops entries recorded before now-maxAge (entries come from
// several managers' clocks, so not only a prefix), then the oldest beyond
// maxEntries. Zero means no limit.
func (s *State) trimAudit(maxEntries int, maxAge time.Duration, now int64) {
	drop := 0
	if maxEntries > 0 && len(s.audit) > maxEntries {
		drop = len(s.audit) - maxEntries
	}
	cutoff := int64(0)
	if maxAge > 0 && now > 0 {
		cutoff = now - maxAge.Nanoseconds()
	}
	old := 0
	for _, e := range s.audit[drop:] {
		if e.UnixNano < cutoff {
			old++
		}
	}
	if drop == 0 && old == 0 {
		return
	}
	kept := make([]*messages.AuditEntry, 0, len(s.audit)-drop-old)
	for i, e := range s.audit {
		if i < drop || e.UnixNano < cutoff {
			delete(s.auditIDs, e.Id)
			continue
		}
		kept = append(kept, e)
	}
	s.audit = kept
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	SinceUnixNano int64
	User          string // certificate name
	Denied        bool   // only refusals and PERMISSION_DENIED answers
	Limit         int    // the newest Limit that match
}

// AuditCode is an error code as audit entries name it: PERMISSION_DENIED.
func AuditCode(c messages.ErrorCode) string {
	if c == messages.ErrorCode_ERROR_CODE_NONE {
		return ""
	}
	return strings.TrimPrefix(c.String(), "ERROR_CODE_")
}

// AuditDenied reports whether e was a request refused for its sender.
func AuditDenied(e *messages.AuditEntry) bool {
	return e.Denied || e.Code == AuditCode(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED)
}

// Audit returns the entries matching f, oldest first, and the newest seq
// assigned.
func (s *State) Audit(f AuditFilter) ([]*messages.AuditEntry, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*messages.AuditEntry
	for _, e := range s.audit {
		if e.UnixNano < f.SinceUnixNano || (f.User != "" && e.User != f.User) || (f.Denied && !AuditDenied(e)) {
			continue
		}
		out = append(out, e)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	for i, e := range out {
		out[i] = clone(e)
	}
	return out, s.auditSeq
}

// snapshotAudit and restoreAudit carry the log through snapshots; callers
// hold mu.
func (s *State) snapshotAudit(snap *messages.StateSnapshot) {
	for _, e := range s.audit {
		snap.Audit = append(snap.Audit, clone(e))
	}
	snap.AuditSeq = s.auditSeq
}

func (s *State) restoreAudit(snap *messages.StateSnapshot) {
	s.audit = snap.Audit
	s.auditSeq = snap.AuditSeq
	for _, e := range s.audit {
		s.auditIDs[e.Id] = struct{}{}
	}
}
