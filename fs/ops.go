package fs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// Every handler that answers a request counts itself live first (enter)
// and uncounts with a deferred Put, so that a panic recovered by go-fuse
// leaves the count right; no handler holds a lock of its own across a call
// into lookup or dcache, and those packages unlock with defer on every
// path that can panic.

// caller is the dcache.Caller of a request: OriginFUSE, through this
// server's mount (its notify queue's id).
func (s *Server) caller(h *fuse.InHeader) dcache.Caller {
	return dcache.Caller{Pid: h.Pid, Uid: h.Uid, Gid: h.Gid, Origin: dcache.OriginFUSE, Mount: s.nq.id}
}

// status maps err and logs the unexpected ones (EIO fallbacks).
func (s *Server) status(op string, err error) fuse.Status {
	st := toStatus(err)
	if err != nil && !known(err) {
		s.log.Error("unexpected error", zap.String("op", op), zap.Error(err))
	}
	return st
}

// node returns the node the kernel calls id.
func (s *Server) node(id uint64) (*dcache.Node, fuse.Status) {
	n := s.nodes.get(id)
	if n == nil {
		s.log.Warn("request for a node id the kernel was never given or forgot", zap.Uint64("id", id))
		return nil, fuse.Status(syscall.ESTALE)
	}
	return n, fuse.OK
}

// dir returns the directory the kernel calls id.
func (s *Server) dir(id uint64) (*dcache.Node, fuse.Status) {
	n, st := s.node(id)
	if st != fuse.OK {
		return nil, st
	}
	if !n.IsDir() {
		return nil, fuse.ENOTDIR
	}
	return n, fuse.OK
}

// entry fills out for n and counts the lookup the reply hands the kernel.
func (s *Server) entry(n *dcache.Node, out *fuse.EntryOut) {
	a := n.Attr()
	s.viewAttr(n, &a)
	out.NodeId = s.nodes.ref(n)
	out.Generation = a.Gen
	out.SetEntryTimeout(s.entryTimeout())
	out.SetAttrTimeout(s.attrTimeout())
	fillAttr(&a, &out.Attr)
}

// Lookup is LOOKUP: the lookup protocol of package lookup, which asks the
// loader on a miss. A miss is answered as a negative entry cached for the
// negative timeout (NodeId 0), or plain ENOENT when that timeout is 0.
func (s *Server) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpLookup, s.start())
	dir, st := s.dir(h.NodeId)
	if st != fuse.OK {
		return st
	}
	vv := s.viewVerdict(dir, name)
	if vv == hidden {
		return s.outsideView(out) // no load, no negative entry in the namespace
	}
	ctx := s.ctx(cancel, h.Pid)
	n, err := s.res.Lookup(ctx, dir, name, s.caller(h))
	ctx.release()
	if err != nil {
		if st := s.status("lookup", err); st != fuse.ENOENT {
			return st
		}
		return s.absent(dir, name, vv, out)
	}
	if vv == passage && !n.IsDir() {
		return s.absent(dir, name, vv, out) // only a directory shows there
	}
	s.entry(n, out)
	return fuse.OK
}

// absent answers name in dir absent: a negative entry cached for the
// negative timeout, or ENOENT when that is 0. The answer is recorded
// first and the directory then looked at once more (absent.go): a node
// there now that the view shows is answered instead.
func (s *Server) absent(dir *dcache.Node, name string, vv viewpath.Verdict, out *fuse.EntryOut) fuse.Status {
	neg := s.negTimeout()
	if neg <= 0 {
		return fuse.ENOENT
	}
	if testBeforeAbsentRecord != nil {
		testBeforeAbsentRecord(name)
	}
	s.nq.answeredAbsent(dir.Ino(), name, neg)
	if n := recheckAbsent(dir, name); n != nil && (vv != passage || n.IsDir()) {
		s.entry(n, out)
		return fuse.OK
	}
	*out = fuse.EntryOut{}
	out.SetEntryTimeout(neg)
	return fuse.OK
}

// removing records, before name in dir is removed through this mount,
// that the kernel may keep the name's dentry as a negative entry until
// the entry timeout (absent.go); a removal that fails costs one notice
// more at most.
func (s *Server) removing(dir *dcache.Node, name string) {
	s.nq.answeredAbsent(dir.Ino(), name, max(s.entryTimeout(), s.negTimeout()))
}

// testBeforeAbsentRecord, if set (tests), runs between the loader's
// answer "absent" and Lookup's record of it.
var testBeforeAbsentRecord func(name string)

// childNow returns dir's child name as the namespace holds it now, or
// nil: no loader, no wait.
func childNow(dir *dcache.Node, name string) *dcache.Node {
	dir.LockMu()
	n, _ := dir.ChildLocked(name)
	dir.UnlockMu()
	if n == nil {
		dir.Namespace().Flush() // an expired negative entry dropped on the way
	}
	return n
}

// Forget is FORGET and each item of BATCH_FORGET: no reply, never refused.
func (s *Server) Forget(id, nlookup uint64) {
	s.nodes.forget(id, nlookup)
}

