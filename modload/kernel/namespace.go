package kernel

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Namespace is what the kernel source needs of the namespace. Every node
// is named by an identity (an inode number) that no other node ever has:
// Register returns it, and the other calls act only on the node that has
// it, so that a node a user made at the same name is never removed or
// touched.
type Namespace interface {
	// Register registers n, creating missing parent directories, as
	// modload.Registrar does (EEXIST if the name is taken), and returns
	// the identity of the node it made.
	Register(n modload.Node) (id uint64, err error)
	// Lookup reports the node at path and its identity; ok is false if
	// nothing is there. The node's Type is 0 for a type modload has no
	// name for (fifo, socket, regular file).
	Lookup(path string) (n modload.Node, id uint64, ok bool)
	// Unregister removes the node at path if its identity is id, in one
	// step: ENOENT if nothing is there, ESTALE (and nothing changes) if
	// another node is, ENOTEMPTY (and nothing changes) if it is a
	// directory that has entries.
	Unregister(path string, id uint64) error
	// Changed says that the kernel changed the device at path (identity
	// id): a CHANGE event for it, its mode and owner as they are. ENOENT
	// and ESTALE as Unregister.
	Changed(path string, id uint64) error
}

// errStale says that the node at a path is no longer the one the source
// registered.
var errStale = fmt.Errorf("another node is at the name: %w", syscall.ESTALE)

// DcacheNamespace is a Namespace over a dcache.Namespace; identities are
// inode numbers. Every change it makes is attributed to Caller.
// Unregister is dcache's UnregisterIf, one step under the parent
// directory's lock. Changed resolves the path, compares the inode number
// and raises the CHANGE on the node it resolved: a node made at the name
// after the comparison is not the one changed.
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

// Register implements Namespace.
func (d DcacheNamespace) Register(n modload.Node) (uint64, error) {
	if err := n.Validate(); err != nil {
		return 0, fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	node, err := d.NS.Register(n.Path, dcache.Spec{
		Type: toDcache[n.Type], Mode: n.Perm, Uid: n.UID, Gid: n.GID,
		Major: n.Major, Minor: n.Minor, Target: n.Target,
	}, d.Caller)
	if err != nil {
		return 0, err
	}
	return node.Ino(), nil
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
	err := unregisterIf(d, path, id)
	if errors.Is(err, syscall.ESTALE) {
		return fmt.Errorf("%s: %w", path, errStale)
	}
	return err
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
