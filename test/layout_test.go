// Package test holds the tests of the tree as a whole; the integration,
// stress and benchmark suites are its subdirectories.
package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/test/harness"
)

const module = "github.com/devfsd/devfsd"

// layer is a package's place in DESIGN.md section 1's import order:
//
//	cmd → {daemon, helperd} → {fs, control, state, metrics, audit,
//	modload/*} → lookup → config → {dcache, fs/viewpath} → sync/*
//
// config sits above dcache (it uses dcache's node types) and below
// everything else, since every file and request uses its value types.
// fs/viewpath, the view pattern language, is a leaf beside dcache: fs
// serves views with it, control and config validate them with it.
// A package imports only packages of lower layers, but for the peers of
// one layer that share it (the middle layer; the leaf primitives).
var layers = []struct {
	rank  int
	peers bool // may import the same layer
	match func(p string) bool
}{
	{0, true, func(p string) bool { return strings.HasPrefix(p, "sync/") }},
	{1, false, is("dcache", "fs/viewpath")},
	{2, false, is("config")},
	{3, false, is("lookup")},
	{4, true, func(p string) bool {
		return is("fs", "control", "state", "metrics", "audit", "modload")(p) ||
			strings.HasPrefix(p, "control/") || strings.HasPrefix(p, "modload/")
	}},
	{5, false, is("daemon", "helperd")},
	{6, false, func(p string) bool { return strings.HasPrefix(p, "cmd/") }},
}

func is(names ...string) func(string) bool {
	return func(p string) bool {
		for _, n := range names {
			if p == n {
				return true
			}
		}
		return false
	}
}

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
}

// listPackages is `go list -json ./...` of the module, but for test/
// (tests only: they may import anything) — deploy/ is a module of its
// own.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if rel == "test" || strings.HasPrefix(rel, "test/") {
			continue
		}
		p.ImportPath = rel
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func rankOf(p string) (rank int, peers, ok bool) {
	for _, l := range layers {
		if l.match(p) {
			return l.rank, l.peers, true
		}
	}
	return 0, false, false
}

// Imports point one way, down DESIGN.md's layers; there is no cycle; a
// package outside the layout is an error (add it to DESIGN.md and here).
func TestImportsFollowTheLayout(t *testing.T) {
	pkgs := listPackages(t)
	graph := map[string][]string{}
	for _, p := range pkgs {
		r, peers, ok := rankOf(p.ImportPath)
		if !ok {
			t.Errorf("%s is not in DESIGN.md section 1's layout", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				if r == 0 && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
					t.Errorf("%s imports %s: sync/* is standard library only", p.ImportPath, imp)
				}
				continue
			}
			q := strings.TrimPrefix(imp, module+"/")
			graph[p.ImportPath] = append(graph[p.ImportPath], q)
			if strings.HasPrefix(q, "test/") {
				t.Errorf("%s imports %s: test/ is tests only", p.ImportPath, q)
				continue
			}
			qr, _, ok := rankOf(q)
			switch {
			case !ok:
				t.Errorf("%s imports %s, which is not in the layout", p.ImportPath, q)
			case qr > r:
				t.Errorf("%s imports %s: an upward import (layer %d imports layer %d)", p.ImportPath, q, r, qr)
			case qr == r && !peers:
				t.Errorf("%s imports %s: a sideways import in a layer whose packages may not import each other", p.ImportPath, q)
			}
		}
	}
	// Go refuses import cycles; this says so of the graph checked above
	// too, so that a change to the layers cannot hide one.
	state := map[string]int{} // 1: on the path, 2: done
	var path []string
	var visit func(string)
	visit = func(p string) {
		switch state[p] {
		case 1:
			t.Errorf("import cycle: %s -> %s", strings.Join(path, " -> "), p)
			return
		case 2:
			return
		}
		state[p] = 1
		path = append(path, p)
		for _, q := range graph[p] {
			visit(q)
		}
		path = path[:len(path)-1]
		state[p] = 2
	}
	keys := make([]string, 0, len(graph))
	for k := range graph {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		visit(k)
	}
}

// Only fs imports go-fuse.
func TestOnlyFSImportsGoFuse(t *testing.T) {
	seen := false
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, "github.com/hanwen/go-fuse/") {
				continue
			}
			if p.ImportPath == "fs" {
				seen = true
			} else {
				t.Errorf("%s imports %s: only fs imports go-fuse", p.ImportPath, imp)
			}
		}
	}
	if !seen {
		t.Error("fs does not import go-fuse: the check looks at the wrong tree")
	}
}

// zapBuilders are what builds a zap logger (or its core) rather than
// receiving one; zap.NewNop (a logger that writes nothing, for a nil
// Options.Logger) and zap.NewStdLog (an adapter of a received logger)
// are not.
var zapBuilders = map[string]map[string]bool{
	"go.uber.org/zap": {"New": true, "NewProduction": true, "NewDevelopment": true, "NewExample": true,
		"NewProductionConfig": true, "NewDevelopmentConfig": true, "Config": true},
	"go.uber.org/zap/zapcore": {"NewCore": true, "NewTee": true},
}

// Only cmd builds the zap logger: everyone else receives a *zap.Logger.
// The leaf primitives (sync/*) do not log at all.
func TestOnlyCmdBuildsTheLogger(t *testing.T) {
	seen := false
	for _, p := range listPackages(t) {
		r, _, _ := rankOf(p.ImportPath)
		for _, f := range p.GoFiles {
			for _, use := range zapUses(t, filepath.Join(p.Dir, f)) {
				if r == 0 {
					t.Errorf("%s/%s uses %s: the leaf primitives never log", p.ImportPath, f, use.name)
				}
				if !use.builds {
					continue
				}
				if r == 6 {
					seen = true
					continue
				}
				t.Errorf("%s/%s:%d: %s builds a logger; only cmd does", p.ImportPath, f, use.line, use.name)
			}
		}
	}
	if !seen {
		t.Error("nothing in cmd builds a logger: the check looks at the wrong tree")
	}
}

type zapUse struct {
	name   string
	line   int
	builds bool
}

// zapUses lists the references to zap's packages in the file at path.
func zapUses(t *testing.T, path string) []zapUse {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	local := map[string]string{} // local name -> import path
	for _, im := range f.Imports {
		ip, _ := strconv.Unquote(im.Path.Value)
		if _, ok := zapBuilders[ip]; !ok {
			continue
		}
		name := filepath.Base(ip)
		if im.Name != nil {
			name = im.Name.Name
		}
		local[name] = ip
	}
	var uses []zapUse
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		if ip, ok := local[id.Name]; ok {
			uses = append(uses, zapUse{name: fmt.Sprintf("%s.%s", id.Name, sel.Sel.Name),
				line: fset.Position(sel.Pos()).Line, builds: zapBuilders[ip][sel.Sel.Name]})
		}
		return true
	})
	return uses
}
