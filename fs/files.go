package fs

import (
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/devfsd/devfsd/dcache"
)

// Open is OPEN of a regular file (the only kind that reaches the server:
// the kernel opens devices, fifos and sockets itself). O_TRUNC arrives as
// a separate SETATTR, since the server does not negotiate atomic_o_trunc.
func (s *Server) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpOpen, s.start())
	n, st := s.node(in.NodeId)
	if st != fuse.OK {
		return st
	}
	switch n.Type() {
	case dcache.TypeRegular:
	case dcache.TypeDir:
		return fuse.Status(syscall.EISDIR)
	default:
		return fuse.Status(syscall.ENXIO)
	}
	out.Fh = s.handles.open(n)
	return fuse.OK
}

// Create is CREATE: mknod of a regular file and open, in one request. If
// the name appeared since the kernel's lookup (a registration whose notify
// is still queued) and O_EXCL is not set, the existing regular file is
// opened, as open(2) would.
func (s *Server) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpCreate, s.start())
	dir, st := s.dir(in.NodeId)
	if st != fuse.OK {
		return st
	}
	if st := s.viewCreate(dir, name, false); st != fuse.OK {
		return st
	}
	c := s.caller(&in.InHeader)
	ctx := s.ctx(cancel, in.Pid)
	defer ctx.release()
	n, err := s.res.Mknod(ctx, dir, name, syscall.S_IFREG|(in.Mode&dcache.PermMask), 0, 0, c)
	if err != nil {
		if toStatus(err) != fuse.Status(syscall.EEXIST) || in.Flags&syscall.O_EXCL != 0 {
			return s.status("create", err)
		}
		n, err = s.res.Lookup(ctx, dir, name, c)
		if err != nil {
			return s.status("create", err)
		}
		switch n.Type() {
		case dcache.TypeRegular:
		case dcache.TypeDir:
			return fuse.Status(syscall.EISDIR)
		default:
			return fuse.Status(syscall.EEXIST)
		}
	}
	s.entry(n, &out.EntryOut)
	out.Fh = s.handles.open(n)
	return fuse.OK
}

// file returns the node of an open handle: one of this server's, or, in
// a server that resumed a predecessor's mount, one the predecessor gave
// (handles.go): the number of a node the kernel holds, since the file is
// open.
func (s *Server) file(fh uint64) (*dcache.Node, fuse.Status) {
	n := s.handles.get(fh)
	if n == nil && s.resumed.Load() {
		if n = s.nodes.get(fh); n != nil && n.Type() != dcache.TypeRegular {
			n = nil
		}
	}
	if n == nil {
		return nil, fuse.EBADF
	}
	return n, fuse.OK
}

// Read is READ, from the handle's node: an unlinked file stays readable.
func (s *Server) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if !s.enter() {
		return nil, errShutdown
	}
	defer s.exit(OpRead, s.start())
	n, st := s.file(in.Fh)
	if st != fuse.OK {
		return nil, st
	}
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	k, err := n.ReadAt(buf, int64(in.Offset))
	if err != nil {
		return nil, s.status("read", err)
	}
	return fuse.ReadResultData(buf[:k]), fuse.OK
}

// Write is WRITE, to the handle's node.
func (s *Server) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if !s.enter() {
		return 0, errShutdown
	}
	defer s.exit(OpWrite, s.start())
	n, st := s.file(in.Fh)
	if st != fuse.OK {
		return 0, st
	}
	k, err := n.WriteAt(data, int64(in.Offset))
	if err != nil {
		return 0, s.status("write", err)
	}
	return uint32(k), fuse.OK
}

// Release is RELEASE: the handle goes, never refused. A handle a
// predecessor gave closes the open it counted (dcache.ExportNode.Opens).
func (s *Server) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if s.handles.release(in.Fh) || !s.resumed.Load() {
		return
	}
	if n := s.nodes.get(in.NodeId); n != nil {
		n.CloseInherited()
	}
}

// Flush is FLUSH: content is in memory, nothing to flush.
func (s *Server) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.OK
}

// Fsync is FSYNC: nothing is buffered below the server.
func (s *Server) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.OK
}

// FsyncDir is FSYNCDIR.
func (s *Server) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.OK
}

