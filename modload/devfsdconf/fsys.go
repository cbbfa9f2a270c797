package devfsdconf

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// OSFS is the FS of the files outside the mount (the saved copies of COPY
// and RESTORE), through system calls. It never follows a symlink.
type OSFS struct{}

var _ FS = OSFS{}

// Lstat implements FS.
func (OSFS) Lstat(p string) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return Stat{}, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	s := Stat{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}
	if st.Mode&TypeMask == TypeLink {
		t, err := os.Readlink(p)
		if err != nil {
			return Stat{}, err
		}
		s.Target = t
	}
	return s, nil
}

// Chmod implements FS.
func (OSFS) Chmod(p string, perm uint32) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	if st.Mode&TypeMask == TypeLink {
		return nil // a symlink's mode means nothing on Linux
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, p, perm&07777, 0); err != nil {
		return &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	return nil
}

// Chown implements FS.
func (OSFS) Chown(p string, uid, gid int64) error {
	if err := unix.Lchown(p, int(uid), int(gid)); err != nil {
		return &os.PathError{Op: "chown", Path: p, Err: err}
	}
	return nil
}

// Make implements FS. The mode is set after the owner, so that neither the
// umask nor a chown clearing set-id bits changes it.
func (f OSFS) Make(p string, st Stat, perm uint32) error {
	var err error
	switch t := st.Mode & TypeMask; t {
	case TypeDir:
		err = unix.Mkdir(p, 0700)
	case TypeLink:
		err = unix.Symlink(st.Target, p)
	case TypeChar, TypeBlock, TypeFifo, TypeSock:
		err = unix.Mknod(p, t|0600, int(unix.Mkdev(st.Major, st.Minor)))
	case TypeReg:
		var fd int
		fd, err = unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0600)
		if err == nil {
			unix.Close(fd)
		}
	default:
		return fmt.Errorf("make %s: unknown file type %#o", p, t)
	}
	if err != nil {
		return &os.PathError{Op: "make", Path: p, Err: err}
	}
	if err := f.Chown(p, int64(st.UID), int64(st.GID)); err != nil {
		return err
	}
	return f.Chmod(p, perm)
}

// Remove implements FS.
func (OSFS) Remove(p string) error {
	if err := unix.Unlink(p); err != nil {
		return &os.PathError{Op: "remove", Path: p, Err: err}
	}
	return nil
}

// MkdirAll implements FS.
func (OSFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0755) }

// ReadDir implements FS.
func (OSFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// Router sends the paths inside Mountpoint to Mount, as paths relative to
// the mount ("" for its root, "snd/timer"), and every other path to
// Other. The helper's Mount talks to the daemon through its control
// socket rather than through the mount: a change through the mount to a
// name whose lookup is waiting on the helper would wait for that very
// lookup in the kernel.
type Router struct {
	Mountpoint string
	Mount      FS
	Other      FS
}

var _ FS = Router{}

func (r Router) route(p string) (FS, string) {
	p = path.Clean(p)
	if p == r.Mountpoint {
		return r.Mount, ""
	}
	if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(r.Mountpoint, "/")+"/"); ok && r.Mountpoint != "" {
		return r.Mount, rel
	}
	return r.Other, p
}

// Lstat implements FS.
func (r Router) Lstat(p string) (Stat, error) { f, q := r.route(p); return f.Lstat(q) }

// Chmod implements FS.
func (r Router) Chmod(p string, perm uint32) error { f, q := r.route(p); return f.Chmod(q, perm) }

// Chown implements FS.
func (r Router) Chown(p string, uid, gid int64) error {
	f, q := r.route(p)
	return f.Chown(q, uid, gid)
}

// Make implements FS.
func (r Router) Make(p string, st Stat, perm uint32) error {
	f, q := r.route(p)
	return f.Make(q, st, perm)
}

// Remove implements FS.
func (r Router) Remove(p string) error { f, q := r.route(p); return f.Remove(q) }

// MkdirAll implements FS.
func (r Router) MkdirAll(dir string) error { f, q := r.route(dir); return f.MkdirAll(q) }

// ReadDir implements FS.
func (r Router) ReadDir(dir string) ([]string, error) { f, q := r.route(dir); return f.ReadDir(q) }
