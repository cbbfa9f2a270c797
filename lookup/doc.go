// Package lookup is devfsd's lookup and revalidate path: what happens when
// a name is looked up that the namespace does not hold yet, and how every
// other operation on that name waits for the answer.
//
// # The miss protocol
//
// A lookup that misses (no child, no fresh negative entry) asks the module
// loader, waits, and answers from whatever the namespace holds afterwards
// (DESIGN.md section 3). Concurrent lookups of the same name share one
// load. The first caller becomes the owner of an in-flight record, a call,
// published in the directory's in-flight slot table (a dcache primitive,
// under the directory's mu); later callers find it there, take a
// reference and wait on it — the revalidate wait of devfs. In order, as
// Resolver.Lookup (step 1) and Resolver.miss (steps 2 to 5) in miss.go
// run them:
//
//  1. holding the directory's sem shared, and then its mu, find no child
//     and no fresh negative entry;
//  2. under mu, publish a new call (one reference: the owner's);
//  3. release mu and sem; send the LOOKUP event; start the Load and wait
//     for it, for the deadline (Options.Timeout, default 5 s), or for the
//     owner's context;
//  4. under mu: unpublish the call, cache the miss negatively if the name
//     is still absent, wake every waiter; then drop the owner's reference;
//  5. only then take sem shared again, look at the children once more, and
//     answer: the node, or ENOENT.
//
// Step 4 must come before step 5. A waiter may sleep on the call while
// holding sem exclusive — an unlink, rename or mknod of the name waits for
// the load so that it acts on what the load produced — and an owner that
// retook sem first would wait for that waiter, which waits for the owner:
// the devfs deadlock of 2003 (`ls /dev/foo & rm -f /dev/foo`), race R4.
// The build tag mutant_r4 swaps the two steps (order_mutant_r4.go), and
// TestR4LsAndRmOfLoadingName fails on it.
//
// # Records and their lifetime
//
// A call lives as long as its last reference, never as long as its owner's
// stack frame: the owner holds one reference, each waiter one. A waiter
// takes its reference under the directory's mu while the call is
// published, so the count is never raised from zero; the reference is
// dropped when the waiter has finished with the call, which may be after
// the owner returned. The load itself runs in its own goroutine that holds
// no reference, so a loader that hangs past the deadline delays nobody: at
// the deadline the owner finishes the call (steps 4 and 5) and every waiter
// is released with ENOENT. If the owner's context ends first (a FUSE
// INTERRUPT), the owner answers EINTR at once and hands step 4 to a
// goroutine that waits for the load or the deadline in its place, so the
// other waiters are not cut short by one caller's interrupt.
//
// Every wait — the owner's, a lookup waiter's, a writer's — is bounded by
// Options.Timeout and ends early when the caller's context ends, with
// EINTR. A context is honoured only before the operation changed anything.
//
// # The loader's own lookups
//
// Lookups and changes made by the loader itself (a dcache.Caller with Origin
// dcache.OriginLoader, or one the Options.IsLoader predicate recognises —
// supplied by whoever wires the loader, never a guess) never wait on a
// call and never start a load: they see the namespace as it is. Nor do
// they wait for sem: a loader that looks at the directory whose name it is
// loading must not queue behind an unlink that waits, holding sem, for
// that very load; where sem is busy they look, list or change under mu
// alone.
//
// Who the caller is matters only where the loader and everyone else would
// be treated differently, so that is the only place it is asked (at most
// once per request, with no mu held — a change may hold its directory
// sem; identity.go):
//
//   - a lookup that misses (no child, no fresh negative entry): the loader
//     answers ENOENT, everyone else starts or joins a load;
//   - a lookup, listing or change whose directory sem cannot be had at
//     once (TryDownRead, TryDownWrite fail: a writer holds it or is queued
//     for it): the loader goes on under mu, everyone else waits for sem;
//   - a change of a name whose load is in flight: the loader makes it at
//     once, everyone else waits for the load.
//
// A hit, a negative hit, an uncontended listing and an uncontended change
// of a name with no load in flight never ask — which is what keeps an
// attached helper from costing the hit path anything. The loader's
// lookups that do take sem (TryDownRead succeeded) hold it only for the
// look itself and wait for nothing while they hold it, so they can delay
// no load. GETATTR and the other attribute requests never come here.
//
// # Notifies that cannot be delivered (a deadlock rule)
//
// While a lookup waits for its loader, the kernel holds the directory's
// lock (i_rwsem, shared) for the whole FUSE request; an entry or delete
// notify for that directory takes the same lock exclusive, so it cannot
// complete until the lookup's reply. A change that waits for its kernel
// notifies (the control API does, so that its caller's next system call
// sees it) must therefore not wait when the change is made by, or for,
// the loader serving such a lookup: the loader waits for the change, the
// lookup for the loader, the notify for the lookup — seed 003's deadlock
// one layer up, ended only by the notify wait's bound. The rule
// (Resolver.MustNotWaitForNotify) is that such a change does not wait
// for its notifies when
//
//   - its caller is the loader (IsLoader): a loader's changes are made
//     while it serves a lookup whose directory the kernel holds, and the
//     notify queue is sent in order, so even a change elsewhere would
//     queue behind that directory's notify; or
//   - its path, or a directory on the way to it, is a name with a load in
//     flight (an in-flight record published): whoever makes it, the
//     lookup's own reply then installs the entry in that kernel, and a
//     lookup of the name made meanwhile joins the load and sees the node
//     at step 5 — register then lstat stays consistent. (In another mount
//     of the namespace, a view, the kernel may keep an old negative entry
//     for the name until the notify goes out after the lookup, at most
//     the negative timeout.)
//
// Every other change keeps waiting, bounded, for its notifies.
//
// # Using it from the FUSE server
//
// fs calls Resolver.Lookup for LOOKUP, Resolver.ReadDir for READDIR, and
// the Resolver's Mknod, Mkdir, Symlink, Link, Unlink, Rmdir and Rename for
// the namespace changes (each takes the directory sem exclusive for the
// whole operation, two in inode order for a rename; the loader's own
// changes take only mu). Attribute changes and file content go straight
// to the dcache.Node (SetAttr, ReadAt, WriteAt), which need no directory
// lock. Registration by the loader or the control API goes straight to
// dcache.Namespace.Register and Unregister, which take only mu. No call
// here holds a lock while it calls the loader or delivers
// events; events reach the sink, which must only queue, after every dcache
// mutex is released.
//
// # Model
//
// test/model/lookup.pml is a spin model of the miss protocol: Lookup
// (the owner branch, which is miss; the waiter branch, which is waitOn;
// load and its hand-off goroutine; complete; wait) and Unlink
// (lockForChange, waitForLoad) as Promela processes and inlines of the
// same names, over the slot table, the call's references and its
// waitq.Queue, with a loader that answers, fails, hangs or registers late.
// test/model/check.sh proves with it that there is no deadlock, that a
// waiter is released without EINTR only after step 4, that no record is
// used after its last reference, and that the R4 order (switch MUT_R4)
// and a record on the owner's stack (MUT_STACK) are caught; docs/model.md
// gives the bounds. Change the model with the code.
//
// # Lock order
//
// The locks this package takes are the namespace's: the directory sems
// and mus, and under a mu a call's wait queue lock (sync/waitq, a leaf).
// Their order is the one tree in package dcache's doc ("Lock order").
//
// # Files
//
// resolver.go holds the API (Loader and its optional interfaces, Options,
// MissInfo, Resolver, Stats); call.go the in-flight record; miss.go the
// miss protocol, both sides of it (the owner's steps, the waiters');
// change.go the namespace changes and readdir; identity.go who the caller
// is, and the notify rule.
//
// Errors are *io/fs.PathError values wrapping a syscall.Errno, as dcache's.
package lookup
