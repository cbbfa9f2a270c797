package dcache

import (
	"strings"
	"syscall"
)

// UnregisterIf removes the node at path if it is the node whose inode
// number is ino, in one step under the parent directory's mu: whatever
// happens at the name meanwhile (the node unlinked and another made in
// its place, a rename over it), a node other than ino is never removed.
// It is ENOENT if nothing is at path (or a parent is missing or not a
// directory), ESTALE if another node is there, and ENOTEMPTY if ino is a
// directory with entries: unlike Unregister, a directory is removed only
// when empty, as rmdir(2) removes it, and is dead afterwards. The root is
// EBUSY. Nothing changes on an error. On success it queues an UNREGISTER
// event.
//
// It is how a device source removes only what it registered itself: it
// remembers the inode number Register returned and names it here.
func (ns *Namespace) UnregisterIf(path string, ino uint64, c Caller) error {
	err := ns.unregisterIf(path, ino, c)
	ns.events.flush()
	return err
}

func (ns *Namespace) unregisterIf(path string, ino uint64, c Caller) error {
	parts, err := splitPath("unregister", path)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return pathErr("unregister", path, syscall.EBUSY)
	}
	parent, err := ns.Resolve(strings.Join(parts[:len(parts)-1], "/"))
	if err != nil {
		if e := errnoOf(err); e != syscall.ENOTDIR {
			return pathErr("unregister", path, e)
		}
		return pathErr("unregister", path, syscall.ENOENT)
	}
	if parent.dir == nil {
		return pathErr("unregister", path, syscall.ENOENT)
	}
	now := ns.now()
	pd := parent.dir
	pd.mu.Lock()
	defer pd.mu.Unlock()
	// A parent removed since Resolve is dead and empty: ENOENT below.
	de := pd.children[parts[len(parts)-1]]
	switch {
	case de == nil:
		return pathErr("unregister", path, syscall.ENOENT)
	case de.node.ino != ino:
		return pathErr("unregister", path, syscall.ESTALE)
	}
	if vd := de.node.dir; vd != nil {
		vd.mu.Lock() // child after parent
		if len(vd.children) > 0 {
			vd.mu.Unlock()
			return pathErr("unregister", path, syscall.ENOTEMPTY)
		}
		vd.dead = true
		vd.mu.Unlock()
	}
	parent.dropEntryLocked(de, now, KindUnregister, c)
	return nil
}