// Fallocate is FALLOCATE: mode 0 stores the range (files are sparse: it
// is what makes later writes there safe from ENOSPC) and grows the size
// to cover it; FALLOC_FL_KEEP_SIZE stores it without growing the size.
// Punching holes and the other modes are EOPNOTSUPP.
func (s *Server) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpFallocate, s.start())
	n, st := s.file(in.Fh)
	if st != fuse.OK {
		if n, st = s.node(in.NodeId); st != fuse.OK {
			return st
		}
	}
	const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
	if in.Mode&^keepSize != 0 {
		return fuse.Status(syscall.EOPNOTSUPP)
	}
	if in.Offset > 1<<63-1 || in.Length > 1<<63-1 {
		return fuse.Status(syscall.EFBIG)
	}
	err := n.Allocate(int64(in.Offset), int64(in.Length), in.Mode&keepSize != 0)
	return s.status("fallocate", err)
}

// Lseek is LSEEK for SEEK_DATA and SEEK_HOLE (the kernel does the other
// whences itself): files are sparse at dcache.PageSize granularity, so
// cp --sparse, tar and the like skip their holes.
func (s *Server) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpLseek, s.start())
	n, st := s.file(in.Fh)
	if st != fuse.OK {
		return st
	}
	const seekData, seekHole = 3, 4 // SEEK_DATA, SEEK_HOLE
	if in.Whence != seekData && in.Whence != seekHole {
		return fuse.EINVAL
	}
	off, err := n.SeekData(int64(in.Offset), in.Whence == seekHole)
	if err != nil {
		return s.status("lseek", err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

// entryOutSize is the size of the attributes READDIRPLUS adds per entry.
const entryOutSize = int(unsafe.Sizeof(fuse.EntryOut{}))

// minDirent is the size of the smallest READDIR record (an 8-byte name).
const minDirent = 32

// listDir reads the entries of the directory in.NodeId after in.Offset
// that can fit in in.Size bytes of records of at least perEntry bytes.
func (s *Server) listDir(cancel <-chan struct{}, in *fuse.ReadIn, perEntry int) (*dcache.Node, []dcache.DirEntry, fuse.Status) {
	dir, st := s.dir(in.NodeId)
	if st != fuse.OK {
		return nil, nil, st
	}
	max := int(in.Size)/perEntry + 1
	s.nq.ListedFrom(in.NodeId, in.Offset, in.Pid) // before the read: a change after it is noticed
	ctx := s.ctx(cancel, in.Pid)
	ents, err := s.res.ReadDir(ctx, dir, in.Offset, max, s.caller(&in.InHeader))
	if err == nil && s.view != nil {
		ents, err = s.viewReadDir(ctx, dir, ents, max, s.caller(&in.InHeader))
	}
	ctx.release()
	if err != nil {
		return nil, nil, s.status("readdir", err)
	}
	if len(ents) == 0 {
		s.nq.ListingEnded(in.NodeId, in.Pid) // the listing's last reply
	}
	return dir, ents, fuse.OK
}

// ReadDir is READDIR: ".", "..", then the children, each with its stable
// cookie as the offset. readdir never asks the loader.
func (s *Server) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpReadDir, s.start())
	_, ents, st := s.listDir(cancel, in, minDirent)
	if st != fuse.OK {
		return st
	}
	for i := range ents {
		e := &ents[i]
		if !out.AddDirEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Type.ModeBits(), Off: e.Cookie}) {
			break
		}
	}
	return fuse.OK
}

// ReadDirPlus is READDIRPLUS: READDIR with each entry's attributes, which
// the kernel turns into dentries — so each entry returned with a node id
// counts one lookup, exactly like a LOOKUP reply. "." and ".." carry no
// node id (the kernel ignores them), and neither does a name removed
// between the listing and the attribute fetch.
func (s *Server) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpReadDirPlus, s.start())
	dir, ents, st := s.listDir(cancel, in, minDirent+entryOutSize)
	if st != fuse.OK {
		return st
	}
	if in.Offset == 0 {
		s.expireListing(in.NodeId) // a cached listing lasts as long as the names it brings
	}
	for i := range ents {
		e := &ents[i]
		eo := out.AddDirLookupEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Type.ModeBits(), Off: e.Cookie})
		if eo == nil {
			break
		}
		if e.Name == "." || e.Name == ".." {
			continue
		}
		n, err := dir.Lookup(e.Name) // the namespace as it is: readdir never asks the loader
		if err != nil {
			continue // removed meanwhile: no attributes, no count
		}
		if n.Ino() != e.Ino {
			continue // replaced meanwhile: the kernel will LOOKUP it
		}
		s.entry(n, eo)
	}
	return fuse.OK
}
