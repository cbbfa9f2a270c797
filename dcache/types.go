package dcache

import (
	iofs "io/fs"
	"strings"
	"syscall"
	"time"
)

// Type is a node's file type.
type Type uint8

const (
	TypeDir     Type = iota + 1 // directory
	TypeChar                    // character device (major:minor)
	TypeBlock                   // block device (major:minor)
	TypeSymlink                 // symbolic link (target)
	TypeFifo                    // named pipe
	TypeSocket                  // Unix socket
	TypeRegular                 // small regular file, content in memory
)

var typeNames = [...]string{"invalid", "dir", "char", "block", "symlink", "fifo", "socket", "regular"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "invalid"
}

// ParseType returns the Type whose String is s ("dir", "char", ...); ok is
// false for any other string. It is the one reading of a node type's name:
// the control API, the configuration, the state file and the helper's
// stream all name types this way.
func ParseType(s string) (t Type, ok bool) {
	for i := TypeDir; int(i) < len(typeNames); i++ {
		if typeNames[i] == s {
			return i, true
		}
	}
	return 0, false
}

// Device reports whether t is a device type (TypeChar, TypeBlock): a node
// with a device number.
func (t Type) Device() bool { return t == TypeChar || t == TypeBlock }

// ModeBits returns the S_IFMT bits of t.
func (t Type) ModeBits() uint32 {
	switch t {
	case TypeDir:
		return syscall.S_IFDIR
	case TypeChar:
		return syscall.S_IFCHR
	case TypeBlock:
		return syscall.S_IFBLK
	case TypeSymlink:
		return syscall.S_IFLNK
	case TypeFifo:
		return syscall.S_IFIFO
	case TypeSocket:
		return syscall.S_IFSOCK
	case TypeRegular:
		return syscall.S_IFREG
	}
	return 0
}

// TypeOfMode returns the type of the S_IFMT bits of mode, as mknod(2) reads
// them: no type bits mean a regular file.
func TypeOfMode(mode uint32) (Type, bool) {
	switch mode & syscall.S_IFMT {
	case 0, syscall.S_IFREG:
		return TypeRegular, true
	case syscall.S_IFDIR:
		return TypeDir, true
	case syscall.S_IFCHR:
		return TypeChar, true
	case syscall.S_IFBLK:
		return TypeBlock, true
	case syscall.S_IFLNK:
		return TypeSymlink, true
	case syscall.S_IFIFO:
		return TypeFifo, true
	case syscall.S_IFSOCK:
		return TypeSocket, true
	}
	return 0, false
}

// PermMask selects the permission bits of a mode, including set-uid,
// set-gid and sticky. Modes are stored as given: 0000 stays 0000.
const PermMask = 07777

// Origin says through which door a request came.
type Origin uint8

const (
	// OriginBuiltin is the daemon itself: start-up registrations, the
	// built-in loader's registrations, negative-entry expiry.
	OriginBuiltin Origin = iota
	// OriginFUSE is a process using the mount. The kernel already knows
	// about the changes it makes.
	OriginFUSE
	// OriginLoader is the module loader or helper, including its own
	// requests through the mount once identified (by pid or socket peer
	// credential, never by a guess). Events it causes are not echoed back
	// to it.
	OriginLoader
	// OriginControl is the control API on the helper socket.
	OriginControl
	// OriginKernel is the kernel device source (modload/kernel): its
	// coldplug, hotplug and rescan registrations.
	OriginKernel
)

var originNames = [...]string{"builtin", "fuse", "loader", "control", "kernel"}

func (o Origin) String() string {
	if int(o) < len(originNames) {
		return originNames[o]
	}
	return "invalid"
}

// ParseOrigin is the inverse of Origin.String: "kernel" is OriginKernel.
func ParseOrigin(s string) (Origin, bool) {
	for o, n := range originNames {
		if s == n {
			return Origin(o), true
		}
	}
	return 0, false
}

