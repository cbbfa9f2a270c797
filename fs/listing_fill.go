package fs

// A stale fill of the kernel's cached listing, and how it is dropped.
//
// The kernel starts a directory's cached listing (fs/fuse/readdir.c,
// fuse_readdir_cached) when a listing from offset 0 finds the cache empty:
// it stamps the cache with the directory's mtime and i_version as they are
// then, sends READDIR (or READDIRPLUS) from offset 0, and adds the reply's
// entries to the cache if the cache is still empty when the reply arrives.
// Two listings from offset 0 of the same directory can both find it empty.
// If the first one's reply was read before a change of the directory and
// the second one stamped the cache after that change (with the new mtime
// and i_version), the first reply still fills the cache when it arrives:
// the cache then holds the old listing under the new stamp, and later
// listings are served from it — a removed name listed again — until the
// next change of the directory. This happens with changes made through
// this mount too, which otherwise need no notice (fuse_dir_changed bumps
// the i_version); TestRemovedEntryStaysRemoved (test/stress) found it.
//
// What the server knows: the entries of a reply from offset 0 are in the
// cache before the kernel asks for what follows them (a READDIR from the
// reply's last cookie: a listing is complete, and the cache marked whole,
// only after a reply with no entries), so a listing from a later offset
// of a directory whose entries changed since a listing from offset 0 was
// served may follow a stale fill. Such a request queues a noticeDir for
// the directory, whatever made the change: the notice drops the cache's
// pages, and the next listing from offset 0, finding a page gone, starts
// the cache again from the server. A directory listed from offset 0 stays
// in NotifyQueue.fills until such a notice is queued or the directory
// is removed (forgetDir).
//
// What is left: a reply from offset 0 that reaches the kernel only after
// that notice was sent and the cache started again (a reply delayed past
// a whole other listing) can still fill it; its own continuation finds the
// directory no longer marked as changed.

// ListedFrom records a listing of directory dir from offset off (Listed),
// and for a listing from a later offset of a directory changed since one
// from offset 0 was served, queues the noticeDir that drops a stale fill.
func (nq *NotifyQueue) ListedFrom(dir, off uint64) {
	nq.Listed(dir)
	if !listingNotices() {
		return
	}
	nq.mu.Lock()
	if nq.closed {
		nq.mu.Unlock()
		return
	}
	changed, ok := nq.fills[dir]
	if off == 0 {
		if !ok {
			nq.fills[dir] = false
		}
		nq.mu.Unlock()
		return
	}
	if !changed {
		nq.mu.Unlock()
		return
	}
	delete(nq.fills, dir)
	if _, queued := nq.dirs[dir]; queued {
		nq.mu.Unlock()
		return // the one queued is sent after this reply's request
	}
	nq.pushLocked(notice{kind: noticeDir, child: dir})
}

// changedDuringFill marks dir as changed if a listing of it from offset 0
// was served (ListedFrom).
func (nq *NotifyQueue) changedDuringFill(dir uint64) {
	if dir == 0 {
		return
	}
	nq.mu.Lock()
	if _, ok := nq.fills[dir]; ok {
		nq.fills[dir] = true
	}
	nq.mu.Unlock()
}

// forgetDir drops what the queue keeps about directory dir (Listed,
// ListedFrom) once dir is removed, so that directory churn does not grow
// those maps.
func (nq *NotifyQueue) forgetDir(dir uint64) {
	if dir == 0 {
		return
	}
	nq.mu.Lock()
	delete(nq.listed, dir)
	delete(nq.fills, dir)
	nq.mu.Unlock()
}
