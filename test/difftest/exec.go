package difftest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	renameNoreplace = unix.RENAME_NOREPLACE
	renameExchange  = unix.RENAME_EXCHANGE
	oCreat          = unix.O_CREAT
	oTrunc          = unix.O_TRUNC
	oAppend         = unix.O_APPEND
)

func renameFlags(f int) string {
	switch f {
	case 0:
		return "0"
	case renameNoreplace:
		return "RENAME_NOREPLACE"
	case renameExchange:
		return "RENAME_EXCHANGE"
	}
	return fmt.Sprintf("%#x", f)
}

func openFlags(f int) string {
	s := []string{"O_WRONLY", "O_NONBLOCK"}
	if f&oCreat != 0 {
		s = append(s, "O_CREAT")
	}
	if f&oTrunc != 0 {
		s = append(s, "O_TRUNC")
	}
	if f&oAppend != 0 {
		s = append(s, "O_APPEND")
	}
	return strings.Join(s, "|")
}

// Result is what an operation returned: a value and an errno per system
// call it made, written out so that two results compare as strings.
type Result string

func errStr(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// Apply runs op under dir through system calls and returns its result.
func Apply(dir string, op Op) Result {
	p := filepath.Join(dir, op.Path)
	q := filepath.Join(dir, op.Path2)
	var err error
	switch op.Kind {
	case Mknod:
		err = unix.Mknod(p, op.Mode, int(op.Dev))
	case Mkdir:
		err = unix.Mkdir(p, op.Mode)
	case Symlink:
		err = unix.Symlink(op.Path, q)
	case Link:
		err = unix.Link(p, q)
	case Rename:
		err = unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, q, uint(op.Flags))
	case Unlink:
		err = unix.Unlink(p)
	case Rmdir:
		err = unix.Rmdir(p)
	case Chmod:
		err = unix.Chmod(p, op.Mode)
	case Truncate:
		err = unix.Truncate(p, op.Size)
	case Write:
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|op.Flags, 0o644)
		if err != nil {
			return Result("open " + errStr(err))
		}
		data := bytes.Repeat([]byte{op.Fill}, op.Len)
		var n int
		if op.Flags&oAppend != 0 {
			n, err = unix.Write(fd, data)
		} else {
			n, err = unix.Pwrite(fd, data, op.Off)
		}
		cerr := unix.Close(fd)
		return Result(fmt.Sprintf("open ok, write %d %s, close %s", n, errStr(err), errStr(cerr)))
	default:
		panic("difftest: unknown op " + string(op.Kind))
	}
	return Result(errStr(err))
}

// Node is the state of one name, as compared between the two trees. Times
// and inode numbers differ by nature and are left out; hard links are
// compared as structure (LinkOf: the first path, in walk order, naming the
// same inode). A directory's size is left out (tmpfs counts 20 bytes a
// name, others 0 or 4096: no program relies on it).
type Node struct {
	Path    string
	Err     string // lstat's errno, "ok" when the name exists
	Type    string
	Perm    uint32
	Nlink   uint64
	Size    int64
	Rdev    uint64
	Uid     uint32
	Gid     uint32
	Target  string // symlink
	Content string // regular file: size and sha256
	LinkOf  string
}

func (n Node) String() string {
	if n.Err != "ok" {
		return fmt.Sprintf("%s: %s", n.Path, n.Err)
	}
	s := fmt.Sprintf("%s: %s %#o nlink=%d uid=%d gid=%d", n.Path, n.Type, n.Perm, n.Nlink, n.Uid, n.Gid)
	switch n.Type {
	case "file":
		s += fmt.Sprintf(" size=%d %s", n.Size, n.Content)
	case "symlink":
		s += fmt.Sprintf(" -> %q", n.Target)
	case "chardev", "blockdev":
		s += fmt.Sprintf(" %d:%d", unix.Major(n.Rdev), unix.Minor(n.Rdev))
	}
	if n.LinkOf != "" {
		s += " (same inode as " + n.LinkOf + ")"
	}
	return s
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type%#o", mode&unix.S_IFMT)
}

// Stat returns the state of dir/rel (without following a final symlink).
func Stat(dir, rel string) Node {
	p := filepath.Join(dir, rel)
	n := Node{Path: rel}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		n.Err = errStr(err)
		return n
	}
	n.Err = "ok"
	n.Type = typeName(st.Mode)
	n.Perm = st.Mode & 0o7777
	n.Nlink = st.Nlink
	n.Uid, n.Gid = st.Uid, st.Gid
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		n.Size = st.Size
		n.Content = content(p)
	case unix.S_IFLNK:
		n.Size = st.Size
		t, err := os.Readlink(p)
		if err != nil {
			t = "readlink: " + errStr(err)
		}
		n.Target = t
	case unix.S_IFCHR, unix.S_IFBLK:
		n.Rdev = st.Rdev
	}
	return n
}

func content(p string) string {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "open: " + errStr(err)
	}
	defer unix.Close(fd)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	total := 0
	for {
		k, err := unix.Read(fd, buf)
		if err != nil {
			return "read: " + errStr(err)
		}
		if k == 0 {
			break
		}
		h.Write(buf[:k])
		total += k
	}
	return fmt.Sprintf("%dB:%x", total, h.Sum(nil)[:6])
}

// Snapshot walks dir and returns the state of every name under it, in
// lexical order, with hard links resolved to LinkOf.
func Snapshot(dir string) ([]Node, error) {
	var out []Node
	firstPath := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		n := Stat(dir, rel)
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && n.Type != "dir" {
			if f, ok := firstPath[st.Ino]; ok {
				n.LinkOf = f
			} else {
				firstPath[st.Ino] = rel
			}
		}
		out = append(out, n)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// DiffSnapshots describes the differences between two snapshots, "" when
// they are equal.
func DiffSnapshots(a, b []Node, nameA, nameB string) string {
	ma := map[string]Node{}
	for _, n := range a {
		ma[n.Path] = n
	}
	mb := map[string]Node{}
	for _, n := range b {
		mb[n.Path] = n
	}
	var keys []string
	for k := range ma {
		keys = append(keys, k)
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		x, okx := ma[k]
		y, oky := mb[k]
		switch {
		case !okx:
			fmt.Fprintf(&sb, "  only on %s: %s\n", nameB, y)
		case !oky:
			fmt.Fprintf(&sb, "  only on %s: %s\n", nameA, x)
		case x != y:
			fmt.Fprintf(&sb, "  %s: %s\n  %s: %s\n", nameA, x, nameB, y)
		}
	}
	return sb.String()
}
