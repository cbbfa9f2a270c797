// Package difftest is the differential test framework of issue 4: the same
// random sequence of namespace and file operations (mknod, mkdir, symlink,
// link, rename, unlink, rmdir, chmod, truncate, write) runs through system
// calls on two directories — a tmpfs reference and the file system under
// test — and every result, every errno, the state of every name an
// operation touched, and finally the whole tree are compared.
//
// A sequence is a pure function of its seed (Generate), so a divergence is
// replayed from the seed alone. Operations are confined to a names space
// small enough ("a".."d", up to three deep) that most operations collide
// with earlier ones: EEXIST, ENOENT, ENOTDIR, ENOTEMPTY, EISDIR, EXDEV-free
// renames over every kind of node, hard links and symlinks (relative, some
// dangling, some escaping one level) all occur in a few dozen operations.
//
// Device nodes are only char 1:3 and 1:5 (null, zero), so a write that
// opens one through a mount with `dev` touches nothing real.
package difftest

import (
	"fmt"
	"math/rand/v2"
	"path"
	"strings"
)

// Kind names an operation.
type Kind string

// The operations.
const (
	Mknod    Kind = "mknod"
	Mkdir    Kind = "mkdir"
	Symlink  Kind = "symlink"
	Link     Kind = "link"
	Rename   Kind = "rename"
	Unlink   Kind = "unlink"
	Rmdir    Kind = "rmdir"
	Chmod    Kind = "chmod"
	Truncate Kind = "truncate"
	Write    Kind = "write"
)

// Op is one operation. Paths are relative to the sequence's working
// directory.
type Op struct {
	Kind  Kind
	Path  string
	Path2 string // link/rename: the new name; symlink: Path is the target
	Mode  uint32 // mknod (type|perm), mkdir, chmod (perm)
	Dev   uint64 // mknod of a char device
	Flags int    // rename: renameat2 flags; write: extra open flags
	Size  int64  // truncate
	Off   int64  // write
	Len   int    // write: length of the data
	Fill  byte   // write: the data is Len copies of Fill
}

func (o Op) String() string {
	switch o.Kind {
	case Mknod:
		return fmt.Sprintf("mknod(%q, %#o, %d:%d)", o.Path, o.Mode, o.Dev>>8, o.Dev&0xff)
	case Mkdir, Chmod:
		return fmt.Sprintf("%s(%q, %#o)", o.Kind, o.Path, o.Mode)
	case Symlink:
		return fmt.Sprintf("symlink(%q, %q)", o.Path, o.Path2)
	case Link:
		return fmt.Sprintf("link(%q, %q)", o.Path, o.Path2)
	case Rename:
		return fmt.Sprintf("renameat2(%q, %q, %s)", o.Path, o.Path2, renameFlags(o.Flags))
	case Truncate:
		return fmt.Sprintf("truncate(%q, %d)", o.Path, o.Size)
	case Write:
		return fmt.Sprintf("write(%q, flags %s, off %d, %d×%q)", o.Path, openFlags(o.Flags), o.Off, o.Len, o.Fill)
	default:
		return fmt.Sprintf("%s(%q)", o.Kind, o.Path)
	}
}

// Paths returns the names the operation touches, for the per-operation
// state comparison: its arguments and their parent directories.
func (o Op) Paths() []string {
	var ps []string
	add := func(p string) {
		if p == "" {
			return
		}
		ps = append(ps, p)
		if d := path.Dir(p); d != "." {
			ps = append(ps, d)
		}
	}
	if o.Kind != Symlink {
		add(o.Path)
	}
	add(o.Path2)
	return ps
}

var (
	names = []string{"a", "b", "c", "d"}
	perms = []uint32{0, 0o644, 0o755, 0o600, 0o777, 0o444, 0o4755, 0o2755, 0o1777, 0o6777, 0o2775}
	// symlink targets: relative, some dangling, some escaping the
	// working directory by one level (into the sequence directory,
	// which holds nothing else), one absolute-free "" is left out:
	// symlink("") is ENOENT everywhere and tells nothing.
	targets = []string{"a", "b", "c/d", "a/b/c", "../a", "../w/a", "nonexistent", ".", "..", "b/"}
	sizes   = []int64{0, 1, 100, 4096, 5000, 65536}
)

func (g *gen) name() string {
	n := 1
	switch r := g.r.IntN(100); {
	case r >= 85:
		n = 3
	case r >= 50:
		n = 2
	}
	parts := make([]string, n)
	for i := range parts {
		parts[i] = names[g.r.IntN(len(names))]
	}
	return strings.Join(parts, "/")
}

type gen struct{ r *rand.Rand }

// Generate returns the sequence of n operations for seed.
func Generate(seed uint64, n int) []Op {
	g := &gen{rand.New(rand.NewPCG(seed, 0x64657666736421))}
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = g.op()
	}
	return ops
}

func (g *gen) perm() uint32 { return perms[g.r.IntN(len(perms))] }

func (g *gen) op() Op {
	// Weights: creation is frequent so the tree fills up and later
	// operations hit existing names.
	switch r := g.r.IntN(100); {
	case r < 18:
		o := Op{Kind: Mknod, Path: g.name()}
		switch t := g.r.IntN(10); {
		case t < 4:
			o.Mode = 0o100000 | g.perm() // S_IFREG
		case t < 5:
			o.Mode = g.perm() // type 0: a regular file
		case t < 6:
			o.Mode = 0o010000 | g.perm() // S_IFIFO
		case t < 7:
			o.Mode = 0o140000 | g.perm() // S_IFSOCK
		case t < 9:
			o.Mode, o.Dev = 0o020000|g.perm(), 1<<8|3 // char 1:3 null
		default:
			o.Mode, o.Dev = 0o020000|g.perm(), 1<<8|5 // char 1:5 zero
		}
		return o
	case r < 34:
		return Op{Kind: Mkdir, Path: g.name(), Mode: g.perm()}
	case r < 41:
		return Op{Kind: Symlink, Path: targets[g.r.IntN(len(targets))], Path2: g.name()}
	case r < 48:
		return Op{Kind: Link, Path: g.name(), Path2: g.name()}
	case r < 60:
		o := Op{Kind: Rename, Path: g.name(), Path2: g.name()}
		switch f := g.r.IntN(10); {
		case f < 2:
			o.Flags = renameNoreplace
		case f < 3:
			o.Flags = renameExchange
		}
		return o
	case r < 67:
		return Op{Kind: Unlink, Path: g.name()}
	case r < 74:
		return Op{Kind: Rmdir, Path: g.name()}
	case r < 80:
		return Op{Kind: Chmod, Path: g.name(), Mode: g.perm()}
	case r < 87:
		return Op{Kind: Truncate, Path: g.name(), Size: sizes[g.r.IntN(len(sizes))]}
	default:
		o := Op{Kind: Write, Path: g.name(), Off: []int64{0, 0, 7, 4095, 10000}[g.r.IntN(5)],
			Len: 1 + g.r.IntN(600), Fill: byte('A' + g.r.IntN(26))}
		if g.r.IntN(3) == 0 {
			o.Flags |= oCreat
		}
		if g.r.IntN(4) == 0 {
			o.Flags |= oTrunc
		}
		if g.r.IntN(6) == 0 {
			o.Flags |= oAppend
		}
		return o
	}
}
