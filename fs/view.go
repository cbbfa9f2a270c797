package fs

import (
	"context"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
)

// Views: one daemon, several mounts of one namespace.
//
// A view is a filter over paths — an allowlist and a denylist of glob
// patterns — plus overrides of mode and owner, attached to one mount: a
// Server made by NewView, with its own FUSE connection, node table,
// FORGET counts and notify queue, over the same lookup.Resolver and
// dcache.Namespace as the main server. The view belongs to the mount, not
// to the caller: the kernel shares one dentry cache per mount among all
// processes, so a view chosen by pid would leak through it.
//
// What a view admits. Paths are relative to the mount's root ("snd/pcm0").
// Patterns are path.Match patterns matched element by element ("*" never
// crosses a "/"; "**" is refused, since it would only mean "*").
//   - A pattern matches a path if it matches the path's first elements:
//     a pattern that matches a directory matches everything beneath it.
//   - Deny wins: a path some deny pattern matches is hidden.
//   - With no allow pattern everything else is shown. Otherwise a path is
//     shown if an allow pattern matches it; and a directory is shown as a
//     passage if it could lead to a match, that is if it matches the
//     leading elements of a longer allow pattern ("snd/*" shows the
//     directory "snd", and only those of its children "snd/*" matches).
//   - The root is always shown.
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
// Overrides. Each override has a pattern matched against the whole path
// (not its ancestors) and sets some of mode (permission bits), uid and
// gid; the first override that matches a node's path applies. Every
// attribute reply of the view (LOOKUP, GETATTR, SETATTR, READDIRPLUS,
// the entry of a create, ACCESS's check) shows the overridden values. A
// chmod or chown through the view changes the namespace (every mount
// sees it, and it is kept with --state-dir) while the view goes on
// showing its override. A node with several names (hard links) is judged
// by one of them.
//
// Notifies. Every mount has its own NotifyQueue; a NotifyMux is the
// namespace's sink (through control.Hub) and hands each event to every
// queue. A queue skips what its own kernel made (an event whose
// dcache.Caller is OriginFUSE with its mount's id) and, for a view, what
// its view hides; everything else becomes a notify sent by that queue's
// worker. So a change made through one mount reaches the kernels of the
// others, and a device registered later appears in every view that
// admits it.

// verdict is what a view says of one path.
type verdict uint8

const (
	shown   verdict = iota // admitted (what a server without a view says of everything)
	passage                // a directory that leads to admitted names; hidden if not a directory
	hidden                 // outside the view
)

// maxViewPatterns bounds each list of a view.
const maxViewPatterns = 1024

// ViewSpec is a view before it is compiled: the patterns and overrides as
// a view file or the control API gives them.
type ViewSpec struct {
	Allow     []string
	Deny      []string
	Overrides []ViewOverride
}

// ViewOverride sets the attributes of the nodes whose path Glob matches;
// nil fields are left as they are.
type ViewOverride struct {
	Glob string
	Mode *uint32 // permission bits, at most 07777
	Uid  *uint32
	Gid  *uint32
}

// ViewError is a view that does not compile: Field names the offending
// entry ("allow[2]", "overrides[0].glob").
type ViewError struct {
	Field string
	Msg   string
}

func (e *ViewError) Error() string { return e.Field + ": " + e.Msg }

// View is a compiled view; immutable and safe for concurrent use.
type View struct {
	spec      ViewSpec
	allow     []pattern
	deny      []pattern
	overrides []override
}

// pattern is one glob, split into elements.
type pattern struct {
	elems []elem
}

// elem is one element of a pattern: a literal compared as a string, or a
// glob given to path.Match.
type elem struct {
	s    string
	glob bool
}

func (e *elem) match(name string) bool {
	if !e.glob {
		return e.s == name
	}
	ok, _ := path.Match(e.s, name) // the pattern was checked at compile time
	return ok
}

// covers reports whether p matches the first len(p.elems) elements of
// segs: p matches the path or one of its ancestors.
func (p *pattern) covers(segs []string) bool {
	if len(p.elems) > len(segs) {
		return false
	}
	for i := range p.elems {
		if !p.elems[i].match(segs[i]) {
			return false
		}
	}
	return true
}

// leadsTo reports whether segs, shorter than p, match p's first elements:
// the directory segs could hold a path p matches.
func (p *pattern) leadsTo(segs []string) bool {
	if len(segs) >= len(p.elems) {
		return false
	}
	for i := range segs {
		if !p.elems[i].match(segs[i]) {
			return false
		}
	}
	return true
}

// exact reports whether p matches the whole path segs.
func (p *pattern) exact(segs []string) bool {
	return len(p.elems) == len(segs) && p.covers(segs)
}

// override is one compiled ViewOverride.
type override struct {
	p                       pattern
	mode, uid, gid          uint32
	setMode, setUid, setGid bool
}

