package dcache

import (
	"sort"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/sync/rwsem"
)

// maxNegative bounds one directory's negative entries; past it, expired
// ones are swept and, if still full, a miss is simply not cached.
const maxNegative = 4096

func (n *Node) mustDir(op string) *dirState {
	if n.dir == nil {
		panic("dcache: " + op + " of a non-directory")
	}
	return n.dir
}

// Sem returns the directory's i_sem, for package lookup (see the package
// doc). It panics if n is not a directory.
func (n *Node) Sem() *rwsem.Sem { return &n.mustDir("Sem").sem }

// LockMu locks the directory's mu, for the ...Locked methods. It panics if
// n is not a directory. Lock order: after sem, before attrMu (see the
// package doc).
func (n *Node) LockMu() { n.mustDir("LockMu").mu.Lock() }

// UnlockMu unlocks the directory's mu. Events queued under it are
// delivered by the next Namespace.Flush, which the caller makes once it
// holds no dcache mutex.
func (n *Node) UnlockMu() { n.mustDir("UnlockMu").mu.Unlock() }

// Entry is what a directory holds for one name, as EntryLocked saw it.
type Entry struct {
	Node     *Node // the child, or nil
	Negative bool  // no child, and a fresh negative entry caches its absence
	// DirRemoved: no child, no fresh negative entry, and the directory
	// itself was removed from the tree (rmdir, unregister), so nothing
	// can be added to it.
	DirRemoved bool
	// Inflight is the record published for the name (PublishLocked), or
	// nil; looked up only when there is no child and no fresh negative
	// entry.
	Inflight any
}

// EntryLocked returns what directory n holds for name: the child, else
// whether a fresh negative entry caches its absence, else whether n was
// removed and the in-flight record published for the name. An expired
// negative entry is dropped on the way (queueing an EXPIRE event).
// Preconditions: n's mu held.
func (n *Node) EntryLocked(name string) Entry {
	child, negative := n.ChildLocked(name)
	if child != nil || negative {
		return Entry{Node: child, Negative: negative}
	}
	return Entry{DirRemoved: n.dir.dead, Inflight: n.dir.inflight[name]}
}

// ChildLocked returns the node named name in directory n, or nil and
// whether a fresh negative entry caches its absence. An expired negative
// entry is dropped (queueing an EXPIRE event). Preconditions: n's mu held.
func (n *Node) ChildLocked(name string) (child *Node, negative bool) {
	ds := n.dir
	if de := ds.children[name]; de != nil {
		return de.node, false
	}
	if exp, ok := ds.negative[name]; ok {
		if n.ns.now().Before(exp) {
			return nil, true
		}
		n.expireLocked(name)
	}
	return nil, false
}

// expireLocked drops a negative entry. Preconditions: n's mu held.
func (n *Node) expireLocked(name string) {
	delete(n.dir.negative, name)
	n.ns.events.push(Event{Kind: KindExpire, Path: n.childPath(name),
		Parent: n.ino, Name: name, Caller: Caller{Origin: OriginBuiltin}})
}

// AddNegativeLocked caches the absence of name for Options.NegativeTTL
// and returns nil; if the name exists it caches nothing and returns the
// child. It caches nothing either if negative caching is off, n was
// removed, or n's negative entries are full of unexpired ones. Registering
// or creating the name drops the entry. Preconditions: n's mu held.
func (n *Node) AddNegativeLocked(name string) (child *Node) {
	ds := n.dir
	if de := ds.children[name]; de != nil {
		return de.node
	}
	ttl := time.Duration(n.ns.negTTL.Load())
	if ttl <= 0 || ds.dead {
		return nil
	}
	now := n.ns.now()
	if ds.negative == nil {
		ds.negative = make(map[string]time.Time)
	}
	if len(ds.negative) >= maxNegative {
		if now.Before(ds.negNext) {
			return nil // full, and a sweep would drop nothing yet
		}
		n.sweepLocked(now)
		if len(ds.negative) >= maxNegative {
			return nil
		}
	}
	exp := now.Add(ttl)
	ds.negative[name] = exp
	if exp.Before(ds.negNext) {
		ds.negNext = exp // a TTL made shorter by a reload
	}
	return nil
}

