package builtin

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// docs/catalogue.md is rendered from the catalogue by renderReference;
// TestCatalogueReferenceIsCurrent fails when the file and the code differ.
// After changing the catalogue, rewrite the file with
//
//	go test ./modload/builtin -run TestCatalogueReferenceIsCurrent -update
var update = flag.Bool("update", false, "rewrite docs/catalogue.md from the catalogue")

// referenceFile is docs/catalogue.md, from this package's directory.
var referenceFile = filepath.Join("..", "..", "docs", "catalogue.md")

const regenerate = "go test ./modload/builtin -run TestCatalogueReferenceIsCurrent -update"

func TestCatalogueReferenceIsCurrent(t *testing.T) {
	got := renderReference(Modules())
	if *update {
		if err := os.WriteFile(referenceFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(referenceFile)
	if err != nil {
		t.Fatalf("%v; write it with: %s", err, regenerate)
	}
	if bytes.Equal(got, want) {
		return
	}
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			t.Fatalf("docs/catalogue.md differs from the catalogue at line %d:\n  file: %q\n  code: %q\nrewrite it with: %s",
				i+1, wl, gl, regenerate)
		}
	}
}

// groupNames names the catalogue's static group ids (catalogue.go).
var groupNames = map[uint32]string{
	gidRoot: "root", gidTTY: "tty", gidDisk: "disk", gidDialout: "dialout", gidAudio: "audio", gidVideo: "video",
}

func owner(uid, gid uint32) string {
	u := strconv.FormatUint(uint64(uid), 10)
	if uid == 0 {
		u = "root"
	}
	g, ok := groupNames[gid]
	if !ok {
		g = strconv.FormatUint(uint64(gid), 10)
	}
	return u + ":" + g
}

// run is a numbered family of nodes rendered as one row: consecutive
// nodes that differ only in a trailing number and a minor that both go
// up by one ("loop0" … "loop7", 7:0-7).
type run struct {
	first, last modload.Node
	n           int
}

// splitNumber splits a trailing decimal number off p ("sda15" -> "sda",
// 15); ok is false if p does not end in a digit.
func splitNumber(p string) (prefix string, num int, ok bool) {
	i := len(p)
	for i > 0 && p[i-1] >= '0' && p[i-1] <= '9' {
		i--
	}
	if i == len(p) {
		return p, 0, false
	}
	num, err := strconv.Atoi(p[i:])
	return p[:i], num, err == nil
}

// follows reports whether n continues the run r.
func (r run) follows(n modload.Node) bool {
	l := r.last
	if n.Type != l.Type || (n.Type != dcache.TypeChar && n.Type != dcache.TypeBlock) ||
		n.Major != l.Major || n.Minor != l.Minor+1 || n.Perm != l.Perm || n.UID != l.UID || n.GID != l.GID {
		return false
	}
	lp, ln, ok1 := splitNumber(l.Path)
	np, nn, ok2 := splitNumber(n.Path)
	return ok1 && ok2 && lp == np && nn == ln+1
}

// runs groups nodes, in order, into runs.
func runs(nodes []modload.Node) []run {
	var out []run
	for _, n := range nodes {
		if len(out) > 0 && out[len(out)-1].follows(n) {
			out[len(out)-1].last = n
			out[len(out)-1].n++
			continue
		}
		out = append(out, run{first: n, last: n, n: 1})
	}
	return out
}

