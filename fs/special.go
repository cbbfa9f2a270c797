package fs

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// The special mounts of a mount.
//
// A /dev a container can use has two things an in-memory tree cannot
// give: terminals and POSIX shared memory. Each mount (the main one and
// each view) gets, once it is serving, its own
//
//	pts  a devpts instance: newinstance, ptmxmode=0666, mode=0620, gid of
//	     the group tty; nosuid, noexec. Its pty numbers are its own, so
//	     two mounts (a view per container) each start at pts/0 and never
//	     see each other's terminals.
//	shm  a tmpfs: mode 1777, size SpecialOpts.ShmSize (default 64 MiB,
//	     what Docker, Podman and Kubernetes give a container's /dev/shm);
//	     nosuid, nodev.
//
// ptmx stays the char device 5:2 of the base set (and of the kernel's
// devtmpfs): since Linux 4.7, opening a 5:2 node finds the devpts
// instance mounted on "pts" in the same directory as the node it was
// opened through, so MNT/ptmx opens MNT/pts's instance, and /dev/ptmx its
// own once MNT is bound on /dev (with its submounts: mount --rbind).
// Programs that stat or lstat ptmx see a char device 5:2 either way,
// as on a host.
//
// Mounting goes through the kernel's path walk of MNT/pts, which is a
// LOOKUP on this server: MountSpecials must be called once the server is
// serving, and never from inside a FUSE handler. It uses the new mount
// API (fsopen, fsmount, move_mount; Linux 5.2), so that a file system the
// kernel lacks or refuses is reported before the mount point is touched,
// with the kernel's own message; on an older kernel, mount(2). Each
// special keeps the descriptor of its mount's root, through which Close
// detaches it (umount2 of /proc/self/fd/N with MNT_DETACH): without a
// walk through this server, so it works while the server stops, and
// lazily, so a terminal still open keeps its instance until it closes.
//
// While mounted, the directories refuse rmdir and rename (EBUSY) on every
// mount of the namespace, as a real /dev does: the kernel refuses them
// itself in the mount namespace where the special is mounted, but a
// process in another one (a container whose /dev is a plain bind of MNT)
// would reach the server, and removing the name would detach the special
// mount.

// SpecialMode says whether a special is mounted.
type SpecialMode string

const (
	SpecialOff      SpecialMode = "off"      // not mounted
	SpecialOn       SpecialMode = "on"       // mounted if possible; a failure is logged and the mount runs without it
	SpecialRequired SpecialMode = "required" // mounted, or MountSpecials fails
)

// DefaultShmSize is the size of shm's tmpfs when SpecialOpts.ShmSize is 0:
// 64 MiB, the /dev/shm of a Docker, Podman or Kubernetes container.
const DefaultShmSize = 64 << 20

// SpecialOpts configure MountSpecials. The zero value mounts nothing.
type SpecialOpts struct {
	Pts SpecialMode // "" is SpecialOff
	Shm SpecialMode // "" is SpecialOff
	// ShmSize is the size of shm's tmpfs in bytes (rounded up to pages by
	// the kernel); 0 is DefaultShmSize.
	ShmSize int64
	// PtsGid is the group of new ptys; nil: the group tty's, looked up
	// in the group database (gid 5, Linux's usual tty group and Docker's
	// choice, if the database has no group tty or cannot be read). The
	// gid used is in the log line of the mount.
	PtsGid *uint32
}

// Specials are the special mounts of one mount, made by MountSpecials.
type Specials struct {
	log *zap.Logger

	mu sync.Mutex // a leaf
	// Guarded by mu:
	mounted []*special
	closed  bool
}

// special is one mounted special.
type special struct {
	name   string // "pts", "shm"
	fstype string
	target string       // the mount point, for logs
	root   *os.File     // the mount's root (O_PATH or an fsmount descriptor)
	node   *dcache.Node // the directory it is mounted on, pinned
}

// SpecialInfo describes one mounted special.
type SpecialInfo struct {
	Name   string // "pts", "shm"
	FSType string // "devpts", "tmpfs"
	Path   string // the mount point
}