// CompileView checks spec and compiles it. Patterns must be clean
// relative paths ("snd/*", not "/snd/*", "snd/", "./snd" or "a//b") of
// valid path.Match elements, at most maxViewPatterns per list.
func CompileView(spec ViewSpec) (*View, error) {
	v := &View{}
	compile := func(field string, list []string) ([]pattern, error) {
		if len(list) > maxViewPatterns {
			return nil, &ViewError{field, fmt.Sprintf("%d patterns, over %d", len(list), maxViewPatterns)}
		}
		out := make([]pattern, 0, len(list))
		for i, s := range list {
			p, err := compilePattern(s)
			if err != nil {
				return nil, &ViewError{fmt.Sprintf("%s[%d]", field, i), err.Error()}
			}
			out = append(out, p)
		}
		return out, nil
	}
	var err error
	if v.allow, err = compile("allow", spec.Allow); err != nil {
		return nil, err
	}
	if v.deny, err = compile("deny", spec.Deny); err != nil {
		return nil, err
	}
	if len(spec.Overrides) > maxViewPatterns {
		return nil, &ViewError{"overrides", fmt.Sprintf("%d overrides, over %d", len(spec.Overrides), maxViewPatterns)}
	}
	for i, o := range spec.Overrides {
		field := fmt.Sprintf("overrides[%d]", i)
		p, err := compilePattern(o.Glob)
		if err != nil {
			return nil, &ViewError{field + ".glob", err.Error()}
		}
		ov := override{p: p}
		if o.Mode != nil {
			if *o.Mode > dcache.PermMask {
				return nil, &ViewError{field + ".mode", fmt.Sprintf("%#o has bits outside the permission bits 07777", *o.Mode)}
			}
			ov.mode, ov.setMode = *o.Mode, true
		}
		for _, id := range []struct {
			name string
			v    *uint32
			dst  *uint32
			set  *bool
		}{{"uid", o.Uid, &ov.uid, &ov.setUid}, {"gid", o.Gid, &ov.gid, &ov.setGid}} {
			if id.v == nil {
				continue
			}
			if *id.v == 1<<32-1 {
				return nil, &ViewError{field + "." + id.name, "4294967295 is not an id"}
			}
			*id.dst, *id.set = *id.v, true
		}
		if !ov.setMode && !ov.setUid && !ov.setGid {
			return nil, &ViewError{field, "sets none of mode, uid, gid"}
		}
		v.overrides = append(v.overrides, ov)
	}
	v.spec = ViewSpec{Allow: append([]string(nil), spec.Allow...), Deny: append([]string(nil), spec.Deny...),
		Overrides: append([]ViewOverride(nil), spec.Overrides...)}
	return v, nil
}

