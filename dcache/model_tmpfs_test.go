//go:build linux && amd64

package dcache

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// tmpfsSystem runs the model's operations against a real tmpfs directory,
// to check that the model (and so dcache) has tmpfs's errno semantics.
// Register and Unregister are emulated the way a shell would (mkdir -p and
// mknod; rm -r).
type tmpfsSystem struct{ root string }

func (s *tmpfsSystem) p(rel string) string { return filepath.Join(s.root, rel) }

func sysErr(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if le, ok := err.(*os.LinkError); ok {
		err = le.Err
	}
	return err.(syscall.Errno)
}

const sysRenameat2 = 316 // linux/amd64

func renameat2(from, to string, flags uint32) error {
	f, err := syscall.BytePtrFromString(from)
	if err != nil {
		return err
	}
	t, err := syscall.BytePtrFromString(to)
	if err != nil {
		return err
	}
	const atFdcwd = -100
	fd := atFdcwd
	_, _, e := syscall.Syscall6(sysRenameat2, uintptr(fd), uintptr(unsafe.Pointer(f)),
		uintptr(fd), uintptr(unsafe.Pointer(t)), uintptr(flags), 0)
	if e != 0 {
		return e
	}
	return nil
}

func (s *tmpfsSystem) mknod(p string, t Type, mode uint32) error {
	if t == TypeDir {
		return syscall.Mkdir(p, mode)
	}
	return syscall.Mknod(p, t.ModeBits()|mode, 1<<8|3)
}

func (s *tmpfsSystem) apply(o op) syscall.Errno {
	switch o.kind {
	case opMkdir:
		return sysErr(syscall.Mkdir(s.p(o.a), o.mode))
	case opMknod:
		return sysErr(s.mknod(s.p(o.a), o.typ, o.mode))
	case opSymlink:
		return sysErr(syscall.Symlink("/nonexistent-target", s.p(o.a)))
	case opLink:
		return sysErr(syscall.Link(s.p(o.a), s.p(o.b)))
	case opUnlink:
		return sysErr(syscall.Unlink(s.p(o.a)))
	case opRmdir:
		return sysErr(syscall.Rmdir(s.p(o.a)))
	case opRename:
		return sysErr(renameat2(s.p(o.a), s.p(o.b), o.flags))
	case opChmod:
		return sysErr(syscall.Chmod(s.p(o.a), o.mode))
	case opRegister:
		parts := strings.Split(o.a, "/")
		for i := range parts[:len(parts)-1] {
			q := s.p(strings.Join(parts[:i+1], "/"))
			var st syscall.Stat_t
			if err := syscall.Lstat(q, &st); err != nil {
				if err := syscall.Mkdir(q, 0755); err != nil {
					return sysErr(err)
				}
			} else if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				return syscall.ENOTDIR
			}
		}
		return sysErr(s.mknod(s.p(o.a), o.typ, o.mode))
	case opUnregister:
		var st syscall.Stat_t
		if err := syscall.Lstat(s.p(o.a), &st); err != nil {
			return sysErr(err)
		}
		if err := os.RemoveAll(s.p(o.a)); err != nil {
			return sysErr(err)
		}
		return 0
	}
	panic("unknown op")
}

func (s *tmpfsSystem) snapshot() map[string]snap {
	out := map[string]snap{}
	err := filepath.Walk(s.root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path == s.root {
			return nil
		}
		st := info.Sys().(*syscall.Stat_t)
		t, _ := TypeOfMode(st.Mode)
		rel, _ := filepath.Rel(s.root, path)
		out[rel] = snap{typ: t, nlink: int(st.Nlink), mode: st.Mode & PermMask, id: st.Ino}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return out
}

// TestModelMatchesTmpfs checks the reference model against a real tmpfs
// (/dev/shm), as root. It validates the model that TestModel holds dcache
// to.
func TestModelMatchesTmpfs(t *testing.T) {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod)")
	}
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic {
		t.Skip("no tmpfs at /dev/shm")
	}
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	seqs := *modelSeqs / 10
	if testing.Short() {
		seqs /= 10
	}
	base := int64(os.Getpid()) << 20
	if *modelSeed != 0 {
		base, seqs = *modelSeed, 1
	}
	for i := 0; i < seqs; i++ {
		dir, err := os.MkdirTemp("/dev/shm", "dcache-model-")
		if err != nil {
			t.Fatal(err)
		}
		seed := base + int64(i)
		d := runSequence(seed, *modelLen, newModel(), &tmpfsSystem{root: dir})
		os.RemoveAll(dir)
		if d != "" {
			t.Fatalf("model diverges from tmpfs, seed %d (replay: -run TestModelMatchesTmpfs -model.seed=%d):\n%s", seed, seed, d)
		}
	}
}
