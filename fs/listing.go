package fs

import (
	"fmt"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Listings served by the kernel's cache.
//
// A directory opened with FOPEN_CACHE_DIR has its listing kept by the
// kernel in the directory's page cache as it is read (the READDIR or
// READDIRPLUS replies, as they came), and FOPEN_KEEP_CACHE keeps that
// cache across opens; a later listing from offset 0 is served from it
// without a request, and so are telldir/seekdir positions inside it (the
// offsets are the server's cookies, kept with each entry). With
// CAP_NO_OPENDIR_SUPPORT, an OPENDIR answered ENOSYS tells the kernel to
// open every directory of the connection from then on without asking,
// with exactly those two flags, and to send no RELEASEDIR either: a
// listing of an unchanged directory then costs no request at all.
//
// The kernel drops a directory's cached listing (fs/fuse/readdir.c):
//   - when its pages are invalidated: an inode notify with offset 0
//     (noticeDir, notify.go), which the NotifyQueue of every mount sends
//     for each change of the directory's entries it did not make itself;
//   - when the mount itself changed the entries (mknod, mkdir, unlink,
//     rmdir, rename of both directories, symlink, link, create:
//     fuse_dir_changed bumps the directory's i_version);
//   - when the directory's mtime, fetched again at a listing from offset 0
//     once its attributes expired or were invalidated (auto_inval_data,
//     which go-fuse negotiates), is not the one the cache was started at:
//     dcache moves a directory's mtime with every change of its entries.
//
// The last covers the one race of the first two: a READDIR whose reply,
// made before a change, reaches the kernel after the change's notify
// fills the cache with the old listing, but the cache started at the
// old mtime and the notify invalidated the attributes.
//
// Nothing of this needs state in the server: READDIR and READDIRPLUS
// answer from any offset with dcache's stable cookies, whether the kernel
// reads a whole listing to fill its cache, resumes one it only partly
// holds, or reads on after a seekdir beyond it. A listing in progress
// while the directory changes resumes from its cookie: no entry that
// stayed is repeated or skipped.
//
// READDIRPLUS is kept as it is measured (DESIGN.md section 7): the kernel
// fills the cache with whichever request its policy (Options.Readdirplus)
// picks, READDIRPLUS for the first page at least by default. But a listing
// served from the cache gives the kernel no names: an `ls -l` whose names
// expired would look each up again (one LOOKUP per name, where a
// READDIRPLUS refreshes a page of them). So a listing filled by a
// READDIRPLUS from offset 0 lasts as long as the names and attributes it
// brought (the entry or attribute timeout, the shorter): then its
// directory's listing notice is queued (expireListing), and the next
// listing is a READDIRPLUS again. A listing filled by plain READDIR
// (readdirplus never) brought no names and lasts until the directory
// changes; with a timeout of 0 nothing the READDIRPLUS brought lasts at
// all, and neither is anything dropped.
//
// Kernels without these: FOPEN_CACHE_DIR came with Linux 4.20, and a
// kernel before it ignores the two flags (every listing is read from the
// server, as with ListingCacheOff); CAP_NO_OPENDIR_SUPPORT came with 5.1,
// and a kernel before it (which does not offer it in INIT) fails an
// opendir answered ENOSYS, so the server answers OPENDIR with the two
// flags instead: the listing is still cached, at the cost of OPENDIR and
// RELEASEDIR round trips. A server that did not see INIT itself (a
// successor handed the connection) does the same.

// Listing cache policies (Options.ListingCache).
const (
	// ListingCacheAuto (""): the kernel caches listings; OPENDIR is
	// answered ENOSYS where the kernel supports it, else with
	// FOPEN_CACHE_DIR and FOPEN_KEEP_CACHE.
	ListingCacheAuto = "auto"
	// ListingCacheOpenDir: the kernel caches listings; every OPENDIR is
	// answered, with FOPEN_CACHE_DIR and FOPEN_KEEP_CACHE (what a kernel
	// from 4.20 to 5.0 gets with ListingCacheAuto).
	ListingCacheOpenDir = "opendir"
	// ListingCacheOff: no cached listings; every listing reads the
	// directory from the server, between an OPENDIR and a RELEASEDIR
	// (what a kernel before 4.20 does whatever the policy).
	ListingCacheOff = "off"
)

// checkListingCache reports a policy that is none of the constants.
func checkListingCache(p string) error {
	switch p {
	case "", ListingCacheAuto, ListingCacheOpenDir, ListingCacheOff:
		return nil
	}
	return fmt.Errorf("fs: listing cache policy %q: want %q, %q or %q", p, ListingCacheAuto, ListingCacheOpenDir, ListingCacheOff)
}

// listingCaps are the capabilities the server asks for at INIT for its
// listing cache policy.
func (s *Server) listingCaps() uint64 {
	if s.opts.ListingCache == "" || s.opts.ListingCache == ListingCacheAuto {
		return fuse.CAP_NO_OPENDIR_SUPPORT
	}
	return 0
}

// Init implements fuse.RawFileSystem: go-fuse calls it once INIT is
// answered, before any other request is read. It records what the
// kernel offered.
func (s *Server) Init(srv *fuse.Server) {
	s.noOpendir.Store(srv.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0)
}

// OpenDir is OPENDIR. A directory needs no handle: the kernel passes the
// cookie of the last entry it read back as the offset, and cookies are
// stable (dcache), so any listing can resume from any offset. The answer
// picks how the kernel caches listings (see above): ENOSYS, once per
// connection; or the cache flags; or none.
func (s *Server) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !s.enter() {
		return errShutdown
	}
	defer s.exit(OpOpenDir, s.start())
	if _, st := s.dir(in.NodeId); st != fuse.OK {
		return st
	}
	switch s.opts.ListingCache {
	case ListingCacheOff:
		return fuse.OK
	case ListingCacheOpenDir:
	default:
		if s.noOpendir.Load() {
			return fuse.ENOSYS // no OPENDIR nor RELEASEDIR again on this connection
		}
	}
	out.OpenFlags |= fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

// ReleaseDir is RELEASEDIR: there is nothing to release.
func (s *Server) ReleaseDir(in *fuse.ReleaseIn) {}

// listingExpiry is the directories whose listing, filled by a READDIRPLUS,
// has its listing notice scheduled (expireListing).
type listingExpiry struct {
	mu      sync.Mutex          // a leaf
	pending map[uint64]struct{} // guarded by mu
}

// expireListing schedules the listing notice of directory dir for when
// the names and attributes of the READDIRPLUS from offset 0 being
// answered expire, unless one is scheduled already. The notice is queued
// by a timer, outside any handler and lock, and sent by the worker.
func (s *Server) expireListing(dir uint64) {
	if s.opts.ListingCache == ListingCacheOff || !expiresListings() {
		return
	}
	d := min(s.entryTimeout(), s.attrTimeout())
	if d <= 0 {
		return
	}
	e := &s.expiry
	e.mu.Lock()
	if _, ok := e.pending[dir]; ok {
		e.mu.Unlock()
		return
	}
	if e.pending == nil {
		e.pending = make(map[uint64]struct{})
	}
	e.pending[dir] = struct{}{}
	e.mu.Unlock()
	time.AfterFunc(d, func() {
		e.mu.Lock()
		delete(e.pending, dir)
		e.mu.Unlock()
		s.nq.pushDir(dir)
	})
}
