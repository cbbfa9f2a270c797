package dcache

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// exportFixture builds a namespace with one of everything an export must
// carry: devices, a symlink, a sparse regular file, a hard link, a
// renamed entry (a gap in the cookies), a removed entry, a non-default
// mode and owner, and an unlinked file still open.
func exportFixture(t *testing.T) (ns *Namespace, orphan *Node) {
	t.Helper()
	ns = New(Options{Now: newClock().Now, Generation: 4242})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := ns.Register("snd/pcmC0D0p", Spec{Type: TypeChar, Mode: 0660, Gid: 29, Major: 116, Minor: 16}, loaderCaller)
	must(err)
	_, err = ns.Register("loop0", Spec{Type: TypeBlock, Mode: 0, Major: 7, Minor: 0}, loaderCaller)
	must(err)
	root := ns.Root()
	_, err = root.Symlink("stdin", "/proc/self/fd/0", fuseCaller)
	must(err)
	f, err := root.Mknod("data", syscall.S_IFREG|0600, 0, 0, fuseCaller)
	must(err)
	if _, err := f.WriteAt([]byte("hello"), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("far"), 5*PageSize+1); err != nil {
		t.Fatal(err)
	}
	must(root.Link("data2", f, fuseCaller))
	_, err = root.Mknod("fifo", syscall.S_IFIFO|0644, 0, 0, fuseCaller)
	must(err)
	must(ns.Rename(root, "fifo", root, "pipe", 0, fuseCaller))
	_, err = root.Mknod("gone", syscall.S_IFCHR|0600, 1, 3, fuseCaller)
	must(err)
	must(root.Unlink("gone", fuseCaller))
	orphan, err = root.Mknod("open", syscall.S_IFREG|0644, 0, 0, fuseCaller)
	must(err)
	if _, err := orphan.WriteAt([]byte("still here"), 0); err != nil {
		t.Fatal(err)
	}
	orphan.Open()
	must(root.Unlink("open", fuseCaller))
	snd, err := root.Lookup("snd")
	must(err)
	if _, err := snd.SetAttr(SetAttrIn{Valid: SetMode | SetUid, Mode: 0700, Uid: 5}, fuseCaller); err != nil {
		t.Fatal(err)
	}
	return ns, orphan
}

// dump describes a namespace node by node: what Import must reproduce.
func dump(t *testing.T, ns *Namespace) string {
	t.Helper()
	var b strings.Builder
	var walk func(n *Node, path string)
	walk = func(n *Node, path string) {
		a := n.Attr()
		fmt.Fprintf(&b, "%s %+v", path, a)
		if a.Type == TypeSymlink {
			tg, _ := n.Readlink()
			fmt.Fprintf(&b, " -> %s", tg)
		}
		if a.Type == TypeRegular {
			buf := make([]byte, a.Size+1)
			k, _ := n.ReadAt(buf, 0)
			fmt.Fprintf(&b, " %q", buf[:k])
		}
		b.WriteString("\n")
		if a.Type != TypeDir {
			return
		}
		ents, err := n.ReadDir(0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			fmt.Fprintf(&b, "  entry %s ino %d %v cookie %d\n", e.Name, e.Ino, e.Type, e.Cookie)
			if e.Name == "." || e.Name == ".." {
				continue
			}
			c, err := n.Lookup(e.Name)
			if err != nil {
				t.Fatal(err)
			}
			walk(c, path+"/"+e.Name)
		}
	}
	walk(ns.Root(), "")
	fmt.Fprintf(&b, "last %d statfs %+v types %v\n", ns.LastIno(), ns.Statfs(), ns.NodesByType())
	return b.String()
}

