package manager

import (
	"strings"
	"testing"
	"time"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// TestJoinTokenTTL: `cluster join-token --ttl` records the expiry in the
// replicated cluster info (where every manager's join endpoint checks it);
// asking again returns the same token and expiry; an expired token is
// replaced when asked for, never handed out again; --rotate with --ttl
// gives a new token with a new expiry.
func TestJoinTokenTTL(t *testing.T) {
	c, root := startSigningManager(t)
	ci := &messages.ClusterInfo{ClusterId: "c", CaFingerprint: root.Fingerprint(), WorkerToken: pki.NewSecret(), ManagerToken: pki.NewSecret()}
	if res, err := c.st.Apply(&messages.Command{Op: &messages.Command_SetClusterInfo{SetClusterInfo: &messages.SetClusterInfo{Info: ci}}}, 10*time.Second); err != nil || res.Error != nil {
		t.Fatalf("cluster info: %v %v", err, res.GetError())
	}
	ask := func(t *testing.T, m *messages.JoinTokenRequest) *messages.JoinTokenReply {
		t.Helper()
		return c.local(t, NameAPI, m).(*messages.JoinTokenReply)
	}
	secretOf := func(t *testing.T, tok string) string {
		t.Helper()
		_, s, err := pki.ParseToken(tok)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	worker, manager := messages.NodeRole_NODE_ROLE_WORKER, messages.NodeRole_NODE_ROLE_MANAGER

	before := time.Now()
	r := ask(t, &messages.JoinTokenRequest{Role: worker, TtlSeconds: 3600})
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	exp := time.Unix(0, r.ExpiresUnixNano)
	if exp.Before(before.Add(time.Hour)) || exp.After(time.Now().Add(time.Hour)) {
		t.Fatalf("expiry %v, want an hour from now", exp)
	}
	if secretOf(t, r.Token) != ci.WorkerToken {
		t.Fatal("--ttl without --rotate replaced a live token")
	}
	if got := c.st.State.Cluster().WorkerTokenExpiresUnixNano; got != r.ExpiresUnixNano {
		t.Fatalf("replicated expiry %d, reply says %d", got, r.ExpiresUnixNano)
	}
	if again := ask(t, &messages.JoinTokenRequest{Role: worker}); again.Token != r.Token || again.ExpiresUnixNano != r.ExpiresUnixNano {
		t.Fatal("asking again changed the token or its expiry")
	}
	if m := ask(t, &messages.JoinTokenRequest{Role: manager}); secretOf(t, m.Token) != ci.ManagerToken || m.ExpiresUnixNano != 0 {
		t.Fatal("the worker token's TTL touched the manager token")
	}

	// Expire the worker token: asking for it gives a fresh one.
	cur := c.st.State.Cluster()
	cur.WorkerTokenExpiresUnixNano = time.Now().Add(-time.Second).UnixNano()
	if res, err := c.st.Apply(&messages.Command{Op: &messages.Command_SetClusterInfo{SetClusterInfo: &messages.SetClusterInfo{Info: cur}}}, 10*time.Second); err != nil || res.Error != nil {
		t.Fatalf("expire: %v %v", err, res.GetError())
	}
	fresh := ask(t, &messages.JoinTokenRequest{Role: worker})
	if fresh.Error != nil || fresh.Token == r.Token || fresh.ExpiresUnixNano != 0 {
		t.Fatalf("asking for an expired token = %v (same token %v, expiry %d); want a new token without expiry", fresh.Error, fresh.Token == r.Token, fresh.ExpiresUnixNano)
	}

	rot := ask(t, &messages.JoinTokenRequest{Role: manager, Rotate: true, TtlSeconds: 60})
	if rot.Error != nil || secretOf(t, rot.Token) == ci.ManagerToken || rot.ExpiresUnixNano == 0 {
		t.Fatalf("rotate with a TTL = %v: want a new token that expires", rot.Error)
	}

	for _, ttl := range []int64{-1, 11 * 365 * 24 * 3600} {
		if bad := ask(t, &messages.JoinTokenRequest{Role: worker, TtlSeconds: ttl}); bad.Error == nil || !strings.Contains(bad.Error.Message, "--ttl") {
			t.Errorf("ttl %d: %v, want a refusal naming --ttl", ttl, bad.Error)
		}
	}
}
