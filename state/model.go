package state

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// Entry is what is kept about one path.
type Entry struct {
	Path string `json:"path"`
	// Created: a user made the node (it is restored at start). Otherwise
	// the entry holds a registered node's changed attributes (re-applied
	// when it registers again).
	Created bool `json:"created,omitempty"`
	// Registered: the entry only remembers a registered node's inode
	// number (and its attributes as registered, which are not re-applied),
	// so that the node gets the same number when it registers again
	// after a crash. Never with Created.
	Registered bool   `json:"registered,omitempty"`
	Ino        uint64 `json:"ino,omitempty"` // the node's inode number; 0: not known
	Type       string `json:"type"`          // dcache.Type's name: dir, char, block, symlink, fifo, socket
	Mode       uint32 `json:"mode"`          // permission bits
	Uid        uint32 `json:"uid"`
	Gid        uint32 `json:"gid"`
	Major      uint32 `json:"major,omitempty"`
	Minor      uint32 `json:"minor,omitempty"`
	Target     string `json:"target,omitempty"`
	// Atime and Mtime in Unix nanoseconds. A changed entry re-applies
	// them only if Times (a user set them).
	Atime int64 `json:"atime,omitempty"`
	Mtime int64 `json:"mtime,omitempty"`
	Times bool  `json:"times,omitempty"`
}

// op is one change to the model, as journaled.
type op struct {
	Op    string `json:"op"` // "put", "del" or "rm"
	Entry *Entry `json:"entry,omitempty"`
	Path  string `json:"path,omitempty"` // del: the path and everything under it; rm: the path alone
}

// record is one journal frame: one group commit. Gen and Ceiling, when
// not zero, set the kept inode generation and raise the id ceiling (see
// Store.Reserve).
type record struct {
	N       uint64 `json:"n"`
	Ops     []op   `json:"ops"`
	Gen     uint64 `json:"gen,omitempty"`
	Ceiling uint64 `json:"ceiling,omitempty"`
}

// snapshotFile is the snapshot's one frame.
type snapshotFile struct {
	Version int      `json:"version"`
	N       uint64   `json:"n"` // the last journal record it includes
	Entries []*Entry `json:"entries"`
	// Since version 2: the inode generation and the id ceiling.
	Gen     uint64 `json:"gen,omitempty"`
	Ceiling uint64 `json:"ceiling,omitempty"`
}

// snapshotVersion is the version written. Version 1 (no ids) is read too.
const snapshotVersion = 2

// kept reports whether nodes of type t are kept.
func kept(t dcache.Type) bool {
	return t >= dcache.TypeDir && t < dcache.TypeRegular
}

// validate checks an entry read from disk.
func (e *Entry) validate() error {
	t, ok := dcache.ParseType(e.Type)
	if !ok || !kept(t) {
		return fmt.Errorf("entry %q: bad type %q", e.Path, e.Type)
	}
	if e.Created && e.Registered {
		return fmt.Errorf("entry %q: both created and registered", e.Path)
	}
	if e.Path == "" { // the root: only its changed attributes
		if e.Created || e.Registered || t != dcache.TypeDir {
			return fmt.Errorf("entry for the root: bad kind")
		}
		return nil
	}
	for _, p := range strings.Split(e.Path, "/") {
		if err := dcache.CheckName(p); err != nil {
			return fmt.Errorf("entry %q: %v", e.Path, err)
		}
	}
	if e.Mode&^dcache.PermMask != 0 {
		return fmt.Errorf("entry %q: bad mode %#o", e.Path, e.Mode)
	}
	if (t == dcache.TypeSymlink) != (e.Target != "") {
		return fmt.Errorf("entry %q: a target only (and always) on a symlink", e.Path)
	}
	return nil
}

