package dcache

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/btree"
)

// Export is a whole namespace with its inode numbers: what a successor
// process needs to serve the same tree under the same node ids (the FUSE
// kernel keeps referring to the inode numbers it was given, DESIGN.md
// section 9). Import makes a namespace of it. Negative entries and
// in-flight lookups are not part of it: they are caches and waits, which
// the successor builds again.
type Export struct {
	// Generation is the namespace's generation (Options.Generation):
	// the successor keeps it, so that (ino, gen) pairs the kernel holds
	// stay valid.
	Generation uint64 `json:"generation"`
	// LastIno is the inode counter: the successor hands out numbers
	// above it, never one the kernel may hold.
	LastIno uint64 `json:"last_ino"`
	// Nodes are the root first, then every other node once: those with
	// names, and the unlinked ones given to Export (Nlink 0).
	Nodes []ExportNode `json:"nodes"`
}

// ExportNode is one node of an Export.
type ExportNode struct {
	Ino   uint64    `json:"ino"`
	Type  Type      `json:"type"`
	Mode  uint32    `json:"mode"` // permission bits
	Uid   uint32    `json:"uid"`
	Gid   uint32    `json:"gid"`
	Major uint32    `json:"major,omitempty"`
	Minor uint32    `json:"minor,omitempty"`
	Atime time.Time `json:"atime"`
	Mtime time.Time `json:"mtime"`
	Ctime time.Time `json:"ctime"`
	// Target is a symlink's target.
	Target string `json:"target,omitempty"`
	// Size, Pages and Opens are a regular file's length, stored pages
	// (holes are absent) and open file descriptions (Node.Open).
	Size  uint64       `json:"size,omitempty"`
	Pages []ExportPage `json:"pages,omitempty"`
	Opens int32        `json:"opens,omitempty"`
	// Entries are a directory's names, in readdir (cookie) order, and
	// NextCookie its last cookie handed out, so that a readdir that
	// began before the export goes on where it was.
	Entries    []ExportEntry `json:"entries,omitempty"`
	NextCookie uint64        `json:"next_cookie,omitempty"`
}

// ExportPage is one stored page of a regular file: the bytes at
// Index*PageSize, at most PageSize of them.
type ExportPage struct {
	Index uint64 `json:"index"`
	Data  []byte `json:"data"`
}

// ExportEntry is one name in a directory.
type ExportEntry struct {
	Name   string `json:"name"`
	Ino    uint64 `json:"ino"`
	Cookie uint64 `json:"cookie"`
}

// Export returns the namespace with every node reachable from the root,
// and the nodes of unlinked that have no name any more (nodes the caller
// knows to be still in use, such as ids the kernel holds; others are
// ignored). Each directory is read under its mu, so the export is the
// namespace as it is when no change runs concurrently; the caller stops
// the changes it cares about first.
func (ns *Namespace) Export(unlinked []*Node) *Export {
	ex := &Export{Generation: ns.gen}
	seen := make(map[uint64]bool)
	queue := []*Node{ns.root}
	seen[ns.root.ino] = true
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		en, kids := n.export()
		ex.Nodes = append(ex.Nodes, en)
		for _, k := range kids {
			if !seen[k.ino] {
				seen[k.ino] = true
				queue = append(queue, k)
			}
		}
	}
	for _, n := range unlinked {
		if n == nil || n.ns != ns || seen[n.ino] || n.dir != nil {
			continue
		}
		n.attrMu.Lock()
		gone := n.unlinked
		n.attrMu.Unlock()
		if !gone {
			continue // linked after all: a name the walk did not see is a concurrent change
		}
		seen[n.ino] = true
		en, _ := n.export()
		ex.Nodes = append(ex.Nodes, en)
	}
	// Read last: every inode number in the export was handed out by
	// then, so none is above it.
	ex.LastIno = ns.inos.Load()
	return ex
}

// export returns n's part of an export, and a directory's children.
func (n *Node) export() (ExportNode, []*Node) {
	var kids []*Node
	var en ExportNode
	if ds := n.dir; ds != nil {
		ds.mu.Lock()
		en.NextCookie = ds.nextCookie
		for _, de := range ds.order {
			if de.removed {
				continue
			}
			en.Entries = append(en.Entries, ExportEntry{Name: de.name, Ino: de.node.ino, Cookie: de.cookie})
			kids = append(kids, de.node)
		}
		ds.mu.Unlock()
	}
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	en.Ino, en.Type, en.Mode, en.Uid, en.Gid = n.ino, n.typ, n.mode, n.uid, n.gid
	en.Major, en.Minor, en.Target = n.major, n.minor, n.symlink
	en.Atime, en.Mtime, en.Ctime = n.timeLocked(atime), n.timeLocked(mtime), n.timeLocked(ctime)
	if f := n.file; f != nil {
		en.Size, en.Opens = f.size, f.opens
		if f.pages != nil {
			f.pages.Ascend(func(p *page) bool {
				en.Pages = append(en.Pages, ExportPage{Index: p.idx, Data: slices.Clone(p.b)})
				return true
			})
		}
	}
	return en, kids
}

