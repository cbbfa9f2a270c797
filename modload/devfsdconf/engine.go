package devfsdconf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// File type and mode bits of a Stat's Mode (st_mode), as Linux has them.
const (
	TypeMask  = syscall.S_IFMT
	TypeDir   = syscall.S_IFDIR
	TypeChar  = syscall.S_IFCHR
	TypeBlock = syscall.S_IFBLK
	TypeReg   = syscall.S_IFREG
	TypeFifo  = syscall.S_IFIFO
	TypeLink  = syscall.S_IFLNK
	TypeSock  = syscall.S_IFSOCK
	// Sticky is devfsd's marker in a saved copy: the node was made by a
	// user (CREATE), so RESTORE makes it again at start.
	Sticky = syscall.S_ISVTX
)

// Event is one namespace event as the rules see it.
type Event struct {
	Kind Kind
	// Name is the node's path relative to the mount ("snd/timer").
	Name string
	// Mode is the node's st_mode (type and permission bits); 0 when there
	// is no node (LOOKUP).
	Mode         uint32
	UID, GID     uint32
	Major, Minor uint32
}

// Stat is a node as FS.Lstat reports it.
type Stat struct {
	Mode         uint32 // st_mode: type and permission bits
	UID, GID     uint32
	Major, Minor uint32
	Target       string // a symlink's target
}

// FS is where COPY, RESTORE, PERMISSIONS and the compatibility links act.
// Paths are absolute. Errors for a missing path satisfy errors.Is(err,
// fs.ErrNotExist), for a taken one fs.ErrExist.
type FS interface {
	Lstat(path string) (Stat, error)
	// Chmod sets the permission bits (07777) of path, not following a
	// symlink.
	Chmod(path string, perm uint32) error
	// Chown sets owner and group; -1 leaves one as it is.
	Chown(path string, uid, gid int64) error
	// Make creates a node of st's type at path — a device with st's
	// number, a symlink to st.Target, a directory, fifo, socket or empty
	// regular file — with permission bits perm and owner st.UID:st.GID.
	Make(path string, st Stat, perm uint32) error
	// Remove removes path; not a directory.
	Remove(path string) error
	// MkdirAll makes dir and its parents as needed.
	MkdirAll(dir string) error
	// ReadDir lists dir's entry names, sorted.
	ReadDir(dir string) ([]string, error)
}

// Host is what the rules act through: the file systems, programs, and the
// module loader.
type Host interface {
	FS
	// Execute runs argv (bounded in time, in a process group of its own,
	// outside the mount) with env added to its environment, and returns
	// when it has exited or been killed.
	Execute(ctx context.Context, argv, env []string) error
	// Modload loads the module that provides devname (MODLOAD) and returns
	// a REGISTER event for each node it registered, which the engine then
	// runs the rules for. An error wrapping fs.ErrNotExist means no module
	// provides it.
	Modload(ctx context.Context, devname string) ([]Event, error)
}

// Engine runs a Config's rules for events. Its methods may be called
// concurrently if its Host allows it; `devfsd helper` calls them from one
// goroutine, one event after the other, as devfsd did.
type Engine struct {
	Host       Host
	Mountpoint string      // absolute, clean: $mntpnt, and where node paths live
	Hostname   string      // $hostname; "": os.Hostname
	Log        *zap.Logger // nil: none
	// Getenv reads the environment for variables; nil: os.LookupEnv.
	Getenv func(string) (string, bool)
}

func (e *Engine) log() *zap.Logger {
	if e.Log == nil {
		return zap.NewNop()
	}
	return e.Log
}

// maxModloadDepth bounds REGISTER rules that MODLOAD again.
const maxModloadDepth = 4

// Handle runs every rule of cfg that matches ev, in order, until an
// IGNORE. A failing action is logged and the next rule still runs; the
// failures are returned joined, each naming its rule's FILE:LINE.
func (e *Engine) Handle(ctx context.Context, cfg *Config, ev Event) error {
	return e.handle(ctx, cfg, ev, 0)
}

func (e *Engine) handle(ctx context.Context, cfg *Config, ev Event, depth int) error {
	if cfg == nil {
		return nil
	}
	// devfsd's service_name: "Discard lookups on /dev/log and
	// /dev/initctl" (a syslog or init waiting on a rule that logs or
	// signals init would wait for itself).
	if ev.Kind == Lookup && (ev.Name == "log" || ev.Name == "initctl") {
		return nil
	}
	var errs []error
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		if r.Event != ev.Kind {
			continue
		}
		groups, ok := r.devfsdGroups(ev.Name)
		if !ok {
			continue
		}
		if r.Action == Ignore {
			e.log().Debug("ignored", zap.Stringer("rule", r.Pos), zap.Stringer("event", ev.Kind), zap.String("name", ev.Name))
			break
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		err := e.run(ctx, cfg, r, ev, groups, depth)
		if err != nil {
			err = fmt.Errorf("%s: %s %s: %w", r.Pos, r.Action, ev.Name, err)
			e.log().Warn("action failed", zap.Stringer("event", ev.Kind), zap.String("name", ev.Name), zap.Error(err))
			errs = append(errs, err)
		} else {
			e.log().Debug("action done", zap.Stringer("rule", r.Pos), zap.Stringer("action", r.Action),
				zap.Stringer("event", ev.Kind), zap.String("name", ev.Name))
		}
	}
	return errors.Join(errs...)
}

