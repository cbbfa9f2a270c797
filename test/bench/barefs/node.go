package main

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// tree holds what is shared by every node of one mount.
//
// Lock order: tree.mu → node.mu. tree.mu is held, exclusively, by every
// operation that changes the namespace (and so link counts); node.mu guards
// one node's attributes and contents. The go-fuse Inode guards its own
// children map; the kernel's directory i_rwsem serializes namespace changes
// within one directory on top of that.
type tree struct {
	mu sync.Mutex
}

// node is every kind of node: directory, regular file, symlink, device,
// fifo, socket. The kind is fixed at creation (the Inode's StableAttr).
type node struct {
	fs.Inode
	t *tree

	mu   sync.Mutex // guards the fields below
	attr fuse.Attr  // permission bits (07777), owner, times, rdev, nlink (non-dirs)
	data []byte     // regular file contents
	link []byte     // symlink target
	// subdirs counts child directories: a directory's nlink is 2+subdirs,
	// or 0 once it is removed. Guarded by tree.mu and mu (writes hold both).
	subdirs uint32
	removed bool // a removed directory: nlink 0
}

var (
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeMknoder    = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeWriter     = (*node)(nil)
	_ fs.NodeFlusher    = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
)

func (n *node) isDir() bool { return n.StableAttr().Mode == syscall.S_IFDIR }

// fillLocked copies the attributes out. n.mu held.
func (n *node) fillLocked(out *fuse.Attr) {
	*out = n.attr
	out.Mode = n.StableAttr().Mode | n.attr.Mode&07777
	switch {
	case n.isDir() && n.removed:
		out.Nlink = 0
	case n.isDir():
		out.Nlink = 2 + n.subdirs
	}
	switch n.StableAttr().Mode {
	case syscall.S_IFREG:
		out.Size = uint64(len(n.data))
	case syscall.S_IFLNK:
		out.Size = uint64(len(n.link))
	}
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
}

func (n *node) fill(out *fuse.Attr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.fillLocked(out)
}

func now() (uint64, uint32) {
	t := time.Now()
	return uint64(t.Unix()), uint32(t.Nanosecond())
}

// touchLocked sets the times named (a, m, c) to now. n.mu held.
func (n *node) touchLocked(a, m, c bool) {
	s, ns := now()
	if a {
		n.attr.Atime, n.attr.Atimensec = s, ns
	}
	if m {
		n.attr.Mtime, n.attr.Mtimensec = s, ns
	}
	if c {
		n.attr.Ctime, n.attr.Ctimensec = s, ns
	}
}

func (n *node) touchDir() {
	n.mu.Lock()
	n.touchLocked(false, true, true)
	n.mu.Unlock()
}

func (n *node) touchCtime() {
	n.mu.Lock()
	n.touchLocked(false, false, true)
	n.mu.Unlock()
}

// newChild makes a node of kind typ (S_IFMT bits) under parent n, owned by
// the caller, with the setgid-directory rules tmpfs follows
// (inode_init_owner): a child of a setgid directory takes its group, and a
// child directory inherits the setgid bit. tree.mu held.
func (n *node) newChild(ctx context.Context, typ, perm, rdev uint32) *node {
	c := &node{t: n.t}
	c.attr.Mode = perm & 07777
	c.attr.Rdev = rdev
	c.attr.Nlink = 1
	if caller, ok := fuse.FromContext(ctx); ok {
		c.attr.Uid, c.attr.Gid = caller.Uid, caller.Gid
	}
	n.mu.Lock()
	if n.attr.Mode&syscall.S_ISGID != 0 {
		c.attr.Gid = n.attr.Gid
		if typ == syscall.S_IFDIR {
			c.attr.Mode |= syscall.S_ISGID
		}
	}
	n.mu.Unlock()
	c.touchLocked(true, true, true)
	return c
}

// add publishes c as a persistent inode (it survives the kernel's FORGET:
// the tree is the only copy) and fills the entry reply. tree.mu held.
func (n *node) add(ctx context.Context, c *node, typ uint32, out *fuse.EntryOut) *fs.Inode {
	ino := n.NewPersistentInode(ctx, c, fs.StableAttr{Mode: typ})
	if typ == syscall.S_IFDIR {
		n.mu.Lock()
		n.subdirs++
		n.mu.Unlock()
	}
	n.touchDir()
	c.fill(&out.Attr)
	return ino
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m, ok := in.GetMode(); ok {
		n.attr.Mode = m & 07777
	}
	if uid, ok := in.GetUID(); ok {
		n.attr.Uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		n.attr.Gid = gid
	}
	if sz, ok := in.GetSize(); ok {
		if n.StableAttr().Mode != syscall.S_IFREG {
			return syscall.EINVAL
		}
		n.data = resize(n.data, sz)
		n.touchLocked(false, true, false)
	}
	if t, ok := in.GetATime(); ok {
		n.attr.Atime, n.attr.Atimensec = uint64(t.Unix()), uint32(t.Nanosecond())
	}
	if t, ok := in.GetMTime(); ok {
		n.attr.Mtime, n.attr.Mtimensec = uint64(t.Unix()), uint32(t.Nanosecond())
	}
	n.touchLocked(false, false, true)
	n.fillLocked(&out.Attr)
	return 0
}

