package kernel

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Namespace is what the kernel source needs of the namespace: the
// Registrar every loader registers through, and three calls that act
// only on a node the source itself registered, named by an identity
// (an inode number) that no other node ever has — so that a node a user
// made at the same name is never removed or touched.
type Namespace interface {
	modload.Registrar
	// Lookup reports the node at path and its identity; ok is false if
	// nothing is there. The node's Type is 0 for a type modload has no
	// name for (fifo, socket, regular file).
	Lookup(path string) (n modload.Node, id uint64, ok bool)
	// Unregister removes the node at path if its identity is id: ENOENT
	// if nothing is there, ESTALE (and nothing changes) if another node
	// is.
	Unregister(path string, id uint64) error
	// Changed says that the kernel changed the device at path (identity
	// id): a CHANGE event for it, its mode and owner as they are. ENOENT
	// and ESTALE as Unregister.
	Changed(path string, id uint64) error
}

// errStale says that the node at a path is no longer the one the source
// registered.
var errStale = fmt.Errorf("another node is at the name: %w", syscall.ESTALE)

// DcacheNamespace is a Namespace over a dcache.Namespace. Every change
// it makes is attributed to Caller.
//
// Unregister and Changed resolve the path, compare the inode number and
// then act, in two dcache calls: a node that a user makes at the name in
// between (unlinking the kernel's first) is acted on as if it were the
// kernel's. dcache has no call that does both under one lock.
type DcacheNamespace struct {
	NS     *dcache.Namespace
	Caller dcache.Caller
}

var _ Namespace = DcacheNamespace{}

var toDcache = map[dcache.Type]dcache.Type{
	dcache.TypeChar:    dcache.TypeChar,
	dcache.TypeBlock:   dcache.TypeBlock,
	dcache.TypeDir:     dcache.TypeDir,
	dcache.TypeSymlink: dcache.TypeSymlink,
}

var fromDcache = map[dcache.Type]dcache.Type{
	dcache.TypeChar:    dcache.TypeChar,
	dcache.TypeBlock:   dcache.TypeBlock,
	dcache.TypeDir:     dcache.TypeDir,
	dcache.TypeSymlink: dcache.TypeSymlink,
}

// Register implements modload.Registrar.
func (d DcacheNamespace) Register(n modload.Node) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	_, err := d.NS.Register(n.Path, dcache.Spec{
		Type: toDcache[n.Type], Mode: n.Perm, Uid: n.UID, Gid: n.GID,
		Major: n.Major, Minor: n.Minor, Target: n.Target,
	}, d.Caller)
	return err
}

// Lookup implements Namespace.
func (d DcacheNamespace) Lookup(path string) (modload.Node, uint64, bool) {
	node, err := d.NS.Resolve(path)
	if err != nil {
		return modload.Node{}, 0, false
	}
	a := node.Attr()
	n := modload.Node{Path: path, Type: fromDcache[a.Type], Perm: a.Mode & dcache.PermMask,
		Major: a.Major, Minor: a.Minor, UID: a.Uid, GID: a.Gid}
	if a.Type == dcache.TypeSymlink {
		n.Target, _ = node.Readlink()
	}
	return n, a.Ino, true
}

func (d DcacheNamespace) resolve(path string, id uint64) (*dcache.Node, error) {
	node, err := d.NS.Resolve(path)
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return nil, fmt.Errorf("%s: %w", path, syscall.ENOENT)
		}
		return nil, err
	}
	if node.Ino() != id {
		return nil, fmt.Errorf("%s: %w", path, errStale)
	}
	return node, nil
}

// Unregister implements Namespace.
func (d DcacheNamespace) Unregister(path string, id uint64) error {
	if _, err := d.resolve(path, id); err != nil {
		return err
	}
	return d.NS.Unregister(path, d.Caller)
}

// Changed implements Namespace: the node's mode set to itself, which
// dcache reports as a CHANGE.
func (d DcacheNamespace) Changed(path string, id uint64) error {
	node, err := d.resolve(path, id)
	if err != nil {
		return err
	}
	a := node.Attr()
	_, err = node.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: a.Mode & dcache.PermMask}, d.Caller)
	return err
}