// Mounted lists the specials mounted now, pts first.
func (sp *Specials) Mounted() []SpecialInfo {
	if sp == nil {
		return nil
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var r []SpecialInfo
	for _, m := range sp.mounted {
		r = append(r, SpecialInfo{Name: m.name, FSType: m.fstype, Path: m.target})
	}
	return r
}

// specialDef is what is mounted for one special.
type specialDef struct {
	name   string
	fstype string
	mode   uint32 // of the directory, when MountSpecials makes it
	// params are the file system's parameters: key=value, or key alone
	// for a flag.
	params []string
	attrs  uint64 // MOUNT_ATTR_*
}

// MountSpecials mounts the specials o asks for on the server's mount (see
// "The special mounts of a mount" above), on the directories pts and shm
// of the namespace (PrepareSpecials makes them). In a view that hides one
// of them, that one is not mounted. A
// special that cannot be mounted is logged and left out, unless it is
// SpecialRequired: then whatever was mounted is undone and the error
// returned. Once it has succeeded, it may not be called again on the
// server. Shutdown calls Close first, so the specials never outlive the
// FUSE mount; a caller may Close them before.
func (s *Server) MountSpecials(o SpecialOpts) (*Specials, error) {
	sp := &Specials{log: s.log.Named("specials")}
	if s.srv == nil || s.mountpoint == "" {
		return nil, errors.New("fs: MountSpecials before Mount")
	}
	defs, err := specialDefs(o)
	if err != nil {
		return nil, err
	}
	s.specialsMu.Lock()
	defer s.specialsMu.Unlock()
	switch {
	case s.specialsShut:
		return nil, errors.New("fs: MountSpecials after Shutdown")
	case s.specials != nil:
		return nil, errors.New("fs: MountSpecials called twice")
	}
	for _, d := range defs {
		mode := SpecialOn
		if d.name == "pts" {
			mode = o.Pts
		} else {
			mode = o.Shm
		}
		m, err := s.mountSpecial(d)
		if err != nil {
			if mode == SpecialRequired {
				sp.Close()
				return nil, fmt.Errorf("%s is required: %w", d.name, err)
			}
			sp.log.Warn("running without a special mount (configure it off to silence this)",
				zap.String("special", d.name), zap.Error(err))
			continue
		}
		sp.mounted = append(sp.mounted, m)
		sp.log.Info("mounted", zap.String("special", d.name), zap.String("fstype", d.fstype),
			zap.String("path", m.target), zap.Strings("options", d.params))
	}
	s.specials = sp
	return sp, nil
}

// specialDefs returns what o asks to mount, validated.
func specialDefs(o SpecialOpts) ([]specialDef, error) {
	var defs []specialDef
	for _, c := range []struct {
		name string
		m    SpecialMode
	}{{"pts", o.Pts}, {"shm", o.Shm}} {
		switch c.m {
		case "", SpecialOff, SpecialOn, SpecialRequired:
		default:
			return nil, fmt.Errorf("fs: %s: %q is not off, on or required", c.name, c.m)
		}
	}
	if o.Pts == SpecialOn || o.Pts == SpecialRequired {
		gid := ptsGid(o.PtsGid)
		defs = append(defs, specialDef{name: "pts", fstype: "devpts", mode: 0o755,
			params: []string{"newinstance", "ptmxmode=0666", "mode=0620", "gid=" + strconv.FormatUint(uint64(gid), 10)},
			attrs:  unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC})
	}
	if o.Shm == SpecialOn || o.Shm == SpecialRequired {
		size := o.ShmSize
		if size < 0 {
			return nil, fmt.Errorf("fs: shm size %d is negative", size)
		}
		if size == 0 {
			size = DefaultShmSize
		}
		defs = append(defs, specialDef{name: "shm", fstype: "tmpfs", mode: 0o1777,
			params: []string{"mode=1777", "size=" + strconv.FormatInt(size, 10)},
			attrs:  unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV})
	}
	return defs, nil
}

// ttyGid is the gid of new ptys when the group database has no tty.
const ttyGid = 5

// ptsGid returns the gid given, or that of the group tty, or ttyGid if
// the group database cannot say.
func ptsGid(given *uint32) uint32 {
	if given != nil {
		return *given
	}
	g, err := user.LookupGroup("tty")
	if err != nil {
		return ttyGid
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return ttyGid
	}
	return uint32(gid)
}

// mountSpecial mounts one special on the server's mount.
func (s *Server) mountSpecial(d specialDef) (*special, error) {
	if s.view != nil && s.view.VerdictPath(d.name) == viewpath.Hidden { // a passage is a shown directory
		return nil, fmt.Errorf("the view hides %s", d.name)
	}
	n, err := s.specialDir(d)
	if err != nil {
		return nil, err
	}
	target := filepath.Join(s.mountpoint, d.name)
	root, err := mountAt(d, target)
	if err != nil {
		return nil, err
	}
	pins.add(n)
	return &special{name: d.name, fstype: d.fstype, target: target, root: root, node: n}, nil
}

// specialDir returns the directory d is mounted on.
func (s *Server) specialDir(d specialDef) (*dcache.Node, error) {
	n, err := s.ns.Resolve(d.name)
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("the namespace has no %s (PrepareSpecials makes it before the mount)", d.name)
	}
	if err != nil {
		return nil, err
	}
	if !n.IsDir() {
		return nil, fmt.Errorf("%s is a %s, not a directory", d.name, n.Type())
	}
	return n, nil
}