func (r run) row() string {
	f, l := r.first, r.last
	name, num := "`"+f.Path+"`", ""
	if r.n > 1 {
		name = fmt.Sprintf("`%s` … `%s` (%d)", f.Path, l.Path, r.n)
	}
	switch f.Type {
	case dcache.TypeChar, dcache.TypeBlock:
		num = fmt.Sprintf("%d:%d", f.Major, f.Minor)
		if r.n > 1 {
			num = fmt.Sprintf("%d:%d-%d", f.Major, f.Minor, l.Minor)
		}
	case dcache.TypeSymlink:
		num = "→ `" + f.Target + "`"
	}
	mode := fmt.Sprintf("%04o", f.Perm)
	who := owner(f.UID, f.GID)
	if f.Type == dcache.TypeSymlink {
		mode, who = "", ""
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s |", name, f.Type, num, mode, who)
}

// moduleDirs returns the directories (the root aside) that m's nodes live
// in: a lookup of any of them loads m.
func moduleDirs(m Module) []string {
	seen := map[string]bool{}
	for _, n := range m.Nodes {
		for p := path.Dir(n.Path); p != "."; p = path.Dir(p) {
			seen[p] = true
		}
	}
	var out []string
	for p := range seen {
		out = append(out, "`"+p+"/`")
	}
	sort.Strings(out)
	return out
}

// renderReference renders docs/catalogue.md.
func renderReference(mods []Module) []byte {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	total := 0
	for _, m := range mods {
		total += len(m.Nodes)
	}
	p("# The built-in catalogue")
	p("")
	p("<!-- Generated from modload/builtin/catalogue.go by modload/builtin/reference_test.go; do not edit. -->")
	p("<!-- After changing the catalogue: %s -->", regenerate)
	p("")
	p("What the `builtin` loader (`--loader=builtin`, the default in a sandbox")
	p("without a sysfs of its own) provides: %d modules, %d nodes, with the", len(mods), total)
	p("device numbers of the kernel's `Documentation/admin-guide/devices.txt`")
	p("(ALSA's minors, which it leaves out, are the static ones of")
	p("`include/sound/minors.h`).")
	p("")
	p("- The `%s` module is registered when the daemon starts.", BaseModule)
	p("- Every other module is loaded on a lookup that misses: a lookup of any")
	p("  of its node names (`loop3` loads `loop`, which registers `loop0` …")
	p("  `loop7` and `loop-control`), or of a directory its nodes live in")
	p("  (`snd` loads `snd`). A module is loaded at most once by a loader: a")
	p("  node removed by hand stays removed.")
	p("- A name no module provides is a miss (`ENOENT`), cached negatively.")
	p("- Modes and owners are those a stock systemd-udev host shows; groups are")
	p("  given by number where Debian's base-passwd fixes it (tty 5, disk 6,")
	p("  dialout 20, audio 29, video 44), and nodes whose group is allocated at")
	p("  install time (kvm, input, render) are owned by root. `/dev/mem`,")
	p("  `/dev/kmem` and `/dev/port` are deliberately absent.")
	p("- A module lists its directories before their contents, with their mode.")
	p("")
	p("Extension modules (`modules:` in the config file, see [api.md](api.md))")
	p("are loaded the same way, beside these.")
	p("")
	p("## Modules")
	p("")
	p("| module | what | nodes | also loaded by a lookup of |")
	p("|---|---|---|---|")
	for _, m := range mods {
		how := strings.Join(moduleDirs(m), ", ")
		if m.Name == BaseModule {
			how = "(registered at start)"
		}
		p("| [`%s`](#%s) | %s | %d | %s |", m.Name, anchor(m.Name), m.Description, len(m.Nodes), how)
	}
	for _, m := range mods {
		p("")
		p("## %s", m.Name)
		p("")
		p("%s.", upperFirst(m.Description))
		p("")
		p("| path | type | number | mode | owner |")
		p("|---|---|---|---|---|")
		for _, r := range runs(m.Nodes) {
			p("%s", r.row())
		}
	}
	return b.Bytes()
}

// anchor is the heading id GitHub and most renderers give "## name".
func anchor(name string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		case c == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Every node of the catalogue is in exactly one row, in order: the runs
// of a module, expanded again, are its nodes.
func TestReferenceRowsCoverEveryNode(t *testing.T) {
	for _, m := range Modules() {
		i := 0
		for _, r := range runs(m.Nodes) {
			if r.first != m.Nodes[i] || r.last != m.Nodes[i+r.n-1] {
				t.Fatalf("module %s: run %v…%v does not match nodes %d..%d", m.Name, r.first, r.last, i, i+r.n-1)
			}
			for j := i + 1; j < i+r.n; j++ {
				prev := run{first: m.Nodes[j-1], last: m.Nodes[j-1], n: 1}
				if !prev.follows(m.Nodes[j]) {
					t.Fatalf("module %s: %v does not follow %v in one row", m.Name, m.Nodes[j], m.Nodes[j-1])
				}
			}
			i += r.n
		}
		if i != len(m.Nodes) {
			t.Fatalf("module %s: rows cover %d of %d nodes", m.Name, i, len(m.Nodes))
		}
	}
	// A family is one row; a device that breaks the numbering starts a new one.
	got := runs([]modload.Node{
		chr("a0", 1, 0, 0600, 0), chr("a1", 1, 1, 0600, 0), chr("a2", 1, 3, 0600, 0), chr("b3", 1, 4, 0600, 0),
	})
	if len(got) != 3 || got[0].n != 2 || got[1].n != 1 || got[2].n != 1 {
		t.Fatalf("runs = %+v, want a0-a1, a2, b3", got)
	}
}