// GetAttr is GETATTR.
func (s *Server) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpGetAttr, s.start())
	n, st := s.node(in.NodeId)
	if st != fuse.OK {
		return st
	}
	a := n.Attr()
	s.viewAttr(n, &a)
	fillAttr(&a, &out.Attr)
	out.SetTimeout(s.attrTimeout())
	return fuse.OK
}

// SetAttr is SETATTR: chmod, chown, truncate, utimens. The kernel clears
// set-user-id and set-group-id itself (the server does not negotiate
// handle_killpriv): on write, truncate and chown it sends a SETATTR whose
// mode has them cleared, possibly together with the owner change.
func (s *Server) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpSetAttr, s.start())
	n, st := s.node(in.NodeId)
	if st != fuse.OK {
		return st
	}
	var sa dcache.SetAttrIn
	v := in.Valid
	if v&fuse.FATTR_MODE != 0 {
		sa.Valid |= dcache.SetMode
		sa.Mode = in.Mode
	}
	if v&fuse.FATTR_UID != 0 {
		sa.Valid |= dcache.SetUid
		sa.Uid = in.Uid
	}
	if v&fuse.FATTR_GID != 0 {
		sa.Valid |= dcache.SetGid
		sa.Gid = in.Gid
	}
	if v&fuse.FATTR_SIZE != 0 {
		sa.Valid |= dcache.SetSize
		sa.Size = in.Size
	}
	switch {
	case v&fuse.FATTR_ATIME_NOW != 0:
		sa.Valid |= dcache.SetAtimeNow
	case v&fuse.FATTR_ATIME != 0:
		sa.Valid |= dcache.SetAtime
		sa.Atime = time.Unix(int64(in.Atime), int64(in.Atimensec))
	}
	switch {
	case v&fuse.FATTR_MTIME_NOW != 0:
		sa.Valid |= dcache.SetMtimeNow
	case v&fuse.FATTR_MTIME != 0:
		sa.Valid |= dcache.SetMtime
		sa.Mtime = time.Unix(int64(in.Mtime), int64(in.Mtimensec))
	}
	a, err := n.SetAttr(sa, s.caller(&in.InHeader))
	if err != nil {
		return s.status("setattr", err)
	}
	if a.Type != dcache.TypeRegular { // regular files are not kept
		if st := s.durable("setattr"); st != fuse.OK {
			return st
		}
	}
	s.viewAttr(n, &a)
	fillAttr(&a, &out.Attr)
	out.SetTimeout(s.attrTimeout())
	return fuse.OK
}

// Mknod is MKNOD: devices, fifos, sockets, regular files.
func (s *Server) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpMknod, s.start())
	dir, st := s.dir(in.NodeId)
	if st != fuse.OK {
		return st
	}
	if st := s.viewCreate(dir, name, false); st != fuse.OK {
		return st
	}
	major, minor := splitDev(in.Rdev)
	ctx := s.ctx(cancel, in.Pid)
	n, err := s.res.Mknod(ctx, dir, name, in.Mode, major, minor, s.caller(&in.InHeader))
	ctx.release()
	if err != nil {
		return s.status("mknod", err)
	}
	if st := s.durable("mknod"); st != fuse.OK {
		return st
	}
	s.entry(n, out)
	return fuse.OK
}

// Mkdir is MKDIR.
func (s *Server) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpMkdir, s.start())
	dir, st := s.dir(in.NodeId)
	if st != fuse.OK {
		return st
	}
	if st := s.viewCreate(dir, name, true); st != fuse.OK {
		return st
	}
	ctx := s.ctx(cancel, in.Pid)
	n, err := s.res.Mkdir(ctx, dir, name, in.Mode&dcache.PermMask, s.caller(&in.InHeader))
	ctx.release()
	if err != nil {
		return s.status("mkdir", err)
	}
	if st := s.durable("mkdir"); st != fuse.OK {
		return st
	}
	s.entry(n, out)
	return fuse.OK
}

// Symlink is SYMLINK: linkName in the directory, pointing at pointedTo.
func (s *Server) Symlink(cancel <-chan struct{}, h *fuse.InHeader, pointedTo, linkName string, out *fuse.EntryOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpSymlink, s.start())
	dir, st := s.dir(h.NodeId)
	if st != fuse.OK {
		return st
	}
	if st := s.viewCreate(dir, linkName, false); st != fuse.OK {
		return st
	}
	ctx := s.ctx(cancel, h.Pid)
	n, err := s.res.Symlink(ctx, dir, linkName, pointedTo, s.caller(h))
	ctx.release()
	if err != nil {
		return s.status("symlink", err)
	}
	if st := s.durable("symlink"); st != fuse.OK {
		return st
	}
	s.entry(n, out)
	return fuse.OK
}

// Readlink is READLINK.
func (s *Server) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if !s.enter() {
		return nil, errShutdown
	}
	defer s.exit(OpReadlink, s.start())
	n, st := s.node(h.NodeId)
	if st != fuse.OK {
		return nil, st
	}
	t, err := n.Readlink()
	if err != nil {
		return nil, s.status("readlink", err)
	}
	return []byte(t), fuse.OK
}