// Import returns a namespace holding what ex holds, with its inode
// numbers, generation (which replaces opts.Generation) and inode counter,
// configured by opts as New would be. A bad export (a dangling or
// repeated inode number, a directory with two names or none, an invalid
// name, a limit of opts exceeded, ...) is an error naming the first
// problem, and nothing is made. No event is raised.
func Import(opts Options, ex *Export) (*Namespace, error) {
	if ex == nil || len(ex.Nodes) == 0 {
		return nil, errors.New("dcache: import: no nodes")
	}
	if ex.Generation == 0 {
		return nil, errors.New("dcache: import: generation 0")
	}
	opts.Generation = ex.Generation
	ns := New(opts)
	if r := ex.Nodes[0]; r.Ino != 1 || r.Type != TypeDir {
		return nil, fmt.Errorf("dcache: import: the first node is inode %d of type %v, want the root directory, inode 1", r.Ino, r.Type)
	}

	byIno := make(map[uint64]*Node, len(ex.Nodes))
	for i := range ex.Nodes {
		en := &ex.Nodes[i]
		if err := en.check(ex.LastIno, ns.opts.MaxFileSize); err != nil {
			return nil, err
		}
		if byIno[en.Ino] != nil {
			return nil, fmt.Errorf("dcache: import: inode %d appears twice", en.Ino)
		}
		n := ns.root
		if i > 0 {
			n = &Node{ns: ns, ino: en.Ino, typ: en.Type}
			if en.Type == TypeDir {
				n.dir = &dirState{children: make(map[string]*dentry)}
			}
		}
		n.mode, n.uid, n.gid = en.Mode&PermMask, en.Uid, en.Gid
		n.major, n.minor, n.symlink = en.Major, en.Minor, en.Target
		n.setTimeLocked(atime, en.Atime)
		n.setTimeLocked(mtime, en.Mtime)
		n.setTimeLocked(ctime, en.Ctime)
		if en.Type == TypeRegular && (en.Size > 0 || len(en.Pages) > 0 || en.Opens > 0) {
			f := &fileContent{size: en.Size, opens: en.Opens}
			if len(en.Pages) > 0 {
				f.pages = btree.NewG(btreeDegree, pageLess)
				for _, p := range en.Pages {
					b := make([]byte, len(p.Data)) // len == cap, as file.go keeps pages
					copy(b, p.Data)
					f.pages.ReplaceOrInsert(&page{idx: p.Index, b: b})
					f.stored += int64(len(p.Data))
				}
			}
			n.file = f
		}
		n.nlink = 0
		byIno[en.Ino] = n
	}

	// Link the entries; each directory but the root has one name.
	named := make(map[uint64]bool)
	for i := range ex.Nodes {
		en := &ex.Nodes[i]
		d := byIno[en.Ino]
		if d.dir == nil {
			continue
		}
		d.dir.nextCookie = max(en.NextCookie, 2)
		last := uint64(2)
		for _, e := range en.Entries {
			if err := CheckName(e.Name); err != nil {
				return nil, fmt.Errorf("dcache: import: directory %d: %w", en.Ino, err)
			}
			k := byIno[e.Ino]
			switch {
			case k == nil:
				return nil, fmt.Errorf("dcache: import: directory %d: %q names inode %d, which is not in the export", en.Ino, e.Name, e.Ino)
			case d.dir.children[e.Name] != nil:
				return nil, fmt.Errorf("dcache: import: directory %d: %q appears twice", en.Ino, e.Name)
			case e.Cookie <= last || e.Cookie > d.dir.nextCookie:
				return nil, fmt.Errorf("dcache: import: directory %d: %q has cookie %d, not in (%d, %d]", en.Ino, e.Name, e.Cookie, last, d.dir.nextCookie)
			case k == ns.root:
				return nil, fmt.Errorf("dcache: import: directory %d: %q names the root", en.Ino, e.Name)
			case k.dir != nil && named[k.ino]:
				return nil, fmt.Errorf("dcache: import: directory %d has two names", k.ino)
			}
			last = e.Cookie
			named[k.ino] = true
			de := &dentry{name: e.Name, node: k, parent: d, cookie: e.Cookie}
			d.dir.children[e.Name] = de
			d.dir.order = append(d.dir.order, de)
			k.link.Store(de)
			if k.dir != nil {
				d.nlink++
			} else {
				k.nlink++
			}
		}
	}

	// Every directory must hang from the root (no cycle, none left out);
	// depths are bounded as Register bounds them.
	type item struct {
		n     *Node
		depth int
	}
	reached := map[uint64]bool{1: true}
	queue := []item{{ns.root, 0}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		for _, de := range it.n.dir.order {
			if it.depth+1 > ns.maxDepth {
				return nil, fmt.Errorf("dcache: import: %q is deeper than %d components", de.node.Path(), ns.maxDepth)
			}
			if de.node.dir != nil && !reached[de.node.ino] {
				reached[de.node.ino] = true
				queue = append(queue, item{de.node, it.depth + 1})
			}
		}
	}

	var linked, bytes int64 = 1, 0
	var byType [TypeRegular + 1]int64
	byType[TypeDir] = 1
	for i := range ex.Nodes[1:] {
		n := byIno[ex.Nodes[i+1].Ino]
		if n.dir != nil {
			if !reached[n.ino] {
				return nil, fmt.Errorf("dcache: import: directory %d does not hang from the root", n.ino)
			}
			n.nlink += 2
		}
		if n.nlink == 0 {
			n.unlinked = true
			if n.file == nil || n.file.opens == 0 {
				continue // kept for the kernel's ids; its content counts nowhere
			}
		} else {
			linked++
			byType[n.typ]++
		}
		if n.file != nil {
			bytes += n.file.stored
		}
	}
	ns.root.nlink += 2
	if linked > ns.opts.MaxNodes {
		return nil, fmt.Errorf("dcache: import: %d nodes, more than the limit of %d", linked, ns.opts.MaxNodes)
	}
	if bytes > ns.opts.MaxBytes {
		return nil, fmt.Errorf("dcache: import: %d bytes of file content, more than the limit of %d", bytes, ns.opts.MaxBytes)
	}
	ns.nodes.Store(linked)
	ns.bytes.Store(bytes)
	for t := range byType {
		ns.byType[t].Store(byType[t])
	}
	ns.inos.Store(ex.LastIno)
	ns.imported = byIno
	return ns, nil
}

