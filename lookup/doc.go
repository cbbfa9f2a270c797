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
// call and never start a load: they see the namespace as it is. They do
// not take sem either, only mu: a loader that looks at the directory whose
// name it is loading must not queue behind an unlink that waits, holding
// sem, for that very load.
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
// dcache.Namespace.Register and Unregister, which take only mu. No call here holds a lock while it calls the loader or delivers
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
// miss protocol, both sides of it (the owner's steps, the waiters'); and
// change.go the namespace changes and readdir.
//
// Errors are *io/fs.PathError values wrapping a syscall.Errno, as dcache's.
package lookup