func resize(b []byte, sz uint64) []byte {
	if sz <= uint64(len(b)) {
		return b[:sz]
	}
	if sz <= uint64(cap(b)) {
		old := len(b)
		b = b[:sz]
		clear(b[old:])
		return b
	}
	nb := make([]byte, sz)
	copy(nb, b)
	return nb
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	if n.GetChild(name) != nil {
		return nil, syscall.EEXIST
	}
	typ := mode & syscall.S_IFMT
	switch typ {
	case 0:
		typ = syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		return nil, syscall.EINVAL
	}
	c := n.newChild(ctx, typ, mode, dev)
	return n.add(ctx, c, typ, out), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	if n.GetChild(name) != nil {
		return nil, syscall.EEXIST
	}
	c := n.newChild(ctx, syscall.S_IFDIR, mode, 0)
	return n.add(ctx, c, syscall.S_IFDIR, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	if n.GetChild(name) != nil {
		return nil, syscall.EEXIST
	}
	c := n.newChild(ctx, syscall.S_IFLNK, 0777, 0)
	c.attr.Mode = 0777 // symlinks ignore the setgid rule
	c.link = []byte(target)
	return n.add(ctx, c, syscall.S_IFLNK, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.StableAttr().Mode != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return append([]byte(nil), n.link...), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	if n.GetChild(name) != nil {
		return nil, syscall.EEXIST
	}
	c, ok := target.(*node)
	if !ok || c.isDir() {
		return nil, syscall.EPERM
	}
	c.mu.Lock()
	c.attr.Nlink++
	c.touchLocked(false, false, true)
	c.fillLocked(&out.Attr)
	c.mu.Unlock()
	n.touchDir()
	return c.EmbeddedInode(), 0
}

// dropLocked accounts for removing the name of c from n. tree.mu held.
func (n *node) dropLocked(c *node) {
	c.mu.Lock()
	if c.isDir() {
		c.removed = true
	} else if c.attr.Nlink > 0 {
		c.attr.Nlink--
	}
	c.touchLocked(false, false, true)
	c.mu.Unlock()
	if c.isDir() {
		n.mu.Lock()
		n.subdirs--
		n.mu.Unlock()
	}
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	ch := n.GetChild(name)
	if ch == nil {
		return syscall.ENOENT
	}
	c := ch.Operations().(*node)
	if c.isDir() {
		return syscall.EISDIR
	}
	n.dropLocked(c)
	n.touchDir()
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	ch := n.GetChild(name)
	if ch == nil {
		return syscall.ENOENT
	}
	c := ch.Operations().(*node)
	if !c.isDir() {
		return syscall.ENOTDIR
	}
	if len(ch.Children()) > 0 {
		return syscall.ENOTEMPTY
	}
	n.dropLocked(c)
	n.touchDir()
	return 0
}

const (
	renameNoreplace = 1 << 0 // RENAME_NOREPLACE
	renameExchange  = 1 << 1 // RENAME_EXCHANGE
)

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	np := newParent.(*node)
	sch := n.GetChild(name)
	if sch == nil {
		return syscall.ENOENT
	}
	src := sch.Operations().(*node)
	var dst *node
	if dch := np.GetChild(newName); dch != nil {
		dst = dch.Operations().(*node)
	}
	switch {
	case flags&renameExchange != 0:
		if dst == nil {
			return syscall.ENOENT
		}
		if n != np && src.isDir() != dst.isDir() {
			d := int32(1)
			if dst.isDir() { // the directory moves from np to n
				d = -1
			}
			n.mu.Lock()
			n.subdirs = uint32(int32(n.subdirs) - d)
			n.mu.Unlock()
			np.mu.Lock()
			np.subdirs = uint32(int32(np.subdirs) + d)
			np.mu.Unlock()
		}
		dst.touchCtime()
	case dst != nil && flags&renameNoreplace != 0:
		return syscall.EEXIST
	case dst != nil:
		if dst == src {
			return 0
		}
		if src.isDir() != dst.isDir() {
			if dst.isDir() {
				return syscall.EISDIR
			}
			return syscall.ENOTDIR
		}
		if dst.isDir() && len(dst.Children()) > 0 {
			return syscall.ENOTEMPTY
		}
		np.dropLocked(dst)
	}
	if flags&renameExchange == 0 && src.isDir() && n != np {
		n.mu.Lock()
		n.subdirs--
		n.mu.Unlock()
		np.mu.Lock()
		np.subdirs++
		np.mu.Unlock()
	}
	src.touchCtime()
	n.touchDir()
	if np != n {
		np.touchDir()
	}
	return 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	if n.GetChild(name) != nil {
		return nil, nil, 0, syscall.EEXIST
	}
	c := n.newChild(ctx, syscall.S_IFREG, mode, 0)
	return n.add(ctx, c, syscall.S_IFREG, out), nil, 0, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 && n.StableAttr().Mode == syscall.S_IFREG {
		n.mu.Lock()
		if len(n.data) > 0 {
			n.data = n.data[:0]
			n.touchLocked(false, true, true)
		}
		n.mu.Unlock()
	}
	return nil, 0, 0
}

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if off >= int64(len(n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	k := copy(dest, n.data[off:])
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if end := uint64(off) + uint64(len(data)); end > uint64(len(n.data)) {
		n.data = resize(n.data, end)
	}
	copy(n.data[off:], data)
	n.touchLocked(false, true, true)
	return uint32(len(data)), 0
}

// Allocate supports plain fallocate (extend) and FALLOC_FL_KEEP_SIZE (a
// no-op: there are no blocks to reserve).
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
	if mode&^keepSize != 0 {
		return syscall.EOPNOTSUPP
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if end := off + size; mode&keepSize == 0 && end > uint64(len(n.data)) {
		n.data = resize(n.data, end)
		n.touchLocked(false, true, true)
	}
	return 0
}

func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return 0 }

func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno { return 0 }

// Statfs reports a real name limit: without it the kernel reports 0 and
// tools misbehave (DESIGN.md section 7).
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	out.Blocks = 1 << 20
	out.Bfree = 1 << 20
	out.Bavail = 1 << 20
	out.Files = 1 << 20
	out.Ffree = 1 << 20
	return 0
}
