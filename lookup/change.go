package lookup

import (
	"context"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
)

// The namespace changes a FUSE server makes. Each takes the directory's sem
// exclusive (EINTR if ctx ends first), waits — holding it — for a load of
// the name in flight, then makes the change in dcache and releases sem. A
// cancelled ctx is honoured only before the change. The loader's own
// changes wait for nothing: a loader making the node it is loading
// through the mount must not queue behind an unlink that holds sem while
// it waits for that very load, nor wait for that load itself. Whether the
// caller is the loader is asked only where it would wait: when sem cannot
// be had at once (the loader then goes on under mu alone, as its
// registrations do), or when a load of the name is in flight.

// downWrite takes dir's sem exclusive for id's change, unless it cannot
// be had at once and id is the loader, which does not wait for it. It
// reports whether it took sem; the caller must then UpWrite it.
func (r *Resolver) downWrite(ctx context.Context, op string, dir *dcache.Node, name string, id *identity) (bool, error) {
	sem := dir.Sem()
	if sem.TryDownWrite() {
		return true, nil
	}
	if id.loader() {
		return false, nil
	}
	if sem.DownWriteCtx(ctx) != nil {
		return false, interrupted(op, name)
	}
	return true, nil
}

// lockForChange takes dir's sem exclusive (downWrite) and waits for a load
// of name (waitForLoad). On success the caller holds sem if held is true
// and must UpWrite it.
func (r *Resolver) lockForChange(ctx context.Context, op string, dir *dcache.Node, name string, id *identity) (held bool, err error) {
	held, err = r.downWrite(ctx, op, dir, name, id)
	if err != nil {
		return false, err
	}
	if err := r.waitForLoad(ctx, dir, name, id); err != nil {
		if held {
			dir.Sem().UpWrite()
		}
		return false, interrupted(op, name)
	}
	return held, nil
}

// checkDir makes the non-directory and bad-name errors dcache would, before
// any lock is taken (Sem of a non-directory panics).
func checkDir(op string, dir *dcache.Node, name string) error {
	if !dir.IsDir() {
		return pathErr(op, name, syscall.ENOTDIR)
	}
	return dcache.CheckName(name)
}

func (r *Resolver) change(ctx context.Context, op string, dir *dcache.Node, name string, c dcache.Caller, fn func(id *identity) error) error {
	if err := checkDir(op, dir, name); err != nil {
		return err
	}
	id := r.whoIs(c)
	if c.Origin == dcache.OriginLoader {
		return fn(&id)
	}
	held, err := r.lockForChange(ctx, op, dir, name, &id)
	if err != nil {
		return err
	}
	if held {
		defer dir.Sem().UpWrite()
	}
	return fn(&id)
}

// Mknod makes a device, fifo, socket or regular file (see dcache.Node.Mknod).
func (r *Resolver) Mknod(ctx context.Context, dir *dcache.Node, name string, mode, major, minor uint32, c dcache.Caller) (n *dcache.Node, err error) {
	err = r.change(ctx, "mknod", dir, name, c, func(*identity) error {
		n, err = dir.Mknod(name, mode, major, minor, c)
		return err
	})
	return n, err
}

// Mkdir makes a directory (see dcache.Node.Mkdir).
func (r *Resolver) Mkdir(ctx context.Context, dir *dcache.Node, name string, mode uint32, c dcache.Caller) (n *dcache.Node, err error) {
	err = r.change(ctx, "mkdir", dir, name, c, func(*identity) error {
		n, err = dir.Mkdir(name, mode, c)
		return err
	})
	return n, err
}

// Symlink makes a symlink (see dcache.Node.Symlink).
func (r *Resolver) Symlink(ctx context.Context, dir *dcache.Node, name, target string, c dcache.Caller) (n *dcache.Node, err error) {
	err = r.change(ctx, "symlink", dir, name, c, func(*identity) error {
		n, err = dir.Symlink(name, target, c)
		return err
	})
	return n, err
}

// Link gives node a new name (see dcache.Node.Link).
func (r *Resolver) Link(ctx context.Context, dir *dcache.Node, name string, node *dcache.Node, c dcache.Caller) error {
	return r.change(ctx, "link", dir, name, c, func(*identity) error { return dir.Link(name, node, c) })
}

// Unlink removes a non-directory (see dcache.Node.Unlink).
func (r *Resolver) Unlink(ctx context.Context, dir *dcache.Node, name string, c dcache.Caller) error {
	return r.change(ctx, "unlink", dir, name, c, func(*identity) error { return dir.Unlink(name, c) })
}

// Rmdir removes an empty directory (see dcache.Node.Rmdir).
func (r *Resolver) Rmdir(ctx context.Context, dir *dcache.Node, name string, c dcache.Caller) error {
	return r.change(ctx, "rmdir", dir, name, c, func(*identity) error { return dir.Rmdir(name, c) })
}

// Rename renames (see dcache.Namespace.Rename), holding both directories'
// sems exclusive, taken in inode-number order, and waiting for loads of
// both names.
func (r *Resolver) Rename(ctx context.Context, oldDir *dcache.Node, oldName string, newDir *dcache.Node, newName string, flags uint32, c dcache.Caller) error {
	if err := checkDir("rename", oldDir, oldName); err != nil {
		return err
	}
	if err := checkDir("rename", newDir, newName); err != nil {
		return err
	}
	if oldDir.Namespace() != newDir.Namespace() || oldDir.Namespace() != r.ns || c.Origin == dcache.OriginLoader {
		return r.ns.Rename(oldDir, oldName, newDir, newName, flags, c) // EXDEV, or the loader's
	}
	if oldDir == newDir {
		return r.change(ctx, "rename", oldDir, oldName, c, func(id *identity) error {
			if oldName != newName {
				if err := r.waitForLoad(ctx, oldDir, newName, id); err != nil {
					return err
				}
			}
			return r.ns.Rename(oldDir, oldName, newDir, newName, flags, c)
		})
	}
	id := r.whoIs(c)
	first, second := oldDir, newDir
	if second.Ino() < first.Ino() {
		first, second = second, first
	}
	for _, d := range []*dcache.Node{first, second} {
		held, err := r.downWrite(ctx, "rename", d, oldName, &id)
		if err != nil {
			return err
		}
		if held {
			defer d.Sem().UpWrite()
		}
	}
	if err := r.waitForLoad(ctx, oldDir, oldName, &id); err != nil {
		return err
	}
	if err := r.waitForLoad(ctx, newDir, newName, &id); err != nil {
		return err
	}
	return r.ns.Rename(oldDir, oldName, newDir, newName, flags, c)
}

// ReadDir lists dir (see dcache.Node.ReadDir) holding its sem shared. The
// loader's own listings do not wait for sem: a listing that cannot have
// it at once asks whether the caller is the loader, which then lists
// under mu alone. readdir never asks the loader for names.
func (r *Resolver) ReadDir(ctx context.Context, dir *dcache.Node, offset uint64, max int, c dcache.Caller) ([]dcache.DirEntry, error) {
	if !dir.IsDir() || c.Origin == dcache.OriginLoader {
		return dir.ReadDir(offset, max)
	}
	sem := dir.Sem()
	if !sem.TryDownRead() {
		if id := r.whoIs(c); id.loader() {
			return dir.ReadDir(offset, max)
		}
		if sem.DownReadCtx(ctx) != nil {
			return nil, interrupted("readdir", dir.Path())
		}
	}
	defer sem.UpRead()
	return dir.ReadDir(offset, max)
}
