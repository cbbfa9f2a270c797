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
// changes take no sem and wait for nothing: like its registrations they
// take only mu (inside dcache), so that a loader making the node it is
// loading through the mount cannot queue behind an unlink that holds sem
// while it waits for that very load.

// lockForChange takes dir's sem exclusive and waits for a load of name.
// On success the caller holds sem and must UpWrite it.
func (r *Resolver) lockForChange(ctx context.Context, op string, dir *dcache.Node, name string) error {
	sem := dir.Sem()
	if sem.DownWriteCtx(ctx) != nil {
		return interrupted(op, name)
	}
	if err := r.waitForLoad(ctx, dir, name); err != nil {
		sem.UpWrite()
		return interrupted(op, name)
	}
	return nil
}

// checkDir makes the non-directory and bad-name errors dcache would, before
// any lock is taken (Sem of a non-directory panics).
func checkDir(op string, dir *dcache.Node, name string) error {
	if !dir.IsDir() {
		return pathErr(op, name, syscall.ENOTDIR)
	}
	return dcache.CheckName(name)
}

func (r *Resolver) change(ctx context.Context, op string, dir *dcache.Node, name string, c dcache.Caller, fn func() error) error {
	if err := checkDir(op, dir, name); err != nil {
		return err
	}
	if r.bypass(c) {
		return fn()
	}
	if err := r.lockForChange(ctx, op, dir, name); err != nil {
		return err
	}
	defer dir.Sem().UpWrite()
	return fn()
}

// Mknod makes a device, fifo, socket or regular file (see dcache.Node.Mknod).
func (r *Resolver) Mknod(ctx context.Context, dir *dcache.Node, name string, mode, major, minor uint32, c dcache.Caller) (n *dcache.Node, err error) {
	err = r.change(ctx, "mknod", dir, name, c, func() error {
		n, err = dir.Mknod(name, mode, major, minor, c)
		return err
	})
	return n, err
}

// Mkdir makes a directory (see dcache.Node.Mkdir).
func (r *Resolver) Mkdir(ctx context.Context, dir *dcache.Node, name string, mode uint32, c dcache.Caller) (n *dcache.Node, err error) {
	err = r.change(ctx, "mkdir", dir, name, c, func() error {
		n, err = dir.Mkdir(name, mode, c)
		return err
	})
	return n, err
}

// Symlink makes a symlink (see dcache.Node.Symlink).
func (r *Resolver) Symlink(ctx context.Context, dir *dcache.Node, name, target string, c dcache.Caller) (n *dcache.Node, err error) {
	err = r.change(ctx, "symlink", dir, name, c, func() error {
		n, err = dir.Symlink(name, target, c)
		return err
	})
	return n, err
}

// Link gives node a new name (see dcache.Node.Link).
func (r *Resolver) Link(ctx context.Context, dir *dcache.Node, name string, node *dcache.Node, c dcache.Caller) error {
	return r.change(ctx, "link", dir, name, c, func() error { return dir.Link(name, node, c) })
}

// Unlink removes a non-directory (see dcache.Node.Unlink).
func (r *Resolver) Unlink(ctx context.Context, dir *dcache.Node, name string, c dcache.Caller) error {
	return r.change(ctx, "unlink", dir, name, c, func() error { return dir.Unlink(name, c) })
}

// Rmdir removes an empty directory (see dcache.Node.Rmdir).
func (r *Resolver) Rmdir(ctx context.Context, dir *dcache.Node, name string, c dcache.Caller) error {
	return r.change(ctx, "rmdir", dir, name, c, func() error { return dir.Rmdir(name, c) })
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
	if oldDir.Namespace() != newDir.Namespace() || oldDir.Namespace() != r.ns || r.bypass(c) {
		return r.ns.Rename(oldDir, oldName, newDir, newName, flags, c) // EXDEV, or the loader's
	}
	if oldDir == newDir {
		return r.change(ctx, "rename", oldDir, oldName, c, func() error {
			if oldName != newName {
				if err := r.waitForLoad(ctx, oldDir, newName); err != nil {
					return err
				}
			}
			return r.ns.Rename(oldDir, oldName, newDir, newName, flags, c)
		})
	}
	first, second := oldDir, newDir
	if second.Ino() < first.Ino() {
		first, second = second, first
	}
	if first.Sem().DownWriteCtx(ctx) != nil {
		return interrupted("rename", oldName)
	}
	defer first.Sem().UpWrite()
	if second.Sem().DownWriteCtx(ctx) != nil {
		return interrupted("rename", oldName)
	}
	defer second.Sem().UpWrite()
	if err := r.waitForLoad(ctx, oldDir, oldName); err != nil {
		return err
	}
	if err := r.waitForLoad(ctx, newDir, newName); err != nil {
		return err
	}
	return r.ns.Rename(oldDir, oldName, newDir, newName, flags, c)
}

// ReadDir lists dir (see dcache.Node.ReadDir) holding its sem shared; the
// loader's own listings take no sem. readdir never asks the loader.
func (r *Resolver) ReadDir(ctx context.Context, dir *dcache.Node, offset uint64, max int, c dcache.Caller) ([]dcache.DirEntry, error) {
	if !dir.IsDir() || r.bypass(c) {
		return dir.ReadDir(offset, max)
	}
	sem := dir.Sem()
	if sem.DownReadCtx(ctx) != nil {
		return nil, interrupted("readdir", dir.Path())
	}
	defer sem.UpRead()
	return dir.ReadDir(offset, max)
}
