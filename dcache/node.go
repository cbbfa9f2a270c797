package dcache

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/sync/rwsem"
)

// Node is an inode: a directory, device, symlink, fifo, socket or regular
// file. Its methods are safe for concurrent use. A Node stays usable after it
// is unlinked (Nlink 0): attributes read, content reads and writes.
type Node struct {
	// The fields are ordered so that the struct packs into 128 bytes
	// (a malloc size class) on 64-bit platforms: keep it so (dcache's
	// BenchmarkNodeMemory reports the size).

	// Immutable after creation:
	ns  *Namespace
	ino uint64
	dir *dirState // non-nil iff typ == TypeDir

	// link is the entry of the node's most recent name: its directory and
	// name there. Written under the directory's mu (and renameMu when a
	// directory moves between parents); read without locks, so a reader
	// may see a name the node just lost. For a directory it is the only
	// name and its parent (for "..", depth and the rename ancestor check,
	// both of which hold renameMu, under which a directory's parent cannot
	// change). Only the entry's immutable fields (parent, name) are read
	// through it.
	link atomic.Pointer[dentry]

	attrMu sync.Mutex // after every dir mu, before the event queue lock; never two held
	// symlink is a symlink's target: immutable, set before the node is
	// published.
	symlink string
	// file is a regular file's content (file.go), nil until the file
	// first stores or opens anything. Guarded by attrMu.
	file *fileContent
	// The times (atime, mtime, ctime), as seconds and nanoseconds since
	// the Unix epoch: 12 bytes each instead of a time.Time's 24 (see
	// setTimeLocked); the node is the namespace's unit of memory.
	sec  [numTimes]int64
	nsec [numTimes]uint32

	major uint32 // immutable; TypeChar, TypeBlock
	minor uint32 // immutable; TypeChar, TypeBlock

	// Guarded by attrMu:
	mode  uint32 // permission bits only; the type is typ
	uid   uint32
	gid   uint32
	nlink uint32 // dirs: 2 + subdirectories while linked, 0 once removed

	typ Type // immutable
	// unlinked, guarded by attrMu: nlink reached 0. A regular file's
	// content counts against MaxBytes while the file is linked or open
	// (Node.Open), as on tmpfs; the last Close of an unlinked file frees
	// it, and that of a file unlinked while closed goes with the node.
	unlinked bool
}

// The times of a node, indexes of Node.sec and Node.nsec.
const (
	atime = iota
	mtime
	ctime
	numTimes
)

// setTimeLocked sets time i. Preconditions: n.attrMu held, or n not yet
// published.
func (n *Node) setTimeLocked(i int, t time.Time) {
	n.sec[i], n.nsec[i] = t.Unix(), uint32(t.Nanosecond())
}

// timeLocked returns time i, in UTC and without a monotonic reading.
// Preconditions: n.attrMu held.
func (n *Node) timeLocked(i int) time.Time {
	return time.Unix(n.sec[i], int64(n.nsec[i])).UTC()
}

// target returns a symlink's target (immutable), "" for other types.
func (n *Node) target() string {
	return n.symlink
}

// dirState is the directory part of a Node.
type dirState struct {
	// sem is the directory's i_sem. dcache never takes it; package lookup
	// does (see the package doc). It is before mu in the lock order.
	sem rwsem.Sem

	mu sync.Mutex // after sem and renameMu, before attrMu
	// Guarded by mu:
	children   map[string]*dentry
	order      []*dentry // by cookie, ascending; may hold removed entries
	removed    int       // removed entries still in order
	nextCookie uint64    // last cookie handed out; starts at 2 ("." is 1, ".." is 2)
	negative   map[string]time.Time
	// negNext is a time before which no negative entry expires (zero:
	// not known), so that a full negative table is not swept on every
	// miss while nothing in it can be dropped. Only AddNegativeLocked
	// sets expiries (and lowers it); deletions only raise the true
	// earliest expiry, so it stays a lower bound.
	negNext   time.Time
	negSweeps uint32         // sweeps of negative so far (tests read it)
	inflight  map[string]any // package lookup's records, opaque here
	dead      bool           // removed from the tree: no entries may be added
}

// dentry is a positive directory entry; it is also its node's link while
// it is the node's most recent name. Immutable after creation except
// removed, which is guarded by the directory's mu.
type dentry struct {
	name    string
	node    *Node
	parent  *Node // the directory holding the entry
	cookie  uint64
	removed bool
}

// Ino returns the inode number: stable, never reused within a namespace.
func (n *Node) Ino() uint64 { return n.ino }

// Gen returns the generation number of the inode number.
func (n *Node) Gen() uint64 { return n.ns.gen }