// PrepareSpecials makes the directories of the specials o asks for that
// ns lacks (pts 0755, shm 1777, as the daemon's registrations), and
// validates o. Call it before the namespace is first mounted: a
// directory registered while mounted makes its mounts' kernels drop
// their entry for the name (an entry notify) at a time of the notify
// worker's choosing, and dropping the entry of a mount point detaches
// what is mounted there.
func PrepareSpecials(ns *dcache.Namespace, o SpecialOpts) error {
	defs, err := specialDefs(o)
	if err != nil {
		return err
	}
	for _, d := range defs {
		_, err := ns.Register(d.name, dcache.Spec{Type: dcache.TypeDir, Mode: d.mode}, dcache.Caller{Origin: dcache.OriginBuiltin})
		if err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("fs: making %s: %w", d.name, err)
		}
	}
	return nil
}

// legacyMount makes mountAt use mount(2) even where the new mount API
// exists (tests of the fallback).
var legacyMount = false

// mountAt mounts d on target and returns its root, opened O_PATH.
func mountAt(d specialDef, target string) (*os.File, error) {
	if !legacyMount {
		f, err := fsMount(d, target)
		if !errors.Is(err, unix.ENOSYS) {
			return f, err
		}
	}
	var flags uintptr
	if d.attrs&unix.MOUNT_ATTR_NOSUID != 0 {
		flags |= unix.MS_NOSUID
	}
	if d.attrs&unix.MOUNT_ATTR_NODEV != 0 {
		flags |= unix.MS_NODEV
	}
	if d.attrs&unix.MOUNT_ATTR_NOEXEC != 0 {
		flags |= unix.MS_NOEXEC
	}
	if err := unix.Mount(d.fstype, target, d.fstype, flags, strings.Join(d.params, ",")); err != nil {
		return nil, fmt.Errorf("mount -t %s %s: %w", d.fstype, target, err)
	}
	fd, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		return nil, fmt.Errorf("open %s: %w", target, err)
	}
	return os.NewFile(uintptr(fd), target), nil
}