// vars are the variables of ev.
func (e *Engine) vars(ev Event) *Vars {
	return &Vars{Devname: ev.Name, Devpath: e.nodePath(ev.Name), Mntpnt: e.Mountpoint, Hostname: e.Hostname,
		UID: ev.UID, GID: ev.GID, Mode: ev.Mode, Getenv: e.Getenv}
}

func (e *Engine) nodePath(name string) string { return path.Join(e.Mountpoint, name) }

func (e *Engine) run(ctx context.Context, cfg *Config, r *Rule, ev Event, groups []string, depth int) error {
	switch r.Action {
	case Permissions:
		p := e.nodePath(ev.Name)
		if err := e.Host.Chmod(p, r.Mode); err != nil {
			return err
		}
		if r.UID == -1 && r.GID == -1 {
			return nil
		}
		return e.Host.Chown(p, r.UID, r.GID)
	case Execute:
		v := e.vars(ev)
		argv := make([]string, len(r.Args))
		for i, a := range r.Args {
			s, err := Expand(a, v, groups)
			if err != nil {
				return err
			}
			argv[i] = s
		}
		env := []string{"DEVNAME=" + ev.Name, "DEVPATH=" + v.Devpath, "MNTPNT=" + e.Mountpoint,
			"ACTION=" + strings.ToLower(ev.Kind.String())}
		return e.Host.Execute(ctx, argv, env)
	case Modload:
		if depth >= maxModloadDepth {
			return fmt.Errorf("MODLOAD nested %d deep through REGISTER rules; not loading", depth)
		}
		regs, err := e.Host.Modload(ctx, ev.Name)
		if errors.Is(err, fs.ErrNotExist) {
			e.log().Debug("no module", zap.String("name", ev.Name), zap.Error(err))
			err = nil
		}
		var errs []error
		if err != nil {
			errs = append(errs, err)
		}
		for _, reg := range regs {
			if herr := e.handle(ctx, cfg, reg, depth+1); herr != nil {
				errs = append(errs, herr)
			}
		}
		return errors.Join(errs...)
	case Copy:
		return e.copy(r, ev, groups)
	case MkOldCompat, RmOldCompat, MkNewCompat, RmNewCompat:
		return e.compat(r.Action, ev)
	case Mksymlink, Symlink, Unlink:
		return e.global(r, ev, groups)
	}
	return fmt.Errorf("unknown action %v", r.Action)
}

// devfsdGroups matches name as devfsd's service_name did: regexec with
// ten subexpressions, and the groups counted up to the first that took
// no part, so \N of a later group expands to nothing.
func (r *Rule) devfsdGroups(name string) ([]string, bool) {
	m := r.re.FindStringSubmatchIndex(name)
	if m == nil {
		return nil, false
	}
	var groups []string
	for i := 0; i < len(m)/2 && i < 10 && m[2*i] >= 0; i++ {
		groups = append(groups, name[m[2*i]:m[2*i+1]])
	}
	return groups, true
}

// global runs CFUNCTION GLOBAL mksymlink, symlink or unlink with the
// rule's expanded arguments. A relative path names a node in the mount,
// as in devfsd, which ran in its mount point; a symlink's target is
// written as given. mksymlink makes the link's parent directories and
// takes an existing name as success (devfsd's mksymlink); symlink and
// unlink fail as symlink(2) and unlink(2) do.
func (e *Engine) global(r *Rule, ev Event, groups []string) error {
	v := e.vars(ev)
	args := make([]string, len(r.Args))
	for i, a := range r.Args {
		s, err := Expand(a, v, groups)
		if err != nil {
			return err
		}
		if s == "" {
			return fmt.Errorf("argument %d (%q) expands to nothing", i+1, a)
		}
		args[i] = s
	}
	at := func(p string) string {
		if path.IsAbs(p) {
			return path.Clean(p)
		}
		return path.Join(e.Mountpoint, p)
	}
	switch r.Action {
	case Unlink:
		return e.Host.Remove(at(args[0]))
	case Mksymlink:
		p := at(args[1])
		if err := e.Host.MkdirAll(path.Dir(p)); err != nil {
			return err
		}
		err := e.Host.Make(p, Stat{Mode: TypeLink | 0777, Target: args[0]}, 0777)
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	default:
		return e.Host.Make(at(args[1]), Stat{Mode: TypeLink | 0777, Target: args[0]}, 0777)
	}
}