// sweepLocked drops expired negative entries and returns how many.
// Preconditions: n's mu held.
func (n *Node) sweepLocked(now time.Time) int {
	dropped := 0
	n.dir.negSweeps++
	var next time.Time // the earliest expiry of what is kept
	for name, exp := range n.dir.negative {
		if !now.Before(exp) {
			n.expireLocked(name)
			dropped++
		} else if next.IsZero() || exp.Before(next) {
			next = exp
		}
	}
	n.dir.negNext = next
	return dropped
}

// ExpireNegatives drops every expired negative entry in the tree, queueing
// an EXPIRE event for each, and returns how many. Expired entries are also
// dropped lazily when a lookup meets them; a daemon may call this
// periodically so that the kernel hears of expiries nobody looked at.
func (ns *Namespace) ExpireNegatives() int {
	dropped := 0
	stack := []*Node{ns.root}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d.dir.mu.Lock()
		dropped += d.sweepLocked(ns.now())
		for _, de := range d.dir.children {
			if de.node.dir != nil {
				stack = append(stack, de.node)
			}
		}
		d.dir.mu.Unlock()
	}
	ns.events.flush()
	return dropped
}

// InflightLocked returns the in-flight record published for name, or nil.
// Preconditions: n's mu held.
func (n *Node) InflightLocked(name string) any { return n.dir.inflight[name] }

// PublishLocked publishes rec as the in-flight record for name, for
// package lookup's miss protocol (step 2); dcache never looks inside it.
// It panics if the slot is taken. Preconditions: n's mu held.
func (n *Node) PublishLocked(name string, rec any) {
	ds := n.dir
	if ds.inflight == nil {
		ds.inflight = make(map[string]any)
	}
	if ds.inflight[name] != nil {
		panic("dcache: in-flight slot for " + name + " already taken")
	}
	ds.inflight[name] = rec
}

// UnpublishLocked unpublishes rec (the miss protocol's step 4). It panics
// if rec is not the record published for name. Preconditions: n's mu
// held.
func (n *Node) UnpublishLocked(name string, rec any) {
	if n.dir.inflight[name] != rec {
		panic("dcache: clearing an in-flight record that is not published")
	}
	delete(n.dir.inflight, name)
}

// InflightLenLocked returns the number of published records in n.
// Preconditions: n's mu held.
func (n *Node) InflightLenLocked() int { return len(n.dir.inflight) }

// depth returns the number of components of n's path (0 for the root).
func (n *Node) depth() int {
	d := 0
	for m := n; m != n.ns.root; d++ {
		l := m.link.Load()
		if l == nil || d > n.ns.maxDepth {
			break
		}
		m = l.parent
	}
	return d
}

// height returns 1 + the depth of the deepest directory below dir.
// Preconditions: renameMu held (it takes the subtree's mus one at a time).
func (dir *Node) height() int {
	type item struct {
		n *Node
		h int
	}
	max := 1
	stack := []item{{dir, 1}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if it.h > max {
			max = it.h
		}
		if it.n.dir == nil || it.h > dir.ns.maxDepth {
			continue
		}
		it.n.dir.mu.Lock()
		for _, de := range it.n.dir.children {
			stack = append(stack, item{de.node, it.h + 1})
		}
		it.n.dir.mu.Unlock()
	}
	return max
}

// isAncestorOrSelf reports whether a is d or one of d's ancestors.
// Preconditions: renameMu held, so that directories' parents are stable.
func isAncestorOrSelf(a, d *Node) bool {
	for m := d; m != nil; {
		if m == a {
			return true
		}
		if m == m.ns.root {
			return false
		}
		l := m.link.Load()
		if l == nil {
			return false
		}
		m = l.parent
	}
	return false
}

