package remoting

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/store/pki"
)

// TestOnRefused: the guard tells Config.OnRefused who was refused what, and
// only for role refusals (the audit log records them); an allowed message
// and a malformed batch are not reported as refusals.
func TestOnRefused(t *testing.T) {
	type refusal struct{ name, role, target, typ string }
	cases := []struct {
		name   string
		who    pki.Peer
		target string
		typ    string
		bad    bool // a malformed envelope, refused but not for the role
		want   []refusal
	}{
		{"worker calls the management API", pki.Peer{Name: "wrk-1", Role: pki.RoleWorker}, ActorAPI, "warren.v1.RemoveNodeRequest", false,
			[]refusal{{"wrk-1", pki.RoleWorker, ActorAPI, "warren.v1.RemoveNodeRequest"}}},
		{"admin proposes to the store", pki.Peer{Name: "admin", Role: pki.RoleAdmin}, "manager/store", "warren.v1.Propose", false,
			[]refusal{{"admin", pki.RoleAdmin, "manager/store", "warren.v1.Propose"}}},
		{"admin calls the management API", pki.Peer{Name: "admin", Role: pki.RoleAdmin}, ActorAPI, "warren.v1.RemoveNodeRequest", false, nil},
		{"malformed, not a role refusal", pki.Peer{Name: "wrk-1", Role: pki.RoleWorker}, ActorAPI, "warren.v1.RemoveNodeRequest", true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []refusal
			g := &guard{system: actor.NewActorSystem(), log: zap.NewNop(), onRefused: func(p pki.Peer, target, typ string) {
				got = append(got, refusal{p.Name, p.Role, target, typ})
			}}
			env := &remote.MessageEnvelope{TypeId: 0, Target: 0}
			if tc.bad {
				env.TypeId = 7
			}
			err := g.check(&remote.MessageBatch{TypeNames: []string{tc.typ}, Targets: []*actor.PID{{Address: "x", Id: tc.target}},
				Envelopes: []*remote.MessageEnvelope{env}}, tc.who)
			if (err != nil) != (tc.want != nil || tc.bad) {
				t.Fatalf("check: %v", err)
			}
			if len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Fatalf("refusals reported %v, want %v", got, tc.want)
			}
		})
	}
}