// Caller identifies who made a request: the one identity of the tree, for
// a change, a lookup that missed (loaders get it), an attached helper and
// a control-socket peer. In JSON (the helper stream's "caller") it is
// {"pid":..,"uid":..,"gid":..}: Origin and Mount stay inside the daemon.
type Caller struct {
	Pid    uint32 `json:"pid"` // process id (0 when not a process)
	Uid    uint32 `json:"uid"`
	Gid    uint32 `json:"gid"`
	Origin Origin `json:"-"`
	// Mount, for OriginFUSE, names the mount the request came through
	// (package fs numbers its servers from 1; 0: not said). A daemon may
	// serve several mounts of one namespace (views): the kernel of the
	// mount that made a change knows of it, the others must be told.
	// dcache only carries it. It fits in Origin's padding: Caller stays
	// 16 bytes.
	Mount uint16 `json:"-"`
}

// Attr is a consistent snapshot of a node's attributes. Its times are in
// UTC, without a monotonic clock reading.
type Attr struct {
	Ino   uint64
	Gen   uint64
	Type  Type
	Mode  uint32 // S_IFMT bits | permission bits
	Nlink uint32
	Uid   uint32
	Gid   uint32
	Major uint32 // devices only
	Minor uint32 // devices only
	Size  uint64 // regular: content length; symlink: target length; dir: 0
	Atime time.Time
	Mtime time.Time
	Ctime time.Time

	// Stored is the content a regular file holds in memory: its size
	// less its holes, by pieces of pages (see file.go); 0 otherwise.
	Stored uint64
}

// Spec describes a node to Register.
type Spec struct {
	Type   Type
	Mode   uint32 // permission bits; stored as given
	Uid    uint32
	Gid    uint32
	Major  uint32 // TypeChar, TypeBlock
	Minor  uint32 // TypeChar, TypeBlock
	Target string // TypeSymlink
	// Atime and Mtime, if not zero, are the node's times instead of the
	// time of registration (a restored node keeps the times it had).
	Atime time.Time
	Mtime time.Time
	// Ino, if not zero, is the node's inode number instead of a fresh
	// one: a restore after a restart gives a node the number the kernel
	// may still hold for it (package state). The inode counter is raised
	// to it if below. dcache keeps no table from inode number to node,
	// so the caller keeps the numbers it gives unique; 1 (the root) is
	// EINVAL. Only the registered node takes it, never a parent made on
	// the way (unless Options.RegisterHook gives the parent one).
	Ino uint64
}

// DirEntry is one entry returned by ReadDir. Cookie is the entry's readdir
// offset: a later ReadDir(Cookie, ...) continues after it.
type DirEntry struct {
	Name   string
	Ino    uint64
	Type   Type
	Cookie uint64
}

// SetAttrIn selects and carries the attributes SetAttr changes.
type SetAttrIn struct {
	Valid SetAttrMask
	Mode  uint32 // permission bits
	Uid   uint32
	Gid   uint32
	Size  uint64
	Atime time.Time // with SetAtime (SetAtimeNow: the namespace clock)
	Mtime time.Time // with SetMtime (SetMtimeNow: the namespace clock)
}

// SetAttrMask says which fields of SetAttrIn are valid.
type SetAttrMask uint32

const (
	SetMode SetAttrMask = 1 << iota
	SetUid
	SetGid
	SetSize
	SetAtime
	SetMtime
	SetAtimeNow
	SetMtimeNow
)

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = 1 << 0 // RENAME_NOREPLACE
	RenameExchange  = 1 << 1 // RENAME_EXCHANGE
)

// NameMax is the longest name, in bytes.
const NameMax = 255

// Statfs reports the namespace's size and limits.
type Statfs struct {
	Nodes    uint64 // linked nodes, the root included
	MaxNodes uint64
	Bytes    uint64 // content bytes of linked regular files
	MaxBytes uint64
	NameMax  uint32 // 255
}

func pathErr(op, path string, e syscall.Errno) error {
	return &iofs.PathError{Op: op, Path: path, Err: e}
}

// CheckName returns nil if name can name a directory entry.
func CheckName(name string) error {
	switch {
	case len(name) > NameMax:
		return pathErr("name", name, syscall.ENAMETOOLONG)
	case name == "" || name == "." || name == "..":
		return pathErr("name", name, syscall.EINVAL)
	case strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0:
		// Two IndexByte scans, not ContainsAny: every request with a
		// name comes here, and ContainsAny walks the name rune by rune.
		return pathErr("name", name, syscall.EINVAL)
	}
	return nil
}
