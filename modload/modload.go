// Package modload holds the module-loader plug-ins of devfsd and the two
// small interfaces they share with the rest of the daemon.
//
// A loader answers "load what provides NAME" for a lookup that missed (the
// LOOKUP event of DESIGN.md section 2.5) and reports done; while it runs it
// may register nodes through a [Registrar], the devfs_register analogue.
// The lookup path then looks at the namespace again and answers from what
// is there: a loader never answers with a node, only with done or an error.
//
// Imports point one way (DESIGN.md section 1): modload imports neither
// dcache, lookup nor fs. lookup declares the Loader interface it needs,
// dcache offers registration, and cmd/devfsd adapts both to the types here:
//
//	dcache  --(adapter in cmd)-->  modload.Registrar
//	modload.Loader  --(adapter in cmd)-->  lookup's loader interface
//
// Paths are relative to the mount root, slash separated, clean, and never
// start with a slash: "null", "net/tun", "snd/controlC0". The root itself
// is "".
//
// Loaders live in subpackages: modload/builtin is the embedded default
// catalogue of real Linux device numbers; modload/helper forwards misses to
// a helper daemon attached from outside the process (its transport, the
// control socket, is package control, behind a small interface); and
// modload/chain asks the helper while one is attached and a fallback
// (builtin, by default) while none is.
package modload

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
)

// Node is one registration: what devfs_register, devfs_mk_dir and
// devfs_mk_symlink took, as one value so that a catalogue can be a table.
type Node struct {
	// Path is where the node goes, relative to the mount root ("net/tun").
	// Missing parent directories are created by the Registrar, mode 0755
	// with an owner of its choosing (dcache: the node's); a loader that
	// cares registers the directory first.
	Path string
	// Type is TypeChar, TypeBlock, TypeDir or TypeSymlink (a loader
	// registers no other type).
	Type dcache.Type
	// Perm holds the permission bits (and setuid, setgid, sticky: 07777),
	// never the file type bits. It is served as given: 0000 stays 0000.
	Perm uint32
	// Major and Minor are the device number of a TypeChar or TypeBlock node
	// and zero otherwise.
	Major, Minor uint32
	UID, GID     uint32
	// Target is the link target of a TypeSymlink node and empty otherwise. It is
	// stored as given, relative or absolute, and never resolved.
	Target string
}

// String renders the node the way ls -l and devices.txt would say it, for
// logs and test failures: "char 1:3 0666 0:0 null".
func (n Node) String() string {
	switch n.Type {
	case dcache.TypeChar, dcache.TypeBlock:
		return fmt.Sprintf("%s %d:%d %04o %d:%d %s", n.Type, n.Major, n.Minor, n.Perm, n.UID, n.GID, n.Path)
	case dcache.TypeSymlink:
		return fmt.Sprintf("%s %s -> %s", n.Type, n.Path, n.Target)
	}
	return fmt.Sprintf("%s %04o %d:%d %s", n.Type, n.Perm, n.UID, n.GID, n.Path)
}

// Validate reports whether n is well formed: a valid type, a clean
// relative path with no "." or ".." element and no empty name, permission
// bits only, a device number only on devices and a target only (and
// always) on symlinks. Registrars may rely on loaders having checked it,
// and should check it again where a bad node would corrupt their state.
func (n Node) Validate() error {
	if err := ValidatePath(n.Path); err != nil {
		return err
	}
	if n.Path == "" {
		return fmt.Errorf("modload: node %q: the root cannot be registered", n.Path)
	}
	if n.Perm&^07777 != 0 {
		return fmt.Errorf("modload: node %q: mode %#o has bits outside 07777", n.Path, n.Perm)
	}
	switch n.Type {
	case dcache.TypeChar, dcache.TypeBlock:
		if n.Target != "" {
			return fmt.Errorf("modload: node %q: a device has no target", n.Path)
		}
		// Linux device numbers: 12-bit major, 20-bit minor.
		if n.Major >= 1<<12 || n.Minor >= 1<<20 {
			return fmt.Errorf("modload: node %q: device number %d:%d out of range", n.Path, n.Major, n.Minor)
		}
	case dcache.TypeDir:
		if n.Target != "" || n.Major != 0 || n.Minor != 0 {
			return fmt.Errorf("modload: node %q: a directory has no target or device number", n.Path)
		}
	case dcache.TypeSymlink:
		if n.Target == "" {
			return fmt.Errorf("modload: node %q: a symlink needs a target", n.Path)
		}
		if n.Major != 0 || n.Minor != 0 {
			return fmt.Errorf("modload: node %q: a symlink has no device number", n.Path)
		}
	default:
		return fmt.Errorf("modload: node %q: invalid type %v", n.Path, n.Type)
	}
	return nil
}