func compilePattern(s string) (pattern, error) {
	switch {
	case s == "":
		return pattern{}, fmt.Errorf("an empty pattern")
	case len(s) > 4095:
		return pattern{}, fmt.Errorf("a pattern over 4095 bytes")
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/"):
		return pattern{}, fmt.Errorf("pattern %q: patterns are relative to the mount's root, without a leading or trailing slash", s)
	case strings.IndexByte(s, 0) >= 0:
		return pattern{}, fmt.Errorf("pattern %q has a NUL byte", s)
	}
	var p pattern
	for _, e := range strings.Split(s, "/") {
		switch {
		case e == "":
			return pattern{}, fmt.Errorf("pattern %q has an empty element", s)
		case e == "." || e == "..":
			return pattern{}, fmt.Errorf("pattern %q has a %q element", s, e)
		case strings.Contains(e, "**"):
			return pattern{}, fmt.Errorf("pattern %q: ** is not supported (* matches one element; a pattern that matches a directory matches everything beneath it)", s)
		}
		if _, err := path.Match(e, ""); err != nil {
			return pattern{}, fmt.Errorf("pattern %q: element %q: %v", s, e, err)
		}
		p.elems = append(p.elems, elem{s: e, glob: strings.ContainsAny(e, `*?[\`)})
	}
	return p, nil
}

// Spec returns the view as it was given.
func (v *View) Spec() ViewSpec { return v.spec }

// maxStackDepth is the path depth split without allocating.
const maxStackDepth = 16

// splitPath appends the elements of p (a clean relative path, "" for the
// root) to buf.
func splitPath(p string, buf []string) []string {
	if p == "" {
		return buf
	}
	for {
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return append(buf, p)
		}
		buf = append(buf, p[:i])
		p = p[i+1:]
	}
}

// verdictOf is what v says of the path segs.
func (v *View) verdictOf(segs []string) verdict {
	if len(segs) == 0 {
		return shown // the root
	}
	for i := range v.deny {
		if v.deny[i].covers(segs) {
			return hidden
		}
	}
	if len(v.allow) == 0 {
		return shown
	}
	out := hidden
	for i := range v.allow {
		p := &v.allow[i]
		if p.covers(segs) {
			return shown
		}
		if out == hidden && p.leadsTo(segs) {
			out = passage
		}
	}
	return out
}

// verdictPath is what v says of the path p.
func (v *View) verdictPath(p string) verdict {
	var buf [maxStackDepth]string
	return v.verdictOf(splitPath(p, buf[:0]))
}

// Admits reports whether a node of the given kind at path p (relative to
// the mount's root) is shown in the view.
func (v *View) Admits(p string, isDir bool) bool {
	switch v.verdictPath(p) {
	case shown:
		return true
	case passage:
		return isDir
	}
	return false
}

// childVerdict is what v says of name in dir.
func (v *View) childVerdict(dir *dcache.Node, name string) verdict {
	var buf [maxStackDepth]string
	segs := splitPath(dir.Path(), buf[:0])
	return v.verdictOf(append(segs, name))
}

// notifies reports whether the kernel of the view's mount may hold
// something ev changes: its path is not hidden. A passage name of
// unknown or non-directory type is notified anyway (a notify too many
// costs one request, a missing one a stale name).
func (v *View) notifies(ev *dcache.Event) bool {
	return v.verdictPath(ev.Path) != hidden
}

// apply overrides a's mode and owner for the node n, if an override
// matches n's path. A no-op for a view without overrides.
func (v *View) apply(n *dcache.Node, a *dcache.Attr) {
	if len(v.overrides) == 0 {
		return
	}
	var buf [maxStackDepth]string
	segs := splitPath(n.Path(), buf[:0])
	if len(segs) == 0 {
		return // the root, or a node no longer linked
	}
	for i := range v.overrides {
		o := &v.overrides[i]
		if !o.p.exact(segs) {
			continue
		}
		if o.setMode {
			a.Mode = a.Mode&^dcache.PermMask | o.mode
		}
		if o.setUid {
			a.Uid = o.uid
		}
		if o.setGid {
			a.Gid = o.gid
		}
		return
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
func (s *Server) NewView(mux *NotifyMux, v *View, log *zap.Logger) (*Server, error) {
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

// View returns the server's view (nil: the whole namespace).
func (s *Server) View() *View { return s.view }

// Mountpoint returns where the server is mounted ("" before Mount).
func (s *Server) Mountpoint() string { return s.mountpoint }

// The hooks the handlers call; each is a nil check for a server without
// a view.

// viewVerdict is what the server's view says of name in dir.
func (s *Server) viewVerdict(dir *dcache.Node, name string) verdict {
	if s.view == nil {
		return shown
	}
	return s.view.childVerdict(dir, name)
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
	switch s.view.childVerdict(dir, name) {
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
		s.view.apply(n, a)
	}
}

// viewReadDir filters a listing of dir (ents, read with max) through the
// view, reading on while a whole batch is filtered out: an empty answer
// means the end of the directory to the kernel.
func (s *Server) viewReadDir(ctx context.Context, dir *dcache.Node, ents []dcache.DirEntry, max int, c dcache.Caller) ([]dcache.DirEntry, error) {
	var buf [maxStackDepth]string
	segs := splitPath(dir.Path(), buf[:0])
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
			switch s.view.verdictOf(append(segs, e.Name)) {
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

// NotifyMux is the namespace's event sink when several mounts serve it:
// it hands every event to the notify queue of each mount, which decides
// for its own kernel (NotifyQueue.Event). It never blocks. Each queue
// added gets a mount id, unique among the mux's queues, which requests
// through its server put in dcache.Caller.Mount.
type NotifyMux struct {
	mu  sync.Mutex                     // serializes Add and Remove
	qs  atomic.Pointer[[]*NotifyQueue] // copy on write: Event takes no lock
	ids map[uint16]bool                // guarded by mu: ids in use
}

// NewNotifyMux returns a mux over qs (the main mount's queue).
func NewNotifyMux(qs ...*NotifyQueue) *NotifyMux {
	m := &NotifyMux{ids: map[uint16]bool{}}
	m.qs.Store(new([]*NotifyQueue))
	for _, q := range qs {
		if err := m.Add(q); err != nil {
			panic(err)
		}
	}
	return m
}

var _ dcache.Sink = (*NotifyMux)(nil)

// WantsLookups implements dcache.LookupSink: a LOOKUP changes nothing the
// kernel caches, so no queue has a use for it.
func (m *NotifyMux) WantsLookups() bool { return false }

// Event implements dcache.Sink.
func (m *NotifyMux) Event(ev dcache.Event) {
	for _, q := range *m.qs.Load() {
		q.Event(ev)
	}
}

// Add gives q a mount id and starts handing it events. Call it before
// q's server mounts (the id is read by its requests).
func (m *NotifyMux) Add(q *NotifyQueue) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := uint16(0)
	for i := 1; i <= 1<<16-1; i++ {
		if !m.ids[uint16(i)] {
			id = uint16(i)
			break
		}
	}
	if id == 0 {
		return fmt.Errorf("fs: %d mounts already", 1<<16-1)
	}
	m.ids[id] = true
	q.id = id
	old := *m.qs.Load()
	next := make([]*NotifyQueue, 0, len(old)+1)
	next = append(append(next, old...), q)
	m.qs.Store(&next)
	return nil
}

// Remove stops handing q events (its mount is gone) and frees its id.
func (m *NotifyMux) Remove(q *NotifyQueue) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.qs.Load()
	next := make([]*NotifyQueue, 0, len(old))
	for _, x := range old {
		if x != q {
			next = append(next, x)
		}
	}
	if len(next) != len(old) {
		delete(m.ids, q.id)
	}
	m.qs.Store(&next)
}