func entryOf(ev *dcache.Event, created bool) *Entry {
	e := &Entry{Path: ev.Path, Created: created, Type: ev.Type.String(),
		Mode: ev.Mode & dcache.PermMask, Uid: ev.Uid, Gid: ev.Gid, Target: ev.Target,
		Atime: unixNano(ev.Atime), Mtime: unixNano(ev.Mtime), Ino: ev.Ino}
	if ev.Type.Device() {
		e.Major, e.Minor = ev.Major, ev.Minor
	}
	return e
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOf(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// model is the kept entries. Not safe for concurrent use: Store guards it.
type model map[string]*Entry

// under reports whether p is root or below it.
func under(p, root string) bool {
	return p == root || strings.HasPrefix(p, root+"/")
}

// apply applies o.
func (m model) apply(o op) {
	switch o.Op {
	case "put":
		e := *o.Entry
		m[e.Path] = &e
	case "del":
		for p := range m {
			if under(p, o.Path) {
				delete(m, p)
			}
		}
	case "rm":
		delete(m, o.Path)
	}
}

// sorted returns the entries by path (a directory before what is in it).
func (m model) sorted() []*Entry {
	out := make([]*Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// folder turns events into model changes. It belongs to the committer.
type folder struct {
	m model
	// gen and ceiling are the kept inode generation and id ceiling
	// (Store.Reserve); 0: none kept.
	gen, ceiling uint64
	// stash holds the entries of a Renamed DELETE until the CREATE of
	// the same inode (in the same group) puts them at the new name; keyed
	// by inode, with the old path.
	stash map[uint64]stashed
}

type stashed struct {
	from    string
	entries []*Entry
}

// fold applies ev to the model and returns the journal ops it makes.
// Preconditions: the caller holds Store.mu.
func (f *folder) fold(ev *dcache.Event, ops []op) []op {
	put := func(e *Entry) {
		if old := f.m[e.Path]; old != nil && *old == *e {
			return // nothing new: nothing to journal
		}
		f.m[e.Path] = e
		cp := *e
		ops = append(ops, op{Op: "put", Entry: &cp})
	}
	del := func(p string) {
		f.m.apply(op{Op: "del", Path: p})
		ops = append(ops, op{Op: "del", Path: p})
	}
	switch ev.Kind {
	case dcache.KindCreate:
		if ev.Renamed {
			if st, ok := f.stash[ev.Ino]; ok {
				delete(f.stash, ev.Ino)
				for _, e := range st.entries {
					if e.Path == st.from {
						continue // the moved node itself: from the event below
					}
					cp := *e
					cp.Path = ev.Path + strings.TrimPrefix(e.Path, st.from)
					cp.Created = true // it lives at a name only a user gave it
					cp.Registered = false
					put(&cp)
				}
			}
		}
		if !kept(ev.Type) {
			if e := f.m[ev.Path]; e != nil {
				del(ev.Path) // a regular file took the name
			}
			return ops
		}
		put(entryOf(ev, true))
	case dcache.KindDelete:
		if ev.Renamed {
			var st stashed
			st.from = ev.Path
			for p, e := range f.m {
				if under(p, ev.Path) {
					st.entries = append(st.entries, e)
				}
			}
			if f.stash == nil {
				f.stash = make(map[uint64]stashed)
			}
			f.stash[ev.Ino] = st
		}
		if f.hasUnder(ev.Path) {
			del(ev.Path)
		}
	case dcache.KindRegister:
		if !kept(ev.Type) {
			return ops
		}
		e := entryOf(ev, false)
		e.Registered = true
		if old := f.m[ev.Path]; old != nil && old.Type == e.Type && old.Major == e.Major && old.Minor == e.Minor {
			if old.Created || !old.Registered {
				// A created node Restore made again, or a device whose
				// changed attributes the register hook applied: the
				// entry stays what it is, with the number it has now.
				cp := *old
				cp.Ino = ev.Ino
				e = &cp
			}
		}
		put(e)
	case dcache.KindUnregister:
		e := f.m[ev.Path]
		switch {
		case e == nil:
		case e.Created:
			del(ev.Path)
		case e.Registered: // only its own number: what is kept under it stays
			f.m.apply(op{Op: "rm", Path: ev.Path})
			ops = append(ops, op{Op: "rm", Path: ev.Path})
		case e.Ino != 0: // changed attributes stay kept; the number went with the node
			cp := *e
			cp.Ino = 0
			put(&cp)
		}
	case dcache.KindChange, dcache.KindTouch:
		if !kept(ev.Type) {
			return ops
		}
		old := f.m[ev.Path]
		e := entryOf(ev, old != nil && old.Created)
		if old != nil && !old.Created && old.Type != e.Type {
			old = nil // another node took the name since
		}
		e.Times = ev.Kind == dcache.KindTouch || (old != nil && old.Times)
		put(e)
	}
	return ops
}

func (f *folder) hasUnder(root string) bool {
	if _, ok := f.m[root]; ok {
		return true
	}
	for p := range f.m {
		if under(p, root) {
			return true
		}
	}
	return false
}

// endGroup drops stashed moves whose CREATE never came (cannot happen with
// dcache's adjacency; defensive).
func (f *folder) endGroup() { clear(f.stash) }