func TestExportImportKeepsInodesGenerationCookiesAndContent(t *testing.T) {
	ns, orphan := exportFixture(t)
	ex := ns.Export([]*Node{orphan, ns.Root()})
	data, err := json.Marshal(ex)
	if err != nil {
		t.Fatal(err)
	}
	var back Export
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	ns2, err := Import(Options{Now: newClock().Now}, &back)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, ns2), dump(t, ns); got != want {
		t.Fatalf("imported namespace differs.\n got:\n%s\nwant:\n%s", got, want)
	}
	if ns2.Root().Gen() != 4242 {
		t.Errorf("generation %d, want 4242", ns2.Root().Gen())
	}

	// The unlinked open file came along: same content, and its Close
	// balances the Open made before the export.
	i := slices.IndexFunc(back.Nodes, func(en ExportNode) bool { return en.Ino == orphan.Ino() })
	if i < 0 {
		t.Fatal("the open unlinked file is not in the export")
	}
	if back.Nodes[i].Opens != 1 {
		t.Errorf("opens %d, want 1", back.Nodes[i].Opens)
	}

	// New nodes get numbers above every exported one; a cookie continues
	// where the exported directory left off.
	n, err := ns2.Root().Mknod("new", syscall.S_IFCHR|0600, 1, 3, fuseCaller)
	if err != nil {
		t.Fatal(err)
	}
	if n.Ino() != ns.LastIno()+1 {
		t.Errorf("new node ino %d, want %d", n.Ino(), ns.LastIno()+1)
	}
	ents, _ := ns2.Root().ReadDir(0, 1000)
	last := ents[len(ents)-1]
	if last.Name != "new" || last.Cookie != ns.Root().dir.nextCookie+1 {
		t.Errorf("last entry %+v, want new at cookie %d", last, ns.Root().dir.nextCookie+1)
	}
	// Registration still works under the imported tree.
	if _, err := ns2.Register("snd/controlC0", Spec{Type: TypeChar, Mode: 0660, Major: 116, Minor: 0}, loaderCaller); err != nil {
		t.Fatal(err)
	}
}

