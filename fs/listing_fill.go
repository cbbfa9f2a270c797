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
// What the server knows: the entries of a reply are in the cache before
// the kernel asks for what follows them (a READDIR from the reply's last
// cookie, sent by the same thread: a listing is complete, and the cache
// marked whole, only after a reply with no entries), so a continuation of
// a listing whose offset-0 reply was read before a change of the
// directory may follow a stale fill. Each listing in progress is known by
// its directory and the thread that lists (the request's pid, a thread
// id): a continuation of one whose directory changed since its offset-0
// reply was read queues a noticeDir, whatever made the change. The notice
// drops the cache's pages, and the next listing from offset 0, finding a
// page gone, starts the cache again from the server. Because each listing
// is followed on its own, a reply delayed past a whole other listing (its
// task descheduled between the reply and its fill) is still caught by its
// own continuation. A continuation by any thread (one that goes on from
// what the cache holds) queues the notice too while some listing of the
// directory is marked changed; that listing keeps its mark until its own
// continuation. A listing leaves NotifyQueue.fills at its end (a reply
// with no entries), at its own continuation after a change, or with its
// directory (forgetDir).
//
// What is left: a listing whose reader stops before the end (no
// continuation) cannot be followed; nor can more than maxFillListings
// listings of one directory in progress at once (the oldest marks are
// dropped).

// maxFillListings bounds the listings in progress followed per directory.
const maxFillListings = 1024

// ListedFrom records a listing of directory dir from offset off by thread
// tid (Listed), and for a continuation (a later offset) of a listing whose
// directory changed since its offset-0 reply was read, queues the
// noticeDir that drops a stale fill.
func (nq *NotifyQueue) ListedFrom(dir, off uint64, tid uint32) {
	tid = fillThread(tid)
	nq.Listed(dir)
	if !listingNotices() {
		return
	}
	nq.mu.Lock()
	if nq.closed {
		nq.mu.Unlock()
		return
	}
	m := nq.fills[dir]
	if off == 0 {
		if m == nil {
			m = make(map[uint32]bool)
			nq.fills[dir] = m
		}
		if _, ok := m[tid]; !ok && len(m) >= maxFillListings {
			for k := range m { // an arbitrary one: its listing is no longer followed
				delete(m, k)
				break
			}
		}
		m[tid] = false
		nq.mu.Unlock()
		return
	}
	// Its own listing's mark, or another's: a thread may continue a
	// listing the kernel's cache started from another's replies (it reads
	// what is cached, then asks for the rest).
	if changed := m[tid]; changed {
		delete(m, tid)
	} else if !anyChanged(m) {
		nq.mu.Unlock()
		return
	}
	if _, queued := nq.dirs[dir]; queued {
		nq.mu.Unlock()
		return // the one queued is sent after this reply's request
	}
	nq.pushLocked(notice{kind: noticeDir, child: dir})
}

func anyChanged(m map[uint32]bool) bool {
	for _, c := range m {
		if c {
			return true
		}
	}
	return false
}

// ListingEnded records that thread tid's listing of dir got its last
// reply (no entries): it is no longer followed.
func (nq *NotifyQueue) ListingEnded(dir uint64, tid uint32) {
	tid = fillThread(tid)
	nq.mu.Lock()
	if m := nq.fills[dir]; m != nil {
		delete(m, tid)
		if len(m) == 0 {
			delete(nq.fills, dir)
		}
	}
	nq.mu.Unlock()
}

// changedDuringFill marks every listing of dir in progress as changed.
func (nq *NotifyQueue) changedDuringFill(dir uint64) {
	if dir == 0 {
		return
	}
	nq.mu.Lock()
	for tid := range nq.fills[dir] {
		nq.fills[dir][tid] = true
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
