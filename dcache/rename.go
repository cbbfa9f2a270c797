package dcache

import "syscall"

// Rename moves oldName in oldDir to newName in newDir, as renameat2(2) on
// tmpfs, checking in the kernel's order: ENOENT for a missing source;
// EEXIST with RenameNoReplace onto an existing name; ENOENT with
// RenameExchange and a missing target; EINVAL for a directory into its own
// subtree; ENOTEMPTY (EINVAL with RenameExchange) onto an ancestor of the
// source; success without change when both names are links to the same
// node; then ENOTDIR (directory onto non-directory), EISDIR (non-directory
// onto directory) and ENOTEMPTY (onto a non-empty directory). EXDEV across
// namespaces; EINVAL for unknown or conflicting flags; ENOSPC when a moved
// directory would pass Options.MaxDepth. It queues DELETE and CREATE
// events marked Renamed, adjacent (see Event.Renamed), and a plain DELETE
// for a replaced node before them.
//
// Locks: a cross-directory rename takes renameMu, then both directories'
// mus, ancestor first; then the victim directory's mu, and for the depth
// check the moved subtree's mus one at a time.
func (ns *Namespace) Rename(oldDir *Node, oldName string, newDir *Node, newName string, flags uint32, c Caller) error {
	err := ns.rename(oldDir, oldName, newDir, newName, flags, c)
	ns.events.flush()
	return err
}

func (ns *Namespace) rename(oldDir *Node, oldName string, newDir *Node, newName string, flags uint32, c Caller) error {
	const op = "rename"
	if oldDir.ns != ns || newDir.ns != ns {
		return pathErr(op, oldName, syscall.EXDEV)
	}
	if err := oldDir.dirOp(op, oldName); err != nil {
		return err
	}
	if err := newDir.dirOp(op, newName); err != nil {
		return err
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return pathErr(op, oldName, syscall.EINVAL)
	}
	cross := oldDir != newDir
	if cross {
		ns.renameMu.Lock()
		defer ns.renameMu.Unlock()
		first, second := oldDir, newDir
		if isAncestorOrSelf(newDir, oldDir) {
			first, second = newDir, oldDir
		}
		first.dir.mu.Lock()
		defer first.dir.mu.Unlock()
		second.dir.mu.Lock()
		defer second.dir.mu.Unlock()
	} else {
		oldDir.dir.mu.Lock()
		defer oldDir.dir.mu.Unlock()
	}
	errAt := func(e syscall.Errno) error { return pathErr(op, oldDir.childPath(oldName), e) }
	if oldDir.dir.dead || newDir.dir.dead {
		return errAt(syscall.ENOENT)
	}
	ode := oldDir.dir.children[oldName]
	if ode == nil {
		return errAt(syscall.ENOENT)
	}
	nde := newDir.dir.children[newName]
	exchange := flags&RenameExchange != 0
	switch {
	case flags&RenameNoReplace != 0 && nde != nil:
		return errAt(syscall.EEXIST)
	case exchange && nde == nil:
		return errAt(syscall.ENOENT)
	}
	src := ode.node
	var dst *Node
	if nde != nil {
		dst = nde.node
	}
	if cross {
		if src.dir != nil && isAncestorOrSelf(src, newDir) {
			return errAt(syscall.EINVAL)
		}
		if dst != nil && dst.dir != nil && isAncestorOrSelf(dst, oldDir) {
			if exchange {
				return errAt(syscall.EINVAL)
			}
			return errAt(syscall.ENOTEMPTY)
		}
	}
	if src == dst {
		return nil
	}
	if !exchange && dst != nil {
		switch {
		case src.dir != nil && dst.dir == nil:
			return errAt(syscall.ENOTDIR)
		case src.dir == nil && dst.dir != nil:
			return errAt(syscall.EISDIR)
		}
	}
	if cross {
		if src.dir != nil && newDir.depth()+src.height() > ns.maxDepth {
			return errAt(syscall.ENOSPC)
		}
		if exchange && dst.dir != nil && oldDir.depth()+dst.height() > ns.maxDepth {
			return errAt(syscall.ENOSPC)
		}
	}
	if !exchange && dst != nil && dst.dir != nil {
		vd := dst.dir
		vd.mu.Lock() // a child of newDir, not an ancestor of oldDir
		if len(vd.children) > 0 {
			vd.mu.Unlock()
			return errAt(syscall.ENOTEMPTY)
		}
		vd.dead = true
		vd.mu.Unlock()
	}

	now := ns.now()
	if exchange {
		src.attrMu.Lock()
		evs := []Event{src.eventLocked(KindDelete, c)}
		src.attrMu.Unlock()
		dst.attrMu.Lock()
		evs = append(evs, dst.eventLocked(KindDelete, c))
		dst.attrMu.Unlock()
		evs[0].Parent, evs[0].Name, evs[0].Path = oldDir.ino, oldName, oldDir.childPath(oldName)
		evs[1].Parent, evs[1].Name, evs[1].Path = newDir.ino, newName, newDir.childPath(newName)
		oldDir.removeLocked(ode, now)
		newDir.removeLocked(nde, now)
		oldDir.insertLocked(oldName, dst, now)
		newDir.insertLocked(newName, src, now)
		for _, n := range []*Node{src, dst} {
			n.attrMu.Lock()
			n.setTimeLocked(ctime, now)
			evs = append(evs, n.eventLocked(KindCreate, c))
			n.attrMu.Unlock()
		}
		for i := range evs {
			evs[i].Renamed = true
		}
		ns.events.pushAll(evs...)
		return nil
	}
	if nde != nil {
		newDir.dropEntryLocked(nde, now, KindDelete, c)
	}
	src.attrMu.Lock()
	ev := src.eventLocked(KindDelete, c)
	src.attrMu.Unlock()
	ev.Parent, ev.Name, ev.Path = oldDir.ino, oldName, oldDir.childPath(oldName)
	ev.Renamed = true
	oldDir.removeLocked(ode, now)
	newDir.insertLocked(newName, src, now)
	src.attrMu.Lock()
	src.setTimeLocked(ctime, now)
	ev2 := src.eventLocked(KindCreate, c)
	src.attrMu.Unlock()
	ev2.Renamed = true
	ns.events.pushAll(ev, ev2) // adjacent: see Event.Renamed
	return nil
}
