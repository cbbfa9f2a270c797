package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// Views: one daemon, several mounts of one namespace.
//
// A view is a filter over paths plus overrides of mode and owner
// (package viewpath: the pattern language, what a view admits), attached
// to one mount: a Server made by NewView, with its own FUSE connection,
// node table, FORGET counts and notify queue, over the same
// lookup.Resolver and dcache.Namespace as the main server. The view
// belongs to the mount, not to the caller: the kernel shares one dentry
// cache per mount among all processes, so a view chosen by pid would
// leak through it.
//
// What a hidden name does in the view. LOOKUP is ENOENT at once (a
// negative entry for the negative timeout): the loader is not asked and
// no negative entry is put in the shared namespace, where it would answer
// the other mounts. READDIR and READDIRPLUS leave it out (offsets are
// still dcache's cookies, so a listing resumes anywhere). Making it —
// MKNOD, MKDIR, SYMLINK, LINK, CREATE, or RENAME onto it — is EACCES: a
// view cannot create what it would not show, nor replace a node it
// hides. A passage name that is not a directory is hidden; a lookup of a
// passage name asks the loader as any lookup does (it may provide the
// directory), and answers ENOENT if what it finds is not a directory.
//
// Overrides. Every attribute reply of the view (LOOKUP, GETATTR,
// SETATTR, READDIRPLUS, the entry of a create, ACCESS's check) shows the
// values of the first override matching the node's path. A chmod or
// chown through the view changes the namespace (every mount sees it, and
// it is kept with --state-dir) while the view goes on showing its
// override. A node with several names (hard links) is judged by one of
// them.
//
// Notifies. Every mount has its own NotifyQueue; a NotifyMux (notify.go)
// is the namespace's sink and hands each event to every queue. A queue
// skips what its own kernel made (an event whose dcache.Caller is
// OriginFUSE with its mount's id) and, for a view, what its view hides;
// everything else becomes a notify sent by that queue's worker. So a
// change made through one mount reaches the kernels of the others, and a
// device registered later appears in every view that admits it.

// The verdicts, as the handlers name them.
const (
	shown   = viewpath.Shown
	passage = viewpath.Passage
	hidden  = viewpath.Hidden
)

// childVerdict is what v says of name in dir.
func childVerdict(v *viewpath.View, dir *dcache.Node, name string) viewpath.Verdict {
	var buf [viewpath.MaxStackDepth]string
	segs := viewpath.Split(dir.Path(), buf[:0])
	return v.Verdict(append(segs, name))
}

// viewNotifies reports whether the kernel of a mount seen through v may
// hold something ev changes: its path is not hidden. A passage name of
// unknown or non-directory type is notified anyway (a notify too many
// costs one request, a missing one a stale name).
func viewNotifies(v *viewpath.View, ev *dcache.Event) bool {
	return v.VerdictPath(ev.Path) != hidden
}

// applyView overrides a's mode and owner for the node n, if an override
// of v matches n's path. A no-op for a view without overrides.
func applyView(v *viewpath.View, n *dcache.Node, a *dcache.Attr) {
	if !v.HasOverrides() {
		return
	}
	var buf [viewpath.MaxStackDepth]string
	o, ok := v.Override(viewpath.Split(n.Path(), buf[:0])) // none for the root, or a node no longer linked
	if !ok {
		return
	}
	if o.SetMode {
		a.Mode = a.Mode&^dcache.PermMask | o.Mode
	}
	if o.SetUid {
		a.Uid = o.Uid
	}
	if o.SetGid {
		a.Gid = o.Gid
	}
}

// NewView returns a server for one more mount of s's namespace, seen
// through v: the same resolver (so the same loader and lookup protocol),
// the same options, with a node table, FORGET counts and a notify queue
// of its own, which is added to mux (the namespace's sink, s's queue
// being in it). It follows s: SetTimeouts on s sets it too, and
// s.SyncNotifies waits for its notifies. Mount it, and Shutdown it to
// take it down (which takes its queue out of mux). A view server runs no
// sweeper of expired misses: s's serves the namespace, and its EXPIRE
// events reach every queue.
func (s *Server) NewView(mux *NotifyMux, v *viewpath.View, log *zap.Logger) (*Server, error) {
	if v == nil {
		return nil, fmt.Errorf("fs: NewView without a view")
	}
	opts := s.opts
	if log != nil {
		opts.Logger = log
	}
	nq := NewNotifyQueue(s.nq.max)
	nq.view = v
	vs := New(s.res, nq, opts)
	vs.view = v
	if err := mux.Add(nq); err != nil {
		return nil, err
	}
	vs.detach = func() {
		mux.Remove(nq)
		s.views.remove(vs)
	}
	s.views.add(s, vs)
	return vs, nil
}

// viewSet is the view servers made from a server and not yet shut down.
type viewSet struct {
	mu   sync.Mutex
	list []*Server // guarded by mu
}

