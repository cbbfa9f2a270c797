// Package state keeps what users change in the namespace across daemon
// restarts (DESIGN.md section 2, item 10): the nodes, directories and
// symlinks they made, and the mode, owner and time changes they made to
// registered devices. It is the daemon's own persistence, independent of
// the helper's COPY/RESTORE.
//
// # What is kept
//
// The Store folds the namespace's event stream into a model: one Entry
// per path.
//
//   - A CREATE (mknod, mkdir, symlink, link, a rename's target) makes a
//     created entry with the node's whole description: type, mode, owner,
//     device number, symlink target, times. Regular files are not kept:
//     their content is not journaled, and a file restored empty would be
//     a lie. A hard link is restored as a node of its own.
//   - A CHANGE (mode or owner) or TOUCH (times alone) of a node that has
//     no created entry makes a changed entry: the registered node's
//     attributes. Registered devices are not restored as such — their
//     loaders bring them back — but when a node of the same type (and
//     device number) registers at that path again, Register creates it
//     with the kept mode and owner, and the kept times if a user set them
//     (RegisterHook, called by dcache before the node exists, so nobody
//     ever sees the device with its catalogue attributes).
//   - A DELETE removes the entry of the name (created or changed: a device
//     a user removed comes back from its loader with catalogue attributes).
//     An UNREGISTER removes a created entry and keeps a changed one, so a
//     device that is unplugged and plugged again keeps what root gave it.
//   - A rename moves the entry and everything under it: dcache queues a
//     rename's DELETE and CREATE adjacently and marks them Renamed, and the
//     Store's sink holds a Renamed DELETE until its CREATE arrives, so the
//     move is journaled as one record.
//
// # Files and durability
//
// The state directory holds three files:
//
//	snapshot   the whole model as of journal record N
//	journal    records after N, appended
//	lock       flock(2)ed by the daemon that owns the directory
//
// Both files are sequences of frames: a 4-byte little-endian payload
// length, the payload's CRC-32C (Castagnoli), 4 bytes little-endian, then
// the payload, one JSON object. A journal record is one group commit:
//
//	{"n":17,"ops":[{"op":"put","entry":{...}},{"op":"del","path":"a/b"}]}
//
// ("del" removes the path and everything under it, "rm" the path alone;
// a record may also carry "gen" and "ceiling", below). The snapshot is one
// frame, {"version":2,"n":N,"entries":[...],"gen":G,"ceiling":C}, written to snapshot.tmp,
// fsynced, renamed over snapshot, and the directory fsynced; then the
// journal is truncated. Records numbered N or less are skipped on replay,
// so a crash between the rename and the truncation loses nothing.
//
// Durability rule: a change made through the mount is acknowledged (its
// FUSE reply sent) only after the journal record holding it was written
// and fsynced. The Store's committer goroutine takes every event queued
// since its last write, appends them as one record and fsyncs once (group
// commit): concurrent changes share an fsync. WaitDurable(seq) blocks a
// FUSE handler until the events up to seq (dcache.Namespace.LastSeq,
// read after the change returned) are on disk.
//
// # Recovery
//
// Open reads the snapshot, then the journal. A journal that ends in a torn
// record (a length running past the end, or zeros: a crash during an
// append) loses that record, which was never acknowledged; it is dropped
// with a warning. A complete record whose checksum or JSON is wrong is
// corruption: the records before it are used, the journal is moved aside
// as journal.damaged-UNIXNANO for inspection, with a warning. A damaged
// snapshot is an error: Open refuses rather than start from nothing and
// lose everything kept. After recovery Open writes a fresh snapshot and
// an empty journal, so a damaged tail is never appended to.
//
// Restore recreates the created entries in a namespace (parents first)
// before the mount is live.
//
// # Node ids
//
// Every entry carries its node's inode number, and every registered node
// has an entry (Registered: only its number, and its attributes as
// registered, which are not re-applied). Reserve keeps the inode
// generation and an id ceiling, fsynced before it returns. After a crash
// whose mount a descriptor store kept, the daemon calls UseKeptIDs: Restore
// and RegisterHook then give each node its kept number (each number once),
// so the ids the kernel holds name the same nodes. The memfd a descriptor
// store keeps beside the mounts (KeptFile) carries the generation and the
// ceiling too, for a daemon without a state directory.
//
// # Lock order
//
//	dcache dir mu (Register calls RegisterHook with it held)
//	  Store.mu (the model; a leaf, never held across I/O or a dcache call)
//	Store.qmu (the event queue and durability state; a leaf)
//
// Store.Event (the dcache sink) takes only qmu and never blocks; the
// committer holds no lock while it writes and fsyncs.
package state
