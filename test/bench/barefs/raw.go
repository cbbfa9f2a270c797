// rawFS, for -raw: the floor. It serves the populated tree of -populate
// straight from go-fuse's raw API, computing every answer from the request:
// no node table, no locks, no allocation. It answers only what the stat
// cases of fusebench need (LOOKUP, GETATTR, FORGET, plus STATFS and ACCESS
// should the kernel ask); everything else is go-fuse's default (ENOSYS).
// Its CPU per request is what go-fuse's request loop (read(2), dispatch,
// writev(2)) and the kernel cost with nothing behind them: the cheapest
// answer go-fuse's raw API allows.

package main

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Node ids of rawFS, all derived arithmetically:
//
//	1                          the root
//	2+k                        the k-th populated directory, k < len(dirs)
//	fileBase[k] + i            its i-th file (PopulateName(i)), i < dirs[k].n
//
// with fileBase[0] = 2+len(dirs) and fileBase[k+1] = fileBase[k]+dirs[k].n.
type rawFS struct {
	fuse.RawFileSystem // the defaults: ENOSYS

	dirs     []populateDir
	fileBase []uint64
	end      uint64 // one past the last file's id

	entry, attr, negative time.Duration
	time                  uint64 // atime, mtime and ctime of every node
}

func newRawFS(pop []populateDir, entry, attr, negative time.Duration) *rawFS {
	r := &rawFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		dirs:          pop,
		entry:         entry,
		attr:          attr,
		negative:      negative,
		time:          uint64(time.Now().Unix()),
	}
	next := uint64(2 + len(pop))
	for _, p := range pop {
		r.fileBase = append(r.fileBase, next)
		next += uint64(p.n)
	}
	r.end = next
	return r
}

// fill sets out to the attributes of node id; false if there is no such node.
func (r *rawFS) fill(id uint64, out *fuse.Attr) bool {
	*out = fuse.Attr{}
	switch {
	case id == 1:
		out.Mode = syscall.S_IFDIR | 0755
		out.Nlink = uint32(2 + len(r.dirs))
	case id < 2+uint64(len(r.dirs)):
		out.Mode = syscall.S_IFDIR | 0755
		out.Nlink = 2
	case id < r.end:
		out.Mode = syscall.S_IFREG | 0644
		out.Nlink = 1
	default:
		return false
	}
	out.Ino = id
	out.Atime, out.Mtime, out.Ctime = r.time, r.time, r.time
	out.Blksize = 4096
	return true
}

// fileIndex parses PopulateName(i) ("f" and at least 7 digits, zero-padded
// to 7) without allocating; -1 if name is not such a name.
func fileIndex(name string) int {
	if len(name) < 8 || len(name) > 19 || name[0] != 'f' || (len(name) > 8 && name[1] == '0') {
		return -1
	}
	i := 0
	for k := 1; k < len(name); k++ {
		c := name[k]
		if c < '0' || c > '9' {
			return -1
		}
		i = i*10 + int(c-'0')
	}
	return i
}

func (r *rawFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	id := uint64(0)
	switch p := header.NodeId; {
	case p == 1:
		for k := range r.dirs {
			if r.dirs[k].dir == name {
				id = 2 + uint64(k)
				break
			}
		}
	case p < 2+uint64(len(r.dirs)):
		k := p - 2
		if i := fileIndex(name); i >= 0 && i < r.dirs[k].n {
			id = r.fileBase[k] + uint64(i)
		}
	}
	if id == 0 {
		if r.negative > 0 {
			// A negative entry, as go-fuse's fs bridge makes one.
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(r.negative)
			return fuse.OK
		}
		return fuse.ENOENT
	}
	r.fill(id, &out.Attr)
	out.NodeId = id
	out.Generation = 1
	out.SetEntryTimeout(r.entry)
	out.SetAttrTimeout(r.attr)
	return fuse.OK
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !r.fill(input.NodeId, &out.Attr) {
		return fuse.ENOENT
	}
	out.SetTimeout(r.attr)
	return fuse.OK
}

// Forget: the nodes are arithmetic; there is nothing to forget.
func (r *rawFS) Forget(nodeid, nlookup uint64) {}

func (r *rawFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status { return fuse.OK }

func (r *rawFS) StatFs(cancel <-chan struct{}, header *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	*out = fuse.StatfsOut{}
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	out.Files = r.end - 1
	return fuse.OK
}