// insertLocked links n under name with a fresh cookie and drops a negative
// entry for name. Preconditions: d's mu held; d not dead; name free; no
// attrMu held.
func (d *Node) insertLocked(name string, n *Node, now time.Time) {
	ds := d.dir
	ds.nextCookie++
	de := &dentry{name: name, node: n, parent: d, cookie: ds.nextCookie}
	ds.children[name] = de
	ds.order = append(ds.order, de)
	delete(ds.negative, name)
	n.link.Store(de)
	d.attrMu.Lock()
	if n.dir != nil {
		d.nlink++
	}
	d.setTimeLocked(mtime, now)
	d.setTimeLocked(ctime, now)
	d.attrMu.Unlock()
}

// removeLocked unlinks the entry de. The node's own link count is the
// caller's (dropLink). Preconditions: d's mu held; de is d's entry;
// no attrMu held.
func (d *Node) removeLocked(de *dentry, now time.Time) {
	ds := d.dir
	delete(ds.children, de.name)
	de.removed = true
	ds.removed++
	if ds.removed > 32 && ds.removed*2 > len(ds.order) {
		kept := make([]*dentry, 0, len(ds.children)+8)
		for _, e := range ds.order {
			if !e.removed {
				kept = append(kept, e)
			}
		}
		ds.order, ds.removed = kept, 0
	}
	d.attrMu.Lock()
	if de.node.dir != nil && d.nlink > 2 {
		d.nlink--
	}
	d.setTimeLocked(mtime, now)
	d.setTimeLocked(ctime, now)
	d.attrMu.Unlock()
}

// createLocked makes a new node named name in d, with inode number ino if
// not zero (Spec.Ino), and queues a kind event.
// Preconditions: d's mu held; name valid; no attrMu held.
func (d *Node) createLocked(name string, ino uint64, t Type, mode, uid, gid, major, minor uint32,
	target string, kind Kind, c Caller, now time.Time, times ...time.Time) (*Node, error) {
	ds := d.dir
	if ds.dead {
		return nil, syscall.ENOENT
	}
	if ds.children[name] != nil {
		return nil, syscall.EEXIST
	}
	if d.depth()+1 > d.ns.maxDepth {
		return nil, syscall.ENOSPC
	}
	if !d.ns.reserveNode() {
		return nil, syscall.ENOSPC
	}
	if kind == KindCreate { // set-gid directories pass their group on, as tmpfs
		d.attrMu.Lock()
		if d.mode&syscall.S_ISGID != 0 {
			gid = d.gid
			if t == TypeDir {
				mode |= syscall.S_ISGID
			}
		}
		d.attrMu.Unlock()
	}
	n := d.ns.newNodeIno(ino, t, mode, uid, gid, now)
	n.major, n.minor = major, minor
	if t == TypeSymlink {
		n.symlink = target // immutable: see Node.symlink
	}
	if len(times) == 2 { // Spec.Atime, Spec.Mtime of a registration
		if !times[0].IsZero() {
			n.setTimeLocked(atime, times[0])
		}
		if !times[1].IsZero() {
			n.setTimeLocked(mtime, times[1])
		}
	}
	d.ns.byType[t].Add(1)
	d.insertLocked(name, n, now)
	n.attrMu.Lock()
	ev := n.eventLocked(kind, c)
	n.attrMu.Unlock()
	d.ns.events.push(ev)
	return n, nil
}

// dirOp checks d and name for a directory operation.
func (d *Node) dirOp(op, name string) error {
	if d.dir == nil {
		return pathErr(op, d.Path(), syscall.ENOTDIR)
	}
	if err := CheckName(name); err != nil {
		return pathErr(op, name, errnoOf(err))
	}
	return nil
}

// Lookup returns the node named name in directory d, from the namespace
// as it is: no loader, no negative entries. ENOENT if there is none.
func (d *Node) Lookup(name string) (*Node, error) {
	if err := d.dirOp("lookup", name); err != nil {
		return nil, err
	}
	d.dir.mu.Lock()
	de := d.dir.children[name]
	d.dir.mu.Unlock()
	if de == nil {
		return nil, pathErr("lookup", d.childPath(name), syscall.ENOENT)
	}
	return de.node, nil
}