// Type returns the node's type.
func (n *Node) Type() Type { return n.typ }

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.dir != nil }

// Namespace returns the namespace n belongs to.
func (n *Node) Namespace() *Namespace { return n.ns }

// Readlink returns a symlink's target.
func (n *Node) Readlink() (string, error) {
	if n.typ != TypeSymlink {
		return "", pathErr("readlink", n.Path(), syscall.EINVAL)
	}
	return n.target(), nil
}

// Attr returns a consistent snapshot of n's attributes.
func (n *Node) Attr() Attr {
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	return n.attrLocked()
}

// attrLocked is Attr. Preconditions: n.attrMu held.
func (n *Node) attrLocked() Attr {
	a := Attr{
		Ino: n.ino, Gen: n.ns.gen, Type: n.typ,
		Mode:  n.typ.ModeBits() | n.mode,
		Nlink: n.nlink, Uid: n.uid, Gid: n.gid,
		Major: n.major, Minor: n.minor,
		Atime: n.timeLocked(atime), Mtime: n.timeLocked(mtime), Ctime: n.timeLocked(ctime),
	}
	switch n.typ {
	case TypeRegular:
		if n.file != nil {
			a.Size, a.Stored = n.file.size, uint64(n.file.stored)
		}
	case TypeSymlink:
		a.Size = uint64(len(n.symlink))
	}
	return a
}

// Path returns one of n's names, slash-separated and relative to the root
// ("" for the root), or "" once n is unlinked. Under a concurrent rename it
// may return a name n just lost or is about to get.
func (n *Node) Path() string {
	var parts []string
	depth := 0
	for m := n; ; {
		l := m.link.Load()
		if l == nil || l.parent == nil {
			if m != n.ns.root {
				return "" // detached
			}
			break
		}
		parts = append(parts, l.name)
		m = l.parent
		if depth++; depth > n.ns.maxDepth+1 {
			break // a torn read across renames; never loop
		}
	}
	size := 0
	for _, p := range parts {
		size += len(p) + 1
	}
	b := make([]byte, 0, size)
	for i := len(parts) - 1; i >= 0; i-- {
		if len(b) > 0 {
			b = append(b, '/')
		}
		b = append(b, parts[i]...)
	}
	return string(b)
}

// childPath joins n's path and name.
func (n *Node) childPath(name string) string { return joinPath(n.Path(), name) }

// joinPath joins a directory's path ("" for the root) and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Parent returns the directory holding n's most recent name, the root for
// the root, and nil for an unlinked node.
func (n *Node) Parent() *Node {
	if n == n.ns.root {
		return n
	}
	if l := n.link.Load(); l != nil {
		return l.parent
	}
	return nil
}

// SetAttr changes the attributes selected by in.Valid and returns the new
// snapshot. A size change is EISDIR on a directory, EINVAL on other
// non-regular files, EFBIG past Options.MaxFileSize and ENOSPC past
// Options.MaxBytes. A mode or owner change queues a CHANGE event; a change
// of times alone queues an internal TOUCH event.
func (n *Node) SetAttr(in SetAttrIn, c Caller) (Attr, error) {
	a, err := n.setAttr(in, c)
	n.ns.events.flush()
	return a, err
}

func (n *Node) setAttr(in SetAttrIn, c Caller) (Attr, error) {
	now := n.ns.now()
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	if in.Valid&SetSize != 0 {
		switch n.typ {
		case TypeRegular:
		case TypeDir:
			return n.attrLocked(), pathErr("truncate", n.Path(), syscall.EISDIR)
		default:
			return n.attrLocked(), pathErr("truncate", n.Path(), syscall.EINVAL)
		}
		if err := n.resizeLocked(in.Size); err != nil {
			return n.attrLocked(), err
		}
		n.setTimeLocked(mtime, now)
	}
	if in.Valid&SetMode != 0 {
		n.mode = in.Mode & PermMask
	}
	if in.Valid&SetUid != 0 {
		n.uid = in.Uid
	}
	if in.Valid&SetGid != 0 {
		n.gid = in.Gid
	}
	switch {
	case in.Valid&SetAtimeNow != 0:
		n.setTimeLocked(atime, now)
	case in.Valid&SetAtime != 0:
		n.setTimeLocked(atime, in.Atime)
	}
	switch {
	case in.Valid&SetMtimeNow != 0:
		n.setTimeLocked(mtime, now)
	case in.Valid&SetMtime != 0:
		n.setTimeLocked(mtime, in.Mtime)
	}
	if in.Valid != 0 {
		n.setTimeLocked(ctime, now)
	}
	a := n.attrLocked()
	const times = SetAtime | SetMtime | SetAtimeNow | SetMtimeNow
	if in.Valid&(SetMode|SetUid|SetGid|times) != 0 && !n.unlinked {
		if l := n.link.Load(); l != nil || n == n.ns.root {
			kind := KindChange
			if in.Valid&(SetMode|SetUid|SetGid) == 0 {
				kind = KindTouch // internal: for whoever keeps times (package state)
			}
			ev := n.eventLocked(kind, c)
			n.ns.events.push(ev)
		}
	}
	return a, nil
}