// Link is LINK: a new name for an existing node.
func (s *Server) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpLink, s.start())
	dir, st := s.dir(in.NodeId)
	if st != fuse.OK {
		return st
	}
	target, st := s.node(in.Oldnodeid)
	if st != fuse.OK {
		return st
	}
	if st := s.viewCreate(dir, name, false); st != fuse.OK {
		return st
	}
	ctx := s.ctx(cancel, in.Pid)
	err := s.res.Link(ctx, dir, name, target, s.caller(&in.InHeader))
	ctx.release()
	if err != nil {
		return s.status("link", err)
	}
	if st := s.durable("link"); st != fuse.OK {
		return st
	}
	s.entry(target, out)
	return fuse.OK
}

// Unlink is UNLINK. The node lives on for whoever holds it (open handles,
// the kernel's node id) with nlink 0.
func (s *Server) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpUnlink, s.start())
	dir, st := s.dir(h.NodeId)
	if st != fuse.OK {
		return st
	}
	s.removing(dir, name)
	ctx := s.ctx(cancel, h.Pid)
	err := s.res.Unlink(ctx, dir, name, s.caller(h))
	ctx.release()
	if err != nil {
		return s.status("unlink", err)
	}
	return s.durable("unlink")
}

// Rmdir is RMDIR.
func (s *Server) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpRmdir, s.start())
	dir, st := s.dir(h.NodeId)
	if st != fuse.OK {
		return st
	}
	if pins.busy(dir, name) { // a special is mounted on it (special.go)
		return fuse.Status(syscall.EBUSY)
	}
	s.removing(dir, name)
	ctx := s.ctx(cancel, h.Pid)
	err := s.res.Rmdir(ctx, dir, name, s.caller(h))
	ctx.release()
	if err != nil {
		return s.status("rmdir", err)
	}
	return s.durable("rmdir")
}

// Rename is RENAME and RENAME2 (flags RENAME_NOREPLACE, RENAME_EXCHANGE;
// RENAME_WHITEOUT is EINVAL, as on a file system without whiteouts).
func (s *Server) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpRename, s.start())
	if in.Flags&^(dcache.RenameNoReplace|dcache.RenameExchange) != 0 {
		return fuse.EINVAL
	}
	oldDir, st := s.dir(in.NodeId)
	if st != fuse.OK {
		return st
	}
	newDir, st := s.dir(in.Newdir)
	if st != fuse.OK {
		return st
	}
	if st := s.viewRename(oldDir, oldName, newDir, newName); st != fuse.OK {
		return st
	}
	if pins.busy(oldDir, oldName) || pins.busy(newDir, newName) { // special.go
		return fuse.Status(syscall.EBUSY)
	}
	s.removing(oldDir, oldName)
	if in.Flags&dcache.RenameExchange != 0 {
		s.removing(newDir, newName)
	}
	ctx := s.ctx(cancel, in.Pid)
	err := s.res.Rename(ctx, oldDir, oldName, newDir, newName, in.Flags, s.caller(&in.InHeader))
	ctx.release()
	if err != nil {
		return s.status("rename", err)
	}
	return s.durable("rename")
}

// Access is ACCESS. With default_permissions (the default) the kernel
// checks permissions itself and never sends it; without, this is the
// check: the owner, group and other bits against the caller's ids (its
// supplementary groups are not known), root passing everything but an
// execute check on a file with no execute bit.
func (s *Server) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpAccess, s.start())
	n, st := s.node(in.NodeId)
	if st != fuse.OK {
		return st
	}
	a := n.Attr()
	s.viewAttr(n, &a)
	return accessStatus(&a, in.Uid, in.Gid, in.Mask)
}

func accessStatus(a *dcache.Attr, uid, gid, mask uint32) fuse.Status {
	mask &= 7 // R_OK 4, W_OK 2, X_OK 1; F_OK 0
	if mask == 0 {
		return fuse.OK
	}
	if uid == 0 {
		if mask&1 != 0 && a.Type != dcache.TypeDir && a.Mode&0111 == 0 {
			return fuse.EACCES
		}
		return fuse.OK
	}
	var bits uint32
	switch {
	case uid == a.Uid:
		bits = (a.Mode >> 6) & 7
	case gid == a.Gid:
		bits = (a.Mode >> 3) & 7
	default:
		bits = a.Mode & 7
	}
	if bits&mask != mask {
		return fuse.EACCES
	}
	return fuse.OK
}

// StatFs is STATFS: the namespace's node and byte limits as file and
// block counts, and the real name limit (255).
func (s *Server) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpStatFs, s.start())
	fs := s.ns.Statfs()
	out.Bsize = blockSize
	out.Frsize = blockSize
	out.NameLen = fs.NameMax
	out.Blocks = fs.MaxBytes / blockSize
	used := (fs.Bytes + blockSize - 1) / blockSize
	if used > out.Blocks {
		used = out.Blocks
	}
	out.Bfree = out.Blocks - used
	out.Bavail = out.Bfree
	out.Files = fs.MaxNodes
	if fs.Nodes < fs.MaxNodes {
		out.Ffree = fs.MaxNodes - fs.Nodes
	}
	return fuse.OK
}