// ImportedNode returns the node Import made for inode number ino, linked
// or not, or nil if Import made none (or the namespace was not imported).
// A successor's FUSE server finds the nodes the kernel holds by it,
// including unlinked ones no name leads to.
func (ns *Namespace) ImportedNode(ino uint64) *Node {
	return ns.imported[ino]
}

// check validates one node of an export on its own.
func (en *ExportNode) check(lastIno uint64, maxSize int64) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dcache: import: inode %d: "+format, append([]any{en.Ino}, args...)...)
	}
	switch {
	case en.Ino == 0 || en.Ino > lastIno:
		return bad("not in (0, %d], the inode counter", lastIno)
	case en.Type < TypeDir || en.Type > TypeRegular:
		return bad("invalid type %d", en.Type)
	case en.Mode&^PermMask != 0:
		return bad("mode %#o has bits beyond the permission bits", en.Mode)
	case en.Type != TypeSymlink && en.Target != "":
		return bad("a target on a %v", en.Type)
	case en.Type != TypeDir && (len(en.Entries) > 0 || en.NextCookie != 0):
		return bad("entries on a %v", en.Type)
	case en.Type != TypeRegular && (en.Size != 0 || len(en.Pages) > 0 || en.Opens != 0):
		return bad("content on a %v", en.Type)
	case !en.Type.Device() && (en.Major != 0 || en.Minor != 0):
		return bad("a device number on a %v", en.Type)
	case en.Size > uint64(maxSize):
		return bad("size %d beyond the limit of %d", en.Size, maxSize)
	case en.Opens < 0:
		return bad("%d opens", en.Opens)
	}
	var next uint64
	for _, p := range en.Pages {
		switch {
		case p.Index < next:
			return bad("pages out of order at index %d", p.Index)
		case len(p.Data) == 0 || len(p.Data) > PageSize:
			return bad("page %d of %d bytes", p.Index, len(p.Data))
		case p.Index*PageSize+uint64(len(p.Data)) > en.Size && !zeroPast(p.Data, en.Size-min(en.Size, p.Index*PageSize)):
			return bad("page %d holds data past the size %d", p.Index, en.Size)
		}
		next = p.Index + 1
	}
	return nil
}

// zeroPast reports whether b holds only zeros from off on.
func zeroPast(b []byte, off uint64) bool {
	for _, c := range b[min(off, uint64(len(b))):] {
		if c != 0 {
			return false
		}
	}
	return true
}