func (d *Node) create(op, name string, t Type, mode, major, minor uint32, target string, c Caller) (*Node, error) {
	if err := d.dirOp(op, name); err != nil {
		return nil, err
	}
	now := d.ns.now()
	d.dir.mu.Lock()
	n, err := d.createLocked(name, 0, t, mode, c.Uid, c.Gid, major, minor, target, KindCreate, c, now)
	d.dir.mu.Unlock()
	d.ns.events.flush()
	if err != nil {
		return nil, pathErr(op, d.childPath(name), err.(syscall.Errno))
	}
	return n, nil
}

// Mknod makes a device, fifo, socket or regular file named name in d,
// owned by the caller, with the type from mode's S_IFMT bits (none: a
// regular file), as mknod(2): EPERM for S_IFDIR, EINVAL for S_IFLNK or an
// unknown type. It queues a CREATE event.
func (d *Node) Mknod(name string, mode, major, minor uint32, c Caller) (*Node, error) {
	t, ok := TypeOfMode(mode)
	switch {
	case !ok || t == TypeSymlink:
		return nil, pathErr("mknod", name, syscall.EINVAL)
	case t == TypeDir:
		return nil, pathErr("mknod", name, syscall.EPERM)
	}
	if t != TypeChar && t != TypeBlock {
		major, minor = 0, 0
	}
	return d.create("mknod", name, t, mode, major, minor, "", c)
}

// Mkdir makes a directory named name in d, owned by the caller.
func (d *Node) Mkdir(name string, mode uint32, c Caller) (*Node, error) {
	return d.create("mkdir", name, TypeDir, mode, 0, 0, "", c)
}

// Symlink makes a symlink named name in d pointing at target (mode 0777).
func (d *Node) Symlink(name, target string, c Caller) (*Node, error) {
	switch {
	case target == "":
		return nil, pathErr("symlink", name, syscall.ENOENT)
	case len(target) >= 4096:
		return nil, pathErr("symlink", name, syscall.ENAMETOOLONG)
	}
	return d.create("symlink", name, TypeSymlink, 0777, 0, 0, target, c)
}

// Link gives target a new name in d, as link(2): EEXIST if the name is
// taken, EPERM for a directory, ENOENT for an unlinked target, EXDEV across
// namespaces. It queues a CREATE event.
func (d *Node) Link(name string, target *Node, c Caller) error {
	err := d.linkTo(name, target, c)
	d.ns.events.flush()
	return err
}

func (d *Node) linkTo(name string, target *Node, c Caller) error {
	if err := d.dirOp("link", name); err != nil {
		return err
	}
	if target.ns != d.ns {
		return pathErr("link", name, syscall.EXDEV)
	}
	now := d.ns.now()
	ds := d.dir
	ds.mu.Lock()
	defer ds.mu.Unlock()
	switch {
	case ds.dead:
		return pathErr("link", d.childPath(name), syscall.ENOENT)
	case ds.children[name] != nil:
		return pathErr("link", d.childPath(name), syscall.EEXIST)
	case target.dir != nil:
		return pathErr("link", d.childPath(name), syscall.EPERM)
	case d.depth()+1 > d.ns.maxDepth:
		return pathErr("link", d.childPath(name), syscall.ENOSPC)
	}
	target.attrMu.Lock()
	if target.nlink == 0 {
		target.attrMu.Unlock()
		return pathErr("link", d.childPath(name), syscall.ENOENT)
	}
	target.nlink++
	target.setTimeLocked(ctime, now)
	target.attrMu.Unlock()
	d.insertLocked(name, target, now)
	target.attrMu.Lock()
	ev := target.eventLocked(KindCreate, c)
	target.attrMu.Unlock()
	d.ns.events.push(ev)
	return nil
}

// Unlink removes the non-directory name from d, as unlink(2) on Linux:
// EISDIR for a directory. The node lives on with Nlink 0 for whoever holds
// it. It queues a DELETE event.
func (d *Node) Unlink(name string, c Caller) error {
	err := d.remove("unlink", name, false, c)
	d.ns.events.flush()
	return err
}