// ValidatePath reports whether p is a path as the Registrar takes it:
// "" for the root, else clean, relative, without "." or ".." elements.
func ValidatePath(p string) error {
	if p == "" {
		return nil
	}
	if strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return fmt.Errorf("modload: path %q is not clean and relative to the mount root", p)
	}
	for _, e := range strings.Split(p, "/") {
		if e == "." || e == ".." || e == "" {
			return fmt.Errorf("modload: path %q has a %q element", p, e)
		}
		if strings.IndexByte(e, 0) >= 0 {
			return fmt.Errorf("modload: path %q has a NUL byte", p)
		}
	}
	return nil
}

// ValidateLookup reports whether dir/name is a load request a loader may
// act on: name one path element (not "", "." or "..", no '/' or NUL), dir
// as ValidatePath takes it. The error wraps syscall.EINVAL.
func ValidateLookup(dir, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid name %q: %w", name, syscall.EINVAL)
	}
	if err := ValidatePath(dir); err != nil {
		return fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	return nil
}

// Registrar is how a loader puts nodes into the namespace.
//
// Register creates n.Path with the parents it lacks (directories 0755, as
// devfs did). If the name exists already, whatever it is, Register
// changes nothing and returns an error for which errors.Is(err,
// syscall.EEXIST) holds; loaders treat that as success (see IgnoreExist),
// which makes a module that is loaded again, or whose node was made by
// hand first, harmless. A parent that exists and is not a directory is
// ENOTDIR. Register must not wait on a loader (it is called by one) and
// must be safe for concurrent use.
type Registrar interface {
	Register(n Node) error
}

// RegistrarFunc adapts a function to a Registrar.
type RegistrarFunc func(Node) error

// Register calls f(n).
func (f RegistrarFunc) Register(n Node) error { return f(n) }

// IgnoreExist returns nil for an error that says the name exists already
// (wrapping syscall.EEXIST or fs.ErrExist) and err otherwise.
func IgnoreExist(err error) error {
	if errors.Is(err, syscall.EEXIST) || errors.Is(err, fs.ErrExist) {
		return nil
	}
	return err
}

// Loader loads what provides name in directory dir (a path as Registrar
// takes it; "" is the root). It returns when the load is done: nil means
// "done", whether or not anything was registered — the caller looks at the
// namespace again. An error for which errors.Is(err, syscall.ENOENT) holds
// means no module provides the name (the caller caches the miss
// negatively); other errors are failures of the load. Load is safe for
// concurrent use, honours ctx before it changes any state, and must not
// look names up through the mount.
type Loader interface {
	Load(ctx context.Context, dir, name string, caller dcache.Caller) error
}

// A Decliner is a Loader that can tell at once — without blocking, without
// side effects, without asking anyone — that it has nothing for a name:
// the built-in catalogue's index, say. Declines(dir, name) true promises
// that Load(ctx, dir, name, caller) would return an error wrapping
// syscall.ENOENT and register nothing; false promises nothing. Package
// lookup uses it to answer such a miss on the caller's goroutine instead
// of starting a load (no goroutine, timer or channel per miss: the miss
// path of mknod churn and of probing loops).
type Decliner interface {
	Declines(dir, name string) bool
}

// LoaderFunc adapts a function to a Loader.
type LoaderFunc func(ctx context.Context, dir, name string, caller dcache.Caller) error

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, dir, name string, caller dcache.Caller) error {
	return f(ctx, dir, name, caller)
}