// eventLocked builds an event about n under its current name.
// Preconditions: n.attrMu held.
func (n *Node) eventLocked(k Kind, c Caller) Event {
	ev := n.eventNoPathLocked(k, c)
	ev.Path = n.Path()
	return ev
}

// eventNoPathLocked is eventLocked without Path, for a caller that names
// the node itself. Preconditions: n.attrMu held.
func (n *Node) eventNoPathLocked(k Kind, c Caller) Event {
	ev := Event{Kind: k, Ino: n.ino, Type: n.typ,
		Mode: n.typ.ModeBits() | n.mode, Major: n.major, Minor: n.minor,
		Uid: n.uid, Gid: n.gid, Target: n.target(), Atime: n.timeLocked(atime), Mtime: n.timeLocked(mtime), Caller: c}
	if l := n.link.Load(); l != nil {
		ev.Parent, ev.Name = l.parent.ino, l.name
	}
	return ev
}

// chargedLocked reports whether the content counts against MaxBytes: the
// file is linked, or open. Preconditions: n.attrMu held.
func (n *Node) chargedLocked() bool {
	return !n.unlinked || (n.file != nil && n.file.opens > 0)
}

// chargeLocked returns the function that approves content growth: a
// charge against MaxBytes while the content counts, else nothing.
// Preconditions: n.attrMu held (for as long as the function is used).
func (n *Node) chargeLocked() func(int64) bool {
	if !n.chargedLocked() {
		return func(int64) bool { return true }
	}
	return n.ns.chargeBytes
}

// contentLocked returns the file's content, made on first use.
// Preconditions: n.attrMu held, n is a regular file.
func (n *Node) contentLocked() *fileContent {
	if n.file == nil {
		n.file = &fileContent{}
	}
	return n.file
}

// resizeLocked sets the content length: growing stores nothing (file.go).
// Preconditions: n.attrMu held, n is a regular file.
func (n *Node) resizeLocked(size uint64) error {
	if size > uint64(n.ns.opts.MaxFileSize) {
		return pathErr("truncate", n.Path(), syscall.EFBIG)
	}
	if n.file == nil && size == 0 {
		return nil
	}
	if freed := n.contentLocked().truncate(size); freed > 0 && n.chargedLocked() {
		n.ns.bytes.Add(-freed)
	}
	return nil
}

// ReadAt reads a regular file's content at off, like pread(2): holes read
// as zeros, and it returns 0, nil at or past the end.
func (n *Node) ReadAt(p []byte, off int64) (int, error) {
	if n.typ != TypeRegular {
		if n.typ == TypeDir {
			return 0, pathErr("read", n.Path(), syscall.EISDIR)
		}
		return 0, pathErr("read", n.Path(), syscall.EINVAL)
	}
	if off < 0 {
		return 0, pathErr("read", n.Path(), syscall.EINVAL)
	}
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	if n.file == nil {
		return 0, nil
	}
	return n.file.readAt(p, uint64(off)), nil
}

// WriteAt writes a regular file's content at off, like pwrite(2). Past
// Options.MaxFileSize the write is short, or EFBIG if nothing fits; when
// the content would exceed Options.MaxBytes the write is short, or ENOSPC
// if nothing fits.
func (n *Node) WriteAt(p []byte, off int64) (int, error) {
	if n.typ != TypeRegular {
		if n.typ == TypeDir {
			return 0, pathErr("write", n.Path(), syscall.EISDIR)
		}
		return 0, pathErr("write", n.Path(), syscall.EINVAL)
	}
	if off < 0 {
		return 0, pathErr("write", n.Path(), syscall.EINVAL)
	}
	max := n.ns.opts.MaxFileSize
	if off >= max && len(p) > 0 {
		return 0, pathErr("write", n.Path(), syscall.EFBIG)
	}
	if int64(len(p)) > max-off {
		p = p[:max-off]
	}
	if len(p) == 0 {
		return 0, nil
	}
	now := n.ns.now()
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	k := n.contentLocked().writeAt(p, uint64(off), n.chargeLocked())
	if k == 0 {
		return 0, pathErr("write", n.Path(), syscall.ENOSPC)
	}
	n.setTimeLocked(mtime, now)
	n.setTimeLocked(ctime, now)
	return k, nil
}