// Rmdir removes the empty directory name from d: ENOTDIR for a
// non-directory, ENOTEMPTY if it has entries. The directory is dead
// afterwards: creating in it or reading it is ENOENT.
func (d *Node) Rmdir(name string, c Caller) error {
	err := d.remove("rmdir", name, true, c)
	d.ns.events.flush()
	return err
}

func (d *Node) remove(op, name string, isDir bool, c Caller) error {
	if err := d.dirOp(op, name); err != nil {
		return err
	}
	now := d.ns.now()
	ds := d.dir
	ds.mu.Lock()
	defer ds.mu.Unlock()
	de := ds.children[name]
	if de == nil {
		return pathErr(op, d.childPath(name), syscall.ENOENT)
	}
	victim := de.node
	switch {
	case isDir && victim.dir == nil:
		return pathErr(op, d.childPath(name), syscall.ENOTDIR)
	case !isDir && victim.dir != nil:
		return pathErr(op, d.childPath(name), syscall.EISDIR)
	}
	if isDir {
		vd := victim.dir
		vd.mu.Lock() // child after parent
		if len(vd.children) > 0 {
			vd.mu.Unlock()
			return pathErr(op, d.childPath(name), syscall.ENOTEMPTY)
		}
		vd.dead = true
		vd.mu.Unlock()
	}
	d.dropEntryLocked(de, now, KindDelete, c)
	return nil
}

// dropEntryLocked removes de from d, takes the node's link and queues a
// kind event for the name. Preconditions: d's mu held; for a directory,
// it is empty and marked dead.
func (d *Node) dropEntryLocked(de *dentry, now time.Time, kind Kind, c Caller) {
	n := de.node
	n.attrMu.Lock()
	ev := n.eventNoPathLocked(kind, c) // named below: one path, not two
	n.attrMu.Unlock()
	ev.Parent, ev.Name, ev.Path = d.ino, de.name, d.childPath(de.name)
	d.removeLocked(de, now)
	n.dropLink(now)
	d.ns.events.push(ev)
}

// ReadDir returns up to max entries (max <= 0: all) of directory d whose
// cookie is greater than offset, in cookie order: "." (cookie 1), ".."
// (cookie 2), then the children in the order they were linked. Cookies
// only grow, so a listing resumed at an entry's cookie neither repeats nor
// skips an entry that stayed put, whatever else changes meanwhile; a name
// linked (or renamed) after the listing passed it appears at the end. It
// is ENOENT for a removed directory.
func (d *Node) ReadDir(offset uint64, max int) ([]DirEntry, error) {
	if d.dir == nil {
		return nil, pathErr("readdir", d.Path(), syscall.ENOTDIR)
	}
	ds := d.dir
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.dead {
		return nil, pathErr("readdir", d.Path(), syscall.ENOENT)
	}
	n := len(ds.children) + 2
	if max > 0 && max < n {
		n = max
	}
	out := make([]DirEntry, 0, n)
	full := func() bool { return max > 0 && len(out) >= max }
	if offset < 1 {
		out = append(out, DirEntry{Name: ".", Ino: d.ino, Type: TypeDir, Cookie: 1})
	}
	if offset < 2 && !full() {
		p := d.Parent()
		if p == nil {
			p = d
		}
		out = append(out, DirEntry{Name: "..", Ino: p.ino, Type: TypeDir, Cookie: 2})
	}
	i := sort.Search(len(ds.order), func(i int) bool { return ds.order[i].cookie > offset })
	for ; i < len(ds.order) && !full(); i++ {
		if de := ds.order[i]; !de.removed {
			out = append(out, DirEntry{Name: de.name, Ino: de.node.ino, Type: de.node.typ, Cookie: de.cookie})
		}
	}
	return out, nil
}

// Len returns the number of entries in directory d.
func (d *Node) Len() int {
	ds := d.mustDir("Len")
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return len(ds.children)
}
