package remoting

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/warrenorch/warren/messages"
)

// rulesTable renders Rules as the markdown table docs/security.md shows.
func rulesTable() string {
	short := func(types []string) string {
		var out []string
		for _, t := range types {
			switch t {
			case TypeAny:
				out = append(out, "any")
			default:
				out = append(out, "`"+strings.TrimPrefix(t, "warren.v1.")+"`")
			}
		}
		return strings.Join(out, ", ")
	}
	target := func(t string) string {
		switch t {
		case TargetAny:
			return "any actor"
		case TargetFuture:
			return "a reply future (`future$…`)"
		}
		return "`" + t + "`"
	}
	var b strings.Builder
	b.WriteString("| role | may send to | these messages | whose resources |\n|---|---|---|---|\n")
	for _, r := range Rules {
		b.WriteString("| `" + r.Role + "` | " + target(r.Target) + " | " + short(r.Types) + " | " + r.Whose + " |\n")
	}
	return b.String()
}

// TestSecurityDocTable keeps docs/security.md's authorisation table the
// table the code enforces.
func TestSecurityDocTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- remoting.Rules: begin (TestSecurityDocTable checks this table) -->\n", "<!-- remoting.Rules: end -->"
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("docs/security.md has no table between %q and %q", begin, end)
	}
	if got, want := s[i+len(begin):j], rulesTable(); got != want {
		t.Fatalf("docs/security.md's authorisation table differs from remoting.Rules; put this between the markers:\n%s", want)
	}
}

// TestEveryRequestDecided: every API request type is either callable by
// admins or named here as not theirs, so a new request is a decision, not
// an accident of a naming pattern.
func TestEveryRequestDecided(t *testing.T) {
	notAdmin := map[string]string{
		"warren.v1.CertificateRequest": "the node protocol",
		"warren.v1.ResyncRequest":      "managers ask their nodes",
		"warren.v1.NodeDfRequest":      "managers ask their nodes (system df)",
		"warren.v1.JoinRequest":        "the HTTPS join endpoint, not remoting",
	}
	admin := map[string]bool{}
	for _, n := range adminAPI {
		admin[n] = true
	}
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		name := string(mt.Descriptor().FullName())
		if !strings.HasPrefix(name, "warren.v1.") || !strings.HasSuffix(name, "Request") {
			return true
		}
		if !admin[name] && notAdmin[name] == "" {
			t.Errorf("%s is neither in adminAPI nor refused on purpose: decide who may send it (actors/remoting/authz.go)", name)
		}
		return true
	})
}