func TestImportRefusesABadExport(t *testing.T) {
	ns, orphan := exportFixture(t)
	good := func() *Export {
		b, _ := json.Marshal(ns.Export([]*Node{orphan}))
		var ex Export
		if err := json.Unmarshal(b, &ex); err != nil {
			t.Fatal(err)
		}
		return &ex
	}
	find := func(ex *Export, name string) (dir *ExportNode, entry *ExportEntry) {
		for i := range ex.Nodes {
			for j := range ex.Nodes[i].Entries {
				if ex.Nodes[i].Entries[j].Name == name {
					return &ex.Nodes[i], &ex.Nodes[i].Entries[j]
				}
			}
		}
		t.Fatalf("no entry %q", name)
		return nil, nil
	}
	node := func(ex *Export, ino uint64) *ExportNode {
		for i := range ex.Nodes {
			if ex.Nodes[i].Ino == ino {
				return &ex.Nodes[i]
			}
		}
		t.Fatalf("no node %d", ino)
		return nil
	}
	for _, tc := range []struct {
		name   string
		break_ func(ex *Export)
		want   string
	}{
		{"empty", func(ex *Export) { ex.Nodes = nil }, "no nodes"},
		{"generation 0", func(ex *Export) { ex.Generation = 0 }, "generation 0"},
		{"root not first", func(ex *Export) { ex.Nodes[0], ex.Nodes[1] = ex.Nodes[1], ex.Nodes[0] }, "want the root"},
		{"inode above the counter", func(ex *Export) { _, e := find(ex, "loop0"); node(ex, e.Ino).Ino = ex.LastIno + 7 }, "not in (0"},
		{"entry to a missing node", func(ex *Export) {
			_, e := find(ex, "loop0")
			ex.Nodes = slices.DeleteFunc(ex.Nodes, func(en ExportNode) bool { return en.Ino == e.Ino })
		}, "not in the export"},
		{"inode twice", func(ex *Export) { ex.Nodes = append(ex.Nodes, ex.Nodes[len(ex.Nodes)-1]) }, "appears twice"},
		{"name twice", func(ex *Export) { _, e := find(ex, "loop0"); e.Name = "data" }, "appears twice"},
		{"bad name", func(ex *Export) { _, e := find(ex, "loop0"); e.Name = "a/b" }, "invalid argument"},
		{"cookie order", func(ex *Export) { d, e := find(ex, "loop0"); e.Cookie = d.NextCookie + 1 }, "cookie"},
		{"directory with two names", func(ex *Export) {
			d, e := find(ex, "snd")
			d.NextCookie++
			d.Entries = append(d.Entries, ExportEntry{Name: "snd2", Ino: e.Ino, Cookie: d.NextCookie})
		}, "two names"},
		{"cycle", func(ex *Export) {
			_, e := find(ex, "snd")
			snd := node(ex, e.Ino)
			ex.Nodes[0].Entries = slices.DeleteFunc(ex.Nodes[0].Entries, func(x ExportEntry) bool { return x.Name == "snd" })
			snd.NextCookie++
			snd.Entries = append(snd.Entries, ExportEntry{Name: "self", Ino: snd.Ino, Cookie: snd.NextCookie})
		}, "does not hang from the root"},
		{"root named", func(ex *Export) { _, e := find(ex, "loop0"); e.Ino = 1 }, "names the root"},
		{"bad type", func(ex *Export) { _, e := find(ex, "loop0"); node(ex, e.Ino).Type = 9 }, "invalid type"},
		{"mode type bits", func(ex *Export) { _, e := find(ex, "loop0"); node(ex, e.Ino).Mode = syscall.S_IFBLK | 0600 }, "beyond the permission bits"},
		{"entries on a device", func(ex *Export) {
			_, e := find(ex, "loop0")
			node(ex, e.Ino).Entries = []ExportEntry{{Name: "x", Ino: 1, Cookie: 3}}
		}, "entries on a block"},
		{"content past size", func(ex *Export) {
			_, e := find(ex, "data")
			node(ex, e.Ino).Size = 2
		}, "past the size"},
		{"too many nodes", func(ex *Export) {}, "more than the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := good()
			tc.break_(ex)
			opts := Options{}
			if tc.name == "too many nodes" {
				opts.MaxNodes = 3
			}
			ns2, err := Import(opts, ex)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Import = %v, %v; want an error with %q", ns2, err, tc.want)
			}
		})
	}
}

func TestRegisterHonoursAGivenInode(t *testing.T) {
	ns := New(Options{})
	n, err := ns.Register("a/b", Spec{Type: TypeChar, Mode: 0600, Major: 1, Minor: 3, Ino: 100}, loaderCaller)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ns.Resolve("a")
	if n.Ino() != 100 || a.Ino() == 100 || ns.LastIno() != 100 {
		t.Fatalf("node %d, parent %d, last %d; want the node 100 only, counter 100", n.Ino(), a.Ino(), ns.LastIno())
	}
	m, err := ns.Register("c", Spec{Type: TypeChar, Mode: 0600, Major: 1, Minor: 5}, loaderCaller)
	if err != nil || m.Ino() != 101 {
		t.Fatalf("next registration: ino %d, %v; want 101", m.Ino(), err)
	}
	// A given number below the counter leaves the counter alone.
	if k, err := ns.Register("d", Spec{Type: TypeFifo, Mode: 0600, Ino: 50}, loaderCaller); err != nil || k.Ino() != 50 || ns.LastIno() != 101 {
		t.Fatalf("ino 50: %v, %v, last %d", k, err, ns.LastIno())
	}
	if _, err := ns.Register("e", Spec{Type: TypeFifo, Mode: 0600, Ino: 1}, loaderCaller); err == nil {
		t.Fatal("Register with the root's inode number succeeded")
	}
	ns.RaiseLastIno(500)
	ns.RaiseLastIno(400)
	if ns.LastIno() != 500 {
		t.Fatalf("RaiseLastIno: last %d, want 500", ns.LastIno())
	}
}
