// Package dcache is devfsd's namespace: an in-memory tree of directories,
// device nodes, symlinks, fifos, sockets and small regular files, with
// positive and negative directory entries, per-directory locks, device
// registration and an event stream. It is the only truth about what exists;
// the FUSE server (package fs) and the lookup/revalidate path (package
// lookup) are views of it.
//
// # Nodes
//
// A *Node is an inode. It is addressed by a stable inode number, taken from a
// per-namespace counter and never reused (the root is 1), and by the
// namespace's generation number (Options.Generation), which differs between
// daemon runs so that an (ino, gen) pair never names two different files.
// A node stays a valid Go object for as long as anyone holds the pointer:
// after it is unlinked its attributes still read (with Nlink 0), and a
// regular file's content can still be read and written through it, exactly
// what an open file descriptor on an unlinked file needs. The namespace keeps
// no table from inode number to node; fs keeps its own (with FORGET counts),
// and a node never vanishes from the tree because the kernel forgot it.
//
// Attributes (mode, owner, times, nlink, size) are guarded by a per-node
// leaf mutex; Attr returns a consistent snapshot. A registered node that is
// never touched keeps the time of its registration in atime, mtime and ctime.
// Reads do not update atime (as with the noatime mount option); SetAttr can.
//
// # Directories and their two locks
//
// Each directory has two locks, named after their kernel twins (DESIGN.md
// section 3):
//
//   - sem, a sync/rwsem semaphore, the directory's i_sem. dcache itself never
//     takes it: it belongs to package lookup, which holds it shared for a
//     lookup or readdir and exclusive for a whole namespace change made
//     through FUSE, and which waits on in-flight lookup records while holding
//     it. Sem returns it.
//   - mu, a short mutex over the children map, the negative entries, the
//     in-flight slot table, the readdir cookies and the dead flag (devfs's
//     u.dir.lock). Every dcache operation takes mu for a single critical
//     section in which it checks and changes, so each operation is atomic
//     with respect to every other, whether or not the caller holds sem.
//     Registration (Register, Unregister) takes only mu. LockMu and UnlockMu
//     expose it to package lookup, for the ...Locked methods.
//
// # Who does what: dcache and lookup
//
// dcache offers the namespace operations as self-contained calls (Mknod,
// Mkdir, Symlink, Link, Unlink, Rmdir, Rename, SetAttr, ReadDir, Register,
// Unregister). Package lookup owns the miss protocol of DESIGN.md section 3
// (its five steps, the in-flight record, the loader and its deadline) and
// every name-changing FUSE operation that must wait on a record; it takes
// sem and mu itself, so that the protocol's locks read in its own code, and
// asks dcache one question per step while it holds mu: EntryLocked (step 1:
// the child, a fresh negative entry, a removed directory, or a record in
// flight), PublishLocked (step 2), UnpublishLocked and AddNegativeLocked
// (step 4: the miss cached unless the name appeared; it returns the child),
// ChildLocked (step 5) and InflightLocked (a change waiting for a load). The
// record type is lookup's; dcache stores it as an opaque value and never
// looks inside. A method whose name ends in Locked needs the lock its
// Preconditions line names, held by the caller, and takes no other lock of
// its level.
//
// # For the FUSE server
//
// fs addresses nodes by (Ino, Gen) and keeps its own node-id table; GETATTR
// is Node.Attr, SETATTR Node.SetAttr (mode, owner, times, size), READ and
// WRITE Node.ReadAt and Node.WriteAt, READLINK Node.Readlink, STATFS
// Namespace.Statfs (with NameMax 255), and "..": Node.Parent. LOOKUP,
// READDIR and the namespace changes go through package lookup, which takes
// the directory sems and then calls the Node methods here. From the events,
// fs queues kernel notifies for changes not made through FUSE (Origin other
// than OriginFUSE: REGISTER and UNREGISTER from the loader or control API,
// EXPIRE) and sends them from a worker, never from Sink.Event itself.
//
// # Lock order
//
// This is the lock order of the namespace, the one tree that packages
// lookup and fs refer to. A lock is taken only while holding locks on the
// lines above it that it is indented under, never the other way round:
//
//	Node.dir.sem (package lookup; at most one held, but for the two of a rename, taken in inode order)
//	  Namespace.renameMu (cross-directory Rename only)
//	    Node.dir.mu (ancestor before descendant; see below)
//	      a lookup record's wait queue lock (package lookup; sync/waitq, a leaf)
//	      Options.RegisterHook's own lock (a leaf of its owner; see below)
//	      Node.attrMu (attributes and content; never two at once)
//	        Namespace.events.mu (a leaf)
//	  Options.Sink's own locks (leaves of its owner, such as package fs's notify queue)
//
// A Sem's own wait lock (sync/rwsem) is taken only inside the Sem's methods,
// which take no other lock, so it is a leaf below everything; so is a
// waitq.Queue's lock. Sink.Event runs during a Flush, with no dcache mutex
// held but possibly a directory sem. No lock on this tree is held while
// calling the loader or while sending a kernel notify.
//
// At most one directory mu is held at a time, with these exceptions: Rmdir
// and Rename take a victim directory's mu after its parent's (ancestor before
// descendant); a cross-directory Rename, holding renameMu, takes the two
// parents' mus (ancestor first when related) and then any directory mus of
// the moved subtree. Only a renameMu holder holds the mus of two unrelated
// directories, and renameMu serialises them; the tree shape (which directory
// is whose ancestor) changes only under renameMu, so the ancestor-first
// order is well defined whenever it is used. Registration walks a path one
// mu at a time and retries from the root if it meets a directory that an
// Unregister removed under it. Register calls Options.RegisterHook with the
// mu of the directory it creates in held, so the hook must not block nor
// call back into dcache.
//
// # Events
//
// Every change queues an Event (REGISTER, UNREGISTER, LOOKUP, CHANGE, CREATE,
// DELETE, and two internal kinds: EXPIRE for a negative entry that timed
// out, TOUCH for a change of times alone) while the change's
// mu is held, so events are queued in the order the changes were made. They
// are delivered to Options.Sink after every dcache mutex is released, one
// goroutine at a time and in queue order. The goroutine that delivers them
// may hold a directory sem (package lookup holds it across a namespace
// change), so Sink.Event must only queue: never block, never call back into
// dcache or lookup, never send a kernel notify itself. Each event carries the
// Caller whose request made it, so a consumer can tell changes made through
// FUSE (the kernel already knows) from registrations, unregistrations and
// expiries (the kernel must be told, from a worker), and need not echo the
// loader's own changes back to it. Callers of the ...Locked methods call
// Flush once they released mu. LastSeq numbers the last event queued, so a
// consumer can wait until it has handled every change made so far; a
// rename's events are queued adjacently and marked Renamed.
//
// # Limits and errors
//
// Every error is an *io/fs.PathError whose Err is a syscall.Errno, so
// errors.Is(err, syscall.ENOENT) works and fs maps errors to errno with
// errors.As. Names longer than 255 bytes are ENAMETOOLONG; names containing
// '/' or NUL, and the names "", "." and "..", are EINVAL. The node count is
// bounded by Options.MaxNodes and the directory depth by Options.MaxDepth
// (ENOSPC); a regular file's size by Options.MaxFileSize (EFBIG) and the
// total content by Options.MaxBytes (ENOSPC). Everything else follows Linux
// tmpfs, including the order in which rename checks its errors.
package dcache
