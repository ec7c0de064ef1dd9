// Package actors_test checks that docs/architecture.md's package graph is
// the one `go list` sees, so the picture cannot go stale.
package actors_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the package graph in docs/architecture.md")

const (
	module   = "github.com/warrenorch/warren"
	docPath  = "../docs/architecture.md"
	beginTag = "<!-- package graph: begin (generated: go test ./actors -run TestPackageGraph -update) -->"
	endTag   = "<!-- package graph: end -->"
)

// heavy are the dependencies that make a package node code: a program that
// embeds the client must not pull them in.
var heavy = []struct{ name, prefix string }{
	{"raft", "github.com/hashicorp/raft"},
	{"bbolt", "go.etcd.io/bbolt"},
	{"containerd", "github.com/containerd/containerd"},
	{"nftables", "github.com/google/nftables"},
	{"netlink", "github.com/vishvananda/netlink"},
	{"wireguard", "golang.zx2c4.com/wireguard"},
	{"dns", "github.com/miekg/dns"},
}

type pkg struct {
	ImportPath string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

// graph renders every package of the module (tests aside): the module's
// packages it imports, its level (0 imports none of them; otherwise one
// more than the highest level it imports, so an arrow always points down),
// and which heavy dependencies it reaches.
func graph(t *testing.T) string {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]*pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		p := &pkg{}
		if err := dec.Decode(p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if len(p.GoFiles) > 0 { // a test-only package (like this one) ships nothing
			pkgs[p.ImportPath] = p
		}
	}
	short := func(path string) string {
		if path == module {
			return "."
		}
		return strings.TrimPrefix(path, module+"/")
	}
	level := map[string]int{}
	var levelOf func(string) int
	levelOf = func(path string) int {
		if l, ok := level[path]; ok {
			return l
		}
		level[path] = 0 // no cycles in Go imports; this only guards recursion
		l := 0
		for _, imp := range pkgs[path].Imports {
			if _, ok := pkgs[imp]; ok {
				l = max(l, levelOf(imp)+1)
			}
		}
		level[path] = l
		return l
	}
	var paths []string
	for path := range pkgs {
		if strings.HasPrefix(short(path), "e2e") {
			continue // test harness: imports everything, ships nothing
		}
		paths = append(paths, path)
	}
	slices.SortFunc(paths, func(a, b string) int {
		if la, lb := levelOf(a), levelOf(b); la != lb {
			return lb - la
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	b.WriteString("| level | package | imports (this module) | reaches |\n|---|---|---|---|\n")
	for _, path := range paths {
		var own []string
		for _, imp := range pkgs[path].Imports {
			if _, ok := pkgs[imp]; ok {
				own = append(own, "`"+short(imp)+"`")
			}
		}
		var reach []string
		for _, h := range heavy {
			if slices.ContainsFunc(pkgs[path].Deps, func(d string) bool { return strings.HasPrefix(d, h.prefix) }) {
				reach = append(reach, h.name)
			}
		}
		fmt.Fprintf(&b, "| %d | `%s` | %s | %s |\n", levelOf(path), short(path), orDash(strings.Join(own, " ")), orDash(strings.Join(reach, ", ")))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func TestPackageGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	i, j := bytes.Index(doc, []byte(beginTag)), bytes.Index(doc, []byte(endTag))
	if i < 0 || j < i {
		t.Fatalf("%s has no package graph between %q and %q", docPath, beginTag, endTag)
	}
	want := graph(t)
	got := string(doc[i+len(beginTag)+1 : j])
	if got == want {
		return
	}
	if *update {
		var nd []byte
		nd = append(nd, doc[:i+len(beginTag)]...)
		nd = append(nd, '\n')
		nd = append(nd, want...)
		nd = append(nd, doc[j:]...)
		if err := os.WriteFile(docPath, nd, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the package graph in %s is stale: run `go test ./actors -run TestPackageGraph -update` and review the diff.\nwant:\n%s", docPath, want)
}
