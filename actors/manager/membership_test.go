package manager

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// askMember asks the manager's membership actor as a local actor would.
func askMember(t *testing.T, c *cluster, m any, timeout time.Duration) *membershipReply {
	t.Helper()
	res, err := c.sys.Root.RequestFuture(actor.NewPID(c.sys.Address(), NameMembership), m, timeout).Result()
	return membershipResult(res, err)
}

// openFollower opens a second, empty raft node with a manager certificate
// of c's CA: a manager that joined and waits to be made a voter.
func openFollower(t *testing.T, c *cluster, id string) (*store.Store, string) {
	t.Helper()
	ident, err := c.ca.Issue(id, pki.RoleManager, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.TLSConfig(c.ca.PEM, ident)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	st, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "raft"), NodeID: id, Bind: addr, Advertise: addr, TLS: tlsCfg, Log: zap.NewNop()}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, addr
}

func voterIDs(r *membershipReply) []string {
	var out []string
	for _, s := range r.servers {
		if s.Voter {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// TestMembership drives the membership actor of a real manager (raft on
// disk, TLS transport) through a voter's life: added, added again (no
// change), removed; and a leadership transfer with nobody to take it.
func TestMembership(t *testing.T) {
	c := startManager(t)
	const long = 30 * time.Second

	if r := askMember(t, c, &barrier{timeout: 5 * time.Second}, long); r.err != nil {
		t.Fatalf("barrier on the leader: %v", r.err)
	}
	t.Run("transfer with a single voter errors clearly", func(t *testing.T) {
		r := askMember(t, c, &transferLeadership{}, long)
		if !errors.Is(r.err, errOnlyVoter) || !strings.Contains(r.err.Error(), "promote another node first") {
			t.Fatalf("got %v, want %v", r.err, errOnlyVoter)
		}
		if !c.st.IsLeader() {
			t.Fatal("the only voter lost leadership")
		}
		// host's stop asks the same way and finds nothing to hand over.
		if err := TransferLeadership(c.sys, long); err != nil {
			t.Fatalf("TransferLeadership with nothing to hand over: %v", err)
		}
	})

	st2, addr2 := openFollower(t, c, "mgr-2")
	t.Run("add a voter", func(t *testing.T) {
		if r := askMember(t, c, &addVoter{id: "mgr-2", addr: addr2}, long); r.err != nil {
			t.Fatalf("add voter: %v", r.err)
		}
		if got := voterIDs(askMember(t, c, &listServers{}, long)); !slices.Equal(got, []string{"mgr-1", "mgr-2"}) {
			t.Fatalf("voters %v", got)
		}
		// The new voter follows the leader.
		waitFor(t, "mgr-2 follows mgr-1", func() bool { _, id := st2.Leader(); return id == "mgr-1" })
	})
	t.Run("adding a member again changes nothing", func(t *testing.T) {
		before := c.st.Stats()["last_log_index"]
		if r := askMember(t, c, &addVoter{id: "mgr-2", addr: "127.0.0.1:1"}, long); r.err != nil {
			t.Fatalf("add again: %v", r.err)
		}
		if after := c.st.Stats()["last_log_index"]; after != before {
			t.Fatalf("a repeated add wrote to the log: %s -> %s", before, after)
		}
	})
	t.Run("remove the voter", func(t *testing.T) {
		if r := askMember(t, c, &removeServer{id: "mgr-2"}, long); r.err != nil {
			t.Fatalf("remove: %v", r.err)
		}
		if got := voterIDs(askMember(t, c, &listServers{}, long)); !slices.Equal(got, []string{"mgr-1"}) {
			t.Fatalf("voters after remove %v", got)
		}
		if r := askMember(t, c, &transferLeadership{}, long); !errors.Is(r.err, errOnlyVoter) {
			t.Fatalf("transfer after the remove: %v", r.err)
		}
	})
	if err := Barrier(c.sys, 5*time.Second); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
}

// TestMembershipTransfer hands leadership from a real leader to the voter
// it added; the old leader's actor then says it no longer leads.
func TestMembershipTransfer(t *testing.T) {
	c := startManager(t)
	const long = 30 * time.Second
	st2, addr2 := openFollower(t, c, "mgr-2")
	if r := askMember(t, c, &addVoter{id: "mgr-2", addr: addr2}, long); r.err != nil {
		t.Fatalf("add voter: %v", r.err)
	}
	waitFor(t, "mgr-2 follows mgr-1", func() bool { _, id := st2.Leader(); return id == "mgr-1" })
	if r := askMember(t, c, &transferLeadership{}, long); r.err != nil {
		t.Fatalf("transfer: %v", r.err)
	}
	waitFor(t, "mgr-2 leads", st2.IsLeader)
	if r := askMember(t, c, &transferLeadership{}, long); !errors.Is(r.err, errNotLeading) {
		t.Fatalf("transfer from a follower: %v, want %v", r.err, errNotLeading)
	}
}

// raftMembership is the store's membership API: only the membership actor
// may call it, so that every configuration change and leadership transfer
// goes through one owner, off the callers' mailboxes.
var raftMembership = []string{"AddVoter", "RemoveServer", "TransferLeadership", "Servers", "Barrier"}

// TestOnlyMembershipCallsRaftMembership fails when a non-test file of the
// module, other than membership.go and the store package that defines
// them, calls one of those methods. It matches method names (the check
// must stay fast and needs no type checking): an unrelated method of the
// same name would be flagged, and should be renamed. A package-qualified
// call (manager.Barrier, the wrapper host uses) is not a method call.
func TestOnlyMembershipCallsRaftMembership(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if bad := membershipCallers(t, root); len(bad) > 0 {
		t.Fatalf("raft membership called outside the membership actor (ask it with a message instead: see membership.go):\n%s", strings.Join(bad, "\n"))
	}
	// The check itself finds a call: the host's old direct ones.
	dir := t.TempDir()
	src := "package host\n\nimport \"github.com/warrenorch/warren/actors/manager\"\n\nfunc stop(n *Node) {\n\tmanager.Barrier(nil, 0)\n\tn.st.TransferLeadership()\n\t_ = n.st.Barrier(30)\n}\n"
	if err := os.MkdirAll(filepath.Join(dir, "actors/host"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "actors/host/host.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if bad := membershipCallers(t, dir); len(bad) != 2 {
		t.Fatalf("the check found %v in a file with two direct calls", bad)
	}
}

// membershipCallers lists the calls of raftMembership methods under root.
func membershipCallers(t *testing.T, root string) []string {
	t.Helper()
	allowed := map[string]bool{"actors/manager/membership.go": true}
	fset := token.NewFileSet()
	var bad []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "store" || d.Name() == "testdata" || d.Name() == "vendor" || (strings.HasPrefix(d.Name(), ".") && rel != ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || allowed[rel] {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		imports := map[string]bool{}
		for _, spec := range f.Imports {
			name := strings.Trim(spec.Path.Value, `"`)
			name = name[strings.LastIndex(name, "/")+1:]
			if spec.Name != nil {
				name = spec.Name.Name
			}
			imports[name] = true
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !slices.Contains(raftMembership, sel.Sel.Name) {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && imports[id.Name] {
				return true // a package's function, not a method
			}
			bad = append(bad, rel+":"+strings.SplitN(fset.Position(call.Pos()).String(), ":", 2)[1]+": "+sel.Sel.Name)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}