// fsMount mounts d on target with fsopen, fsconfig, fsmount and
// move_mount; ENOSYS if the kernel has no new mount API.
func fsMount(d specialDef, target string) (*os.File, error) {
	fsfd, err := unix.Fsopen(d.fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("the kernel has no %s file system: %w", d.fstype, err)
		}
		return nil, fmt.Errorf("fsopen %s: %w", d.fstype, err)
	}
	defer unix.Close(fsfd)
	fail := func(what string, err error) error {
		if msg := fsLog(fsfd); msg != "" {
			return fmt.Errorf("%s %s: %w (%s)", d.fstype, what, err, msg)
		}
		return fmt.Errorf("%s %s: %w", d.fstype, what, err)
	}
	for _, p := range d.params {
		k, v, isValue := strings.Cut(p, "=")
		if isValue {
			err = unix.FsconfigSetString(fsfd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fsfd, k)
		}
		if err != nil {
			return nil, fail(p, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fail("create", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(d.attrs))
	if err != nil {
		return nil, fail("fsmount", err)
	}
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		unix.Close(mfd) // never attached: closing it frees the instance
		return nil, fmt.Errorf("move_mount %s on %s: %w", d.fstype, target, err)
	}
	return os.NewFile(uintptr(mfd), target), nil
}

// fsLog drains the messages the kernel left on an fsopen descriptor.
func fsLog(fsfd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}

// Close detaches every special, shm then pts, and is idempotent. It
// walks nothing through the server, so it may be called while the server
// stops; call it before Server.Shutdown, so that the FUSE mount goes last.
func (sp *Specials) Close() error {
	if sp == nil {
		return nil
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil
	}
	sp.closed = true
	var errs []error
	for i := len(sp.mounted) - 1; i >= 0; i-- {
		m := sp.mounted[i]
		if err := m.unmount(); err != nil {
			errs = append(errs, err)
			sp.log.Error("unmount", zap.String("special", m.name), zap.Error(err))
		} else {
			sp.log.Info("unmounted", zap.String("special", m.name), zap.String("path", m.target))
		}
	}
	sp.mounted = nil
	return errors.Join(errs...)
}

// unmount detaches the mount through its root descriptor.
func (m *special) unmount() error {
	defer pins.remove(m.node)
	defer m.root.Close()
	p := "/proc/self/fd/" + strconv.Itoa(int(m.root.Fd()))
	err := unix.Unmount(p, unix.MNT_DETACH)
	if err == unix.ENOENT { // no /proc here: by its path, through the server (still serving)
		err = unix.Unmount(m.target, unix.MNT_DETACH)
	}
	if err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmount %s (%s): %w", m.target, m.fstype, err)
	}
	// EINVAL: no longer a mount (detached from outside, or its mount
	// point removed): nothing left to do.
	return nil
}

// DetachBelow detaches every mount strictly below dir in this mount
// namespace — leftover specials of a daemon that was killed — deepest
// first, and returns what it detached. It does not touch dir itself.
func DetachBelow(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	var below []*mountinfo.Info
	for _, m := range ms {
		if strings.HasPrefix(m.Mountpoint, dir+"/") {
			below = append(below, m)
		}
	}
	// Deepest first: a longer mount point cannot be an ancestor.
	for i := 1; i < len(below); i++ {
		for j := i; j > 0 && len(below[j].Mountpoint) > len(below[j-1].Mountpoint); j-- {
			below[j], below[j-1] = below[j-1], below[j]
		}
	}
	var done []string
	var errs []error
	for _, m := range below {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("detach %s (%s): %w", m.Mountpoint, m.FSType, err))
			continue
		}
		done = append(done, m.Mountpoint+" ("+m.FSType+")")
	}
	return done, errors.Join(errs...)
}

// pinSet counts the special mounts on each directory node, over every
// server of the process: a view shares its parent's namespace, and a
// name removed through any mount is gone from all of them.
type pinSet struct {
	mu sync.Mutex // a leaf
	m  map[*dcache.Node]int
}

var pins = pinSet{m: map[*dcache.Node]int{}}

func (p *pinSet) add(n *dcache.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[n]++
}

func (p *pinSet) remove(n *dcache.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[n]--; p.m[n] <= 0 {
		delete(p.m, n)
	}
}

// busy reports whether dir's child name is a directory with a special
// mounted on it.
func (p *pinSet) busy(dir *dcache.Node, name string) bool {
	p.mu.Lock()
	empty := len(p.m) == 0
	p.mu.Unlock()
	if empty {
		return false
	}
	n, err := dir.Lookup(name) // the namespace as it is: never the loader
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[n] > 0
}
