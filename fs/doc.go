// Package fs is devfsd's FUSE server: go-fuse v2's raw API
// (fuse.RawFileSystem) over the namespace of package dcache and the lookup
// protocol of package lookup. There is one tree, the namespace; the server
// keeps no tree of its own, only what the FUSE protocol obliges it to
// remember about the kernel: which node ids the kernel holds, and which
// files it has open.
//
// # Node ids and FORGET
//
// A node's FUSE node id is its dcache inode number (the root is 1), with
// the namespace's generation number, so ids are never reused and never
// allocated here. The server's node table maps each id the kernel holds to
// its *dcache.Node with the kernel's lookup count: every reply that gives
// the kernel an entry — LOOKUP, MKNOD, MKDIR, SYMLINK, LINK, CREATE, and
// every READDIRPLUS entry but "." and ".." — adds one before it is sent,
// and FORGET and BATCH_FORGET subtract. An id stays valid until the kernel
// forgets it, even after the node was unlinked, renamed or unregistered;
// when its count reaches zero the id leaves the table, and the node is
// untouched: a node never vanishes from the namespace because the kernel
// dropped its caches (drop_caches), and nothing the kernel forgets can
// bring a removed node back, because lookups answer only from the
// namespace.
//
// # Requests
//
// LOOKUP runs lookup.Resolver.Lookup, which asks the loader on a miss and
// waits; a miss is answered as a negative entry that the kernel caches for
// the negative timeout. MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR and
// RENAME(2) run the Resolver's changes, which wait for a load of the same
// name in flight. GETATTR, SETATTR, READLINK and file content go straight
// to the dcache.Node. READDIR and READDIRPLUS list through the Resolver
// (which never asks the loader), offsets being dcache's stable cookies,
// "." and ".." included; the kernel keeps the listings it read and
// serves them again without a request (listing.go: FOPEN_CACHE_DIR,
// FOPEN_KEEP_CACHE, and no OPENDIR or RELEASEDIR where the kernel
// supports CAP_NO_OPENDIR_SUPPORT). STATFS reports the namespace's limits and a name
// limit of 255. ACCESS checks mode bits (only sent without
// default_permissions). OPEN, CREATE, READ, WRITE, FLUSH, FSYNC, RELEASE
// and FALLOCATE (mode 0 and KEEP_SIZE) serve small regular files; a handle
// holds its *dcache.Node, so an unlinked file stays readable and writable
// through it. Extended attributes are not real here and are disabled
// (ENOSYS once; the kernel stops asking). Everything else is ENOSYS from
// the embedded fuse.NewDefaultRawFileSystem.
//
// Errors from dcache and lookup wrap a syscall.Errno and are mapped with
// errors.As; anything else is a bug below, logged and answered EIO. Modes
// and owners are passed through as stored: mode 0000 stays 0000. The
// caller's pid, uid and gid come from the request header as a
// dcache.Caller with Origin OriginFUSE.
//
// # Interrupts
//
// A FUSE INTERRUPT closes the request's cancel channel; a request that may
// wait gets a context (reqCtx) that is done when shutdown begins, or when
// the interrupt came from a fatal signal: its waits are killable, not
// interruptible. The kernel sends INTERRUPT for any signal, and Go's
// runtime alone sends its programs SIGURG many times a second; answering
// those with EINTR would fail open(2) and stat(2) calls that no local file
// system fails (see reqCtx). Package lookup honours a done context only
// before anything changed and answers EINTR, so a `stat` killed while it
// waits on a slow loader returns at once, and the load goes on for the
// other waiters.
//
// # Kernel cache invalidation
//
// The NotifyQueue is the namespace's event sink (with views, one queue per
// mount behind a NotifyMux). Changes made through this mount need no
// notify (its kernel made them; a request names its mount in
// dcache.Caller.Mount). For every other change —
// REGISTER (loader, control API), UNREGISTER, the expiry of a negative
// entry, a mode or owner change by the daemon — it queues an entry notify
// (which also kills a negative dentry), a delete notify, or an inode
// (attribute) notify; and for every change of a directory's entries an
// inode notify of the directory's pages, which drops the listing its
// kernel cached (one per directory while it waits to be sent; the
// mount that made a change drops its own listing, except a moved
// directory's, whose ".." changed). One worker goroutine sends them,
// never a handler and never with a namespace lock held: the kernel
// applies a notify under its own directory lock, which a process blocked
// in one of our requests may hold. The queue is bounded; overflow is counted and logged, and costs at
// most one cache timeout of staleness in the kernel.
//
// Misses nobody looks up again expire without a lookup to meet them: while
// mounted, a sweeper drops them periodically (sweep.go), at an interval
// that follows the negative timeout, so their EXPIRE notifies are sent too.
//
// # Views
//
// One daemon may serve several mounts of the namespace (view.go has the
// details; package viewpath the pattern language). Each is a Server of
// its own — FUSE connection, node table and FORGET counts, notify queue
// and worker — made by NewView over the main server's resolver, with a
// viewpath.View: allow and deny glob patterns on paths
// relative to the mount's root, and mode/owner overrides. The view is
// the mount's, never the caller's (the kernel's dentry cache is shared
// by every process using a mount). In a view, a hidden name is ENOENT at
// LOOKUP without asking the loader and without a negative entry in the
// shared namespace; READDIR and READDIRPLUS leave it out; creating it
// is EACCES; attribute replies show the overrides (a chmod or chown
// through the view changes the namespace, the override still shows). A
// NotifyMux hands every event to every mount's queue; each notifies its
// own kernel of what it did not make itself and its view shows. The main
// server, which has no view, pays one nil check per hook.
//
// # Special mounts
//
// A mount is a /dev for a container only with terminals and shared
// memory: MountSpecials (special.go) mounts, on a serving mount, a devpts
// instance of its own on pts (which the ptmx 5:2 beside it opens) and a
// tmpfs on shm; Specials.Close detaches them before the FUSE mount goes.
// While mounted, RMDIR and RENAME of those directories are EBUSY on every
// mount of the namespace.
//
// # Regular files
//
// Regular files are sparse (dcache): attributes report st_blocks from the
// bytes stored, LSEEK answers SEEK_DATA and SEEK_HOLE, and an open handle
// counts as an open of the node, which keeps an unlinked file's content
// until the last handle is released.
//
// # Persistence and observation
//
// With Options.Journal (package state), a request that changed the
// namespace or a kept node's attributes — MKNOD, MKDIR, SYMLINK, LINK,
// UNLINK, RMDIR, RENAME, SETATTR of anything but a regular file — is
// answered only once the journal says the change is on disk: the reply is
// the acknowledgement, so an acknowledged change survives a crash. The
// wait happens after the change, with no lock held; a failing journal
// turns the answer into EIO. Options.Observer is told how long each
// request took, by opcode (metrics); SetTimeouts changes the kernel's
// cache timeouts while requests are served (a configuration reload).
//
// # Shutdown
//
// Live requests are counted with sync/refcount. Shutdown closes the
// stopping channel (waits in flight end with EINTR), stops the sweeper,
// kills the count (new requests are refused with ENOTCONN; FORGET and
// RELEASE are always served, they have no answer to refuse), drains it for
// at most the shutdown timeout, unmounts (lazily if the mount is busy),
// waits a bounded time for the serve loop to end and stops the notify
// worker. It is idempotent and bounded.
//
// # The server and its own mount
//
// The daemon never touches its own mount: Mount does not use go-fuse's
// WaitMount (which opens a file in the mount from the serving process);
// the mount is live once NewServer has returned, INIT being complete.
// The one exception is MountSpecials, whose mount calls walk the mount
// to pts and shm: it runs while the server serves, outside any handler,
// and keeps no descriptor into the FUSE mount (only into the specials).
//
// # Lock order
//
// The namespace's locks (directory sems and mus, attributes, the event
// queue) are taken inside lookup and dcache calls, in the one order of
// package dcache's doc ("Lock order"). NotifyQueue.mu is a sink's lock
// there: Event takes it during a flush, possibly under a directory sem.
// This package's own locks are leaves of that tree or outside it:
//
//	Server.specialsMu (held across MountSpecials, whose mounts walk the
//	  mount through this server's handlers, which never take it)
//	nodeTable stripe mutex and dirMu, handleTable mutex, NotifyQueue.mu,
//	listingExpiry.mu (leaves; never held across a call)
//	viewSet.mu (a parent's views: held while setting their timeouts)
//	  the view's own viewSet.mu (empty: views make no views)
//	NotifyMux.mu (Add and Remove only; Event takes no lock)
//	Specials.mu (held while unmounting)
//	  pinSet.mu (a leaf; released before busy asks dcache for the node)
//
// No lock of this package is held while calling lookup or dcache, nor
// while sending a notify; every unlock is deferred or immediately follows
// code that cannot panic.
package fs
