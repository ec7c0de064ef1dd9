package client

import (
	"time"

	"github.com/warrenorch/warren/messages"
)

// AuditOptions selects audit entries; zero fields match everything.
type AuditOptions struct {
	Since  time.Time // recorded at or after
	User   string    // certificate name
	Denied bool      // only requests refused for the caller's certificate
	Limit  int       // the newest Limit that match; 0: all
}

// Audit lists the audit log, oldest first, from the manager in use (every
// manager holds the whole log): who asked for which write, when, and what
// came of it, and the requests refused for the caller's certificate.
func (c *Client) Audit(o AuditOptions) (*messages.ListAuditReply, error) {
	req := &messages.ListAuditRequest{User: o.User, Denied: o.Denied, Limit: uint32(max(o.Limit, 0))}
	if !o.Since.IsZero() {
		req.SinceUnixNano = o.Since.UnixNano()
	}
	return typed[*messages.ListAuditReply](c.Request(req))
}
