package manager

import (
	"slices"
	"testing"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/store/pki"
)

// TestAPIRoutes: every request type remoting lets a worker or an admin send
// to manager/api is routed to exactly one handler (the api itself or one
// child), with the roles the transport allows; and nothing is routed that
// the transport would never let through from those roles. A new request
// type in remoting's rules fails here until a child's table takes it.
func TestAPIRoutes(t *testing.T) {
	tables := map[string]table{"manager/api": apiTable}
	for _, c := range apiChildren {
		if _, dup := tables[NameAPI+"/"+c.name]; dup {
			t.Fatalf("two api children named %q", c.name)
		}
		tables[NameAPI+"/"+c.name] = c.table
	}
	handlers := func(typ string) []string {
		var out []string
		for owner, tb := range tables {
			if _, ok := tb[typ]; ok {
				out = append(out, owner)
			}
		}
		return out
	}
	for _, r := range remoting.Rules {
		if r.Target != remoting.ActorAPI || r.Role == pki.RoleManager {
			continue
		}
		for _, typ := range r.Types {
			h := handlers(typ)
			if len(h) != 1 {
				t.Errorf("%s may send %s to %s, which is routed to %v: route it to exactly one api child", r.Role, typ, r.Target, h)
				continue
			}
			if roles := tables[h[0]][typ]; !slices.Contains(roles, r.Role) {
				t.Errorf("%s: %s may send %s (remoting's rules) but the table allows only %v", h[0], r.Role, typ, roles)
			}
		}
	}
	for owner, tb := range tables {
		for typ, roles := range tb {
			for _, role := range roles {
				if role == roleLocal || role == pki.RoleManager {
					continue // in-process, and managers may send anything
				}
				if !remoting.Allowed(role, remoting.ActorAPI, typ) {
					t.Errorf("%s allows %s to send %s, which the transport refuses: the table and remoting's rules disagree", owner, role, typ)
				}
			}
			if len(handlers(typ)) != 1 {
				t.Errorf("%s is routed to %v", typ, handlers(typ))
			}
		}
	}
}

// TestAPIChildrenSpawned: a running manager has each child under its
// stable, named id (`warren events` shows them).
func TestAPIChildrenSpawned(t *testing.T) {
	c := startManager(t)
	for _, id := range []string{"manager/api/services", "manager/api/nodes", "manager/api/images", "manager/api/cluster", NameMembership} {
		waitFor(t, id, func() bool { _, ok := c.sys.ProcessRegistry.GetLocal(id); return ok })
	}
}