// Allocate is fallocate(2) of a regular file: [off, off+length) is
// stored (zeros where nothing was written), so that writes there cannot
// fail for lack of room, and the size grows to cover it unless keepSize.
// EFBIG past Options.MaxFileSize; ENOSPC past Options.MaxBytes (what was
// stored before stays stored).
func (n *Node) Allocate(off, length int64, keepSize bool) error {
	if n.typ != TypeRegular {
		if n.typ == TypeDir {
			return pathErr("fallocate", n.Path(), syscall.EISDIR)
		}
		return pathErr("fallocate", n.Path(), syscall.ENODEV)
	}
	if off < 0 || length <= 0 {
		return pathErr("fallocate", n.Path(), syscall.EINVAL)
	}
	end := off + length
	if end < off || end > n.ns.opts.MaxFileSize {
		return pathErr("fallocate", n.Path(), syscall.EFBIG)
	}
	now := n.ns.now()
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	f := n.contentLocked()
	if !f.allocate(uint64(off), uint64(end), n.chargeLocked()) {
		return pathErr("fallocate", n.Path(), syscall.ENOSPC)
	}
	if !keepSize && uint64(end) > f.size {
		f.size = uint64(end)
		n.setTimeLocked(mtime, now)
	}
	n.setTimeLocked(ctime, now)
	return nil
}

// SeekData is lseek(2)'s SEEK_DATA (hole false) and SEEK_HOLE (hole
// true) on a regular file, at PageSize granularity: the offset of the
// next data or hole at or after off (the end of the file is a hole).
// ENXIO when off is at or past the end, or no data follows it.
func (n *Node) SeekData(off int64, hole bool) (int64, error) {
	if n.typ != TypeRegular {
		return 0, pathErr("lseek", n.Path(), syscall.EINVAL)
	}
	if off < 0 {
		return 0, pathErr("lseek", n.Path(), syscall.ENXIO)
	}
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	f := n.file
	if f == nil {
		f = &fileContent{}
	}
	r, ok := f.seek(uint64(off), hole)
	if !ok {
		return 0, pathErr("lseek", n.Path(), syscall.ENXIO)
	}
	return int64(r), nil
}

// Open counts an open file description on a regular file, which keeps
// its content (and its charge against MaxBytes) after the last unlink
// until the matching Close. Other types are not counted.
func (n *Node) Open() {
	if n.typ != TypeRegular {
		return
	}
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	f := n.contentLocked()
	if f.opens == 0 && n.unlinked {
		n.ns.bytes.Add(f.stored) // reopened through /proc/PID/fd: counts again
	}
	f.opens++
}

// CloseInherited is Close of an open file description that this process
// did not Open: one counted before an Export (ExportNode.Opens). It
// reports false, and does nothing, if no open is counted.
func (n *Node) CloseInherited() bool {
	if n.typ != TypeRegular {
		return false
	}
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	f := n.file
	if f == nil || f.opens == 0 {
		return false
	}
	f.opens--
	if f.opens == 0 && n.unlinked {
		n.ns.bytes.Add(-f.drop())
	}
	return true
}

// Close ends what Open began; the last Close of an unlinked file frees
// its content.
func (n *Node) Close() {
	if n.typ != TypeRegular {
		return
	}
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	f := n.file
	if f == nil || f.opens == 0 {
		panic("dcache: Close of a file that is not open")
	}
	f.opens--
	if f.opens == 0 && n.unlinked {
		n.ns.bytes.Add(-f.drop())
	}
}

// dropLink takes one link from n and returns true when it was the last.
// Preconditions: the entry is gone from its directory (under that
// directory's mu, or the directory is dead); n.attrMu not held.
func (n *Node) dropLink(now time.Time) bool {
	n.attrMu.Lock()
	defer n.attrMu.Unlock()
	n.setTimeLocked(ctime, now)
	if n.dir != nil {
		n.nlink = 0
	} else if n.nlink > 0 {
		n.nlink--
	}
	if n.nlink > 0 {
		return false
	}
	n.unlinked = true
	n.link.Store(nil)
	n.ns.byType[n.typ].Add(-1)
	if n.typ == TypeRegular && n.file != nil && n.file.opens == 0 {
		n.ns.bytes.Add(-n.file.stored) // no longer counted; the content goes with the node
	}
	n.ns.nodes.Add(-1)
	return true
}
