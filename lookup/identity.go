package lookup

import (
	"strings"

	"github.com/devfsd/devfsd/dcache"
)

// identity answers, for one request, "is this caller the loader?" — asked
// lazily, at most once, and only where the answer changes what the request
// does (see "The loader's own lookups" in the package doc). A hit, a
// negative hit, a listing or a change that takes its directory's sem
// without waiting and finds no load of its name in flight never asks.
// It lives on the request's stack.
type identity struct {
	r     *Resolver
	c     dcache.Caller
	known bool // the answer is in is
	is    bool
}

// whoIs returns c's identity for one request. Without Options.IsLoader
// the answer is known at once: only the origin says.
func (r *Resolver) whoIs(c dcache.Caller) identity {
	if r.isLoader == nil {
		return identity{r: r, c: c, known: true, is: c.Origin == dcache.OriginLoader}
	}
	return identity{r: r, c: c}
}

// loader reports whether the caller is the loader: Origin
// dcache.OriginLoader, or what Options.IsLoader says, asked once.
func (id *identity) loader() bool {
	if !id.known {
		id.is, id.known = id.r.isLoaderCaller(id.c), true
	}
	return id.is
}

// isLoaderCaller is the whole question, asked afresh.
func (r *Resolver) isLoaderCaller(c dcache.Caller) bool {
	return c.Origin == dcache.OriginLoader || (r.isLoader != nil && r.isLoader(c))
}

// MustNotWaitForNotify reports whether a change of path (relative to the
// root, as dcache.Namespace.Register takes it) made by c must not wait
// for its kernel notifies: c is the loader, or path or a directory on the
// way to it is a name with a load in flight (the deadlock rule "Notifies
// that cannot be delivered" of the package doc). Call it after the change
// and before the wait, with no lock held; it takes each directory's mu on
// the way, one at a time, and never sem.
func (r *Resolver) MustNotWaitForNotify(path string, c dcache.Caller) bool {
	if notifyRuleOff {
		return false
	}
	return r.loading(path) || r.isLoaderCaller(c)
}

// loading reports whether path, or a directory on the way to it, is a
// name with a load in flight.
func (r *Resolver) loading(path string) bool {
	d := r.ns.Root()
	for len(path) > 0 {
		name, rest, _ := strings.Cut(path, "/")
		path = rest
		if name == "" {
			continue
		}
		if !d.IsDir() || dcache.CheckName(name) != nil {
			return false
		}
		d.LockMu()
		_, inflight := d.InflightLocked(name).(*call)
		d.UnlockMu()
		if inflight {
			return true
		}
		child, err := d.Lookup(name)
		if err != nil {
			return false // nothing below it is in any kernel's cache
		}
		d = child
	}
	return false
}