// copy is devfsd's COPY: the source's owner and mode onto the
// destination, with the sticky marker kept as devfsd kept it.
func (e *Engine) copy(r *Rule, ev Event, groups []string) error {
	if ev.Kind == Change && ev.Mode&TypeMask == TypeLink {
		return nil
	}
	v := e.vars(ev)
	src, err := Expand(r.Args[0], v, groups)
	if err != nil {
		return err
	}
	dst, err := Expand(r.Args[1], v, groups)
	if err != nil {
		return err
	}
	if !path.IsAbs(src) || !path.IsAbs(dst) {
		return fmt.Errorf("COPY %s %s: both paths must be absolute", src, dst)
	}
	src, dst = path.Clean(src), path.Clean(dst)
	if err := e.Host.MkdirAll(path.Dir(dst)); err != nil {
		return err
	}
	sst, err := e.Host.Lstat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing saved (yet): nothing to copy, as devfsd
		}
		return err
	}
	dstSt, err := e.Host.Lstat(dst)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		dstSt = Stat{}
	}
	mode := sst.Mode &^ Sticky
	switch {
	case ev.Kind == Create:
		mode |= Sticky
	case ev.Kind == Change && dstSt.Mode&Sticky != 0:
		mode |= Sticky
	}
	return CopyInode(e.Host, dst, dstSt, mode, src, sst)
}

// CopyInode makes dst like src: same type, owner, and mode's permission
// bits. A node of the same type is changed in place (a symlink is made
// again if its target differs); one of another type is removed and made
// again. dstSt.Mode is 0 when dst does not exist.
func CopyInode(f FS, dst string, dstSt Stat, mode uint32, src string, sst Stat) error {
	if dstSt.Mode != 0 && sst.Mode&TypeMask == dstSt.Mode&TypeMask {
		if sst.Mode&TypeMask == TypeLink {
			if sst.Target == dstSt.Target {
				return nil
			}
			if err := f.Remove(dst); err != nil {
				return err
			}
			return f.Make(dst, sst, 0777)
		}
		if err := f.Chown(dst, int64(sst.UID), int64(sst.GID)); err != nil {
			return err
		}
		return f.Chmod(dst, mode&07777)
	}
	if dstSt.Mode != 0 {
		if dstSt.Mode&TypeMask == TypeDir {
			return fmt.Errorf("%s is a directory, %s is not", dst, src)
		}
		if err := f.Remove(dst); err != nil {
			return err
		}
	}
	return f.Make(dst, sst, mode&07777)
}

// Restore is RESTORE DIR: every node saved under dir that is a symlink or
// carries the sticky marker is made again in the mount (at the same path
// relative to dir), and directories are walked. Nodes without the marker
// are left to REGISTER rules (COPY from the saved copy when the node is
// registered again). Failures are returned joined; the walk goes on.
func (e *Engine) Restore(dir string) error {
	return e.restore(dir, "", 0)
}

func (e *Engine) restore(root, rel string, depth int) error {
	if depth > 64 {
		return fmt.Errorf("RESTORE %s: deeper than 64 levels at %s", root, rel)
	}
	names, err := e.Host.ReadDir(path.Join(root, rel))
	if err != nil {
		if depth == 0 && errors.Is(err, fs.ErrNotExist) {
			e.log().Info("nothing to restore", zap.String("dir", root))
			return nil
		}
		return err
	}
	var errs []error
	for _, n := range names {
		r := path.Join(rel, n)
		spath := path.Join(root, r)
		sst, err := e.Host.Lstat(spath)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if sst.Mode&TypeMask == TypeLink || sst.Mode&Sticky != 0 {
			dpath := e.nodePath(r)
			dst, err := e.Host.Lstat(dpath)
			if err != nil {
				dst = Stat{}
			}
			if err := CopyInode(e.Host, dpath, dst, sst.Mode&^Sticky, spath, sst); err != nil {
				errs = append(errs, fmt.Errorf("restoring %s: %w", r, err))
			} else {
				e.log().Debug("restored", zap.String("name", r))
			}
		}
		if sst.Mode&TypeMask == TypeDir {
			if err := e.restore(root, r, depth+1); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// compat makes or removes a compatibility symlink.
func (e *Engine) compat(a Action, ev Event) error {
	var name, target string
	switch a {
	case MkOldCompat, RmOldCompat:
		name, target = OldName(ev.Name, ev.Major, ev.Minor), ev.Name
	default:
		name, target = NewName(ev.Name)
	}
	if name == "" || name == ev.Name {
		return nil
	}
	p := e.nodePath(name)
	switch a {
	case MkOldCompat, MkNewCompat:
		err := e.Host.Make(p, Stat{Mode: TypeLink | 0777, Target: target}, 0777)
		if errors.Is(err, fs.ErrExist) {
			return nil // mksymlink: an existing name is fine
		}
		return err
	}
	// Remove only the link this rule would have made: the old name may
	// belong to someone else by now.
	st, err := e.Host.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if st.Mode&TypeMask != TypeLink || st.Target != target {
		return nil
	}
	return e.Host.Remove(p)
}