// add copies parent's timeouts into vs and adds it, under the lock that
// SetTimeouts holds to set the views', so that no change is missed.
func (vset *viewSet) add(parent, vs *Server) {
	vset.mu.Lock()
	defer vset.mu.Unlock()
	vs.SetTimeouts(parent.entryTimeout(), parent.attrTimeout(), parent.negTimeout())
	vset.list = append(vset.list, vs)
}

func (vset *viewSet) remove(vs *Server) {
	vset.mu.Lock()
	defer vset.mu.Unlock()
	for i, x := range vset.list {
		if x == vs {
			vset.list = append(vset.list[:i], vset.list[i+1:]...)
			return
		}
	}
}

func (vset *viewSet) snapshot() []*Server {
	vset.mu.Lock()
	defer vset.mu.Unlock()
	return append([]*Server(nil), vset.list...)
}

// setTimeouts gives every view the timeouts (SetTimeouts).
func (vset *viewSet) setTimeouts(entry, attr, negative time.Duration) {
	vset.mu.Lock()
	defer vset.mu.Unlock()
	for _, vs := range vset.list {
		vs.SetTimeouts(entry, attr, negative)
	}
}

// syncNotifies is SyncNotifies: s's queue, then every view's.
func (s *Server) syncNotifies(ctx context.Context) error {
	if err := s.nq.Sync(ctx); err != nil {
		return err
	}
	for _, vs := range s.views.snapshot() {
		if err := vs.nq.Sync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// detached runs at the end of Shutdown: a view leaves its mux and its
// parent's set.
func (s *Server) detached() {
	if s.detach != nil {
		s.detach()
	}
}

// Queue returns the server's notify queue.
func (s *Server) Queue() *NotifyQueue { return s.nq }

// Mountpoint returns where the server is mounted ("" before Mount).
func (s *Server) Mountpoint() string { return s.mountpoint }

// The hooks the handlers call; each is a nil check for a server without
// a view.

// viewVerdict is what the server's view says of name in dir.
func (s *Server) viewVerdict(dir *dcache.Node, name string) viewpath.Verdict {
	if s.view == nil {
		return shown
	}
	return childVerdict(s.view, dir, name)
}

// outsideView answers a LOOKUP of a name the view hides: a negative entry
// for the negative timeout (the view never changes, so the kernel may
// cache the answer), or ENOENT.
func (s *Server) outsideView(out *fuse.EntryOut) fuse.Status {
	if neg := s.negTimeout(); neg > 0 {
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(neg)
		return fuse.OK
	}
	return fuse.ENOENT
}

// viewCreate checks that the view shows name in dir once made (a
// directory if isDir): OK, or EACCES.
func (s *Server) viewCreate(dir *dcache.Node, name string, isDir bool) fuse.Status {
	if s.view == nil {
		return fuse.OK
	}
	return s.viewCreateSlow(dir, name, isDir)
}

func (s *Server) viewCreateSlow(dir *dcache.Node, name string, isDir bool) fuse.Status {
	switch childVerdict(s.view, dir, name) {
	case shown:
		return fuse.OK
	case passage:
		if isDir {
			return fuse.OK
		}
	}
	return fuse.Status(syscall.EACCES)
}

// viewRename checks a rename's target: the view must show what the
// source becomes there.
func (s *Server) viewRename(oldDir *dcache.Node, oldName string, newDir *dcache.Node, newName string) fuse.Status {
	if s.view == nil {
		return fuse.OK
	}
	return s.viewRenameSlow(oldDir, oldName, newDir, newName)
}

func (s *Server) viewRenameSlow(oldDir *dcache.Node, oldName string, newDir *dcache.Node, newName string) fuse.Status {
	isDir := false
	if n, err := oldDir.Lookup(oldName); err == nil {
		isDir = n.IsDir()
	}
	return s.viewCreate(newDir, newName, isDir)
}

// viewAttr applies the view's overrides to a, n's attributes.
func (s *Server) viewAttr(n *dcache.Node, a *dcache.Attr) {
	if s.view != nil {
		applyView(s.view, n, a)
	}
}

// viewReadDir filters a listing of dir (ents, read with max) through the
// view, reading on while a whole batch is filtered out: an empty answer
// means the end of the directory to the kernel.
func (s *Server) viewReadDir(ctx context.Context, dir *dcache.Node, ents []dcache.DirEntry, max int, c dcache.Caller) ([]dcache.DirEntry, error) {
	var buf [viewpath.MaxStackDepth]string
	segs := viewpath.Split(dir.Path(), buf[:0])
	for {
		if len(ents) == 0 {
			return ents, nil
		}
		last := ents[len(ents)-1].Cookie
		full := len(ents) >= max
		out := ents[:0]
		for _, e := range ents {
			if e.Name == "." || e.Name == ".." {
				out = append(out, e)
				continue
			}
			switch s.view.Verdict(append(segs, e.Name)) {
			case shown:
				out = append(out, e)
			case passage:
				if e.Type == dcache.TypeDir {
					out = append(out, e)
				}
			}
		}
		if len(out) > 0 || !full {
			return out, nil
		}
		var err error
		if ents, err = s.res.ReadDir(ctx, dir, last, max, c); err != nil {
			return nil, err
		}
	}
}
