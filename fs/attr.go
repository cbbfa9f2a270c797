package fs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
)

// blockSize is the preferred I/O size reported in st_blksize and the
// block size of STATFS.
const blockSize = 4096

// fillAttr copies a dcache snapshot into a FUSE attribute block. Modes are
// passed through as stored: 0000 stays 0000.
func fillAttr(a *dcache.Attr, out *fuse.Attr) {
	out.Ino = a.Ino
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	if a.Type == dcache.TypeRegular { // sparse: what it stores, as on tmpfs
		out.Blocks = (a.Stored + 511) / 512
	}
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid = a.Uid
	out.Gid = a.Gid
	out.Rdev = 0
	if a.Type.Device() {
		out.Rdev = uint32(unix.Mkdev(a.Major, a.Minor)) // new_encode_dev for 12:20-bit numbers
	}
	out.Blksize = blockSize
	setTime(a.Atime, &out.Atime, &out.Atimensec)
	setTime(a.Mtime, &out.Mtime, &out.Mtimensec)
	setTime(a.Ctime, &out.Ctime, &out.Ctimensec)
}

func setTime(t time.Time, sec *uint64, nsec *uint32) {
	*sec = uint64(t.Unix())
	*nsec = uint32(t.Nanosecond())
}

// splitDev decodes a FUSE rdev (the kernel's new_encode_dev).
func splitDev(rdev uint32) (major, minor uint32) {
	return unix.Major(uint64(rdev)), unix.Minor(uint64(rdev))
}
