package fs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// The kernel caches names, attributes and misses for the timeouts the
// server gives it. Changes made through the mount update those caches by
// themselves; every other change — a registration by the loader or the
// control API (if the kernel may cache the name's absence: absent.go),
// an unregistration, a negative entry that expired, an attribute changed
// by the daemon — must be pushed to the kernel with a notify. A notify must never be sent from a FUSE handler nor with a
// namespace lock held: the kernel takes its own directory lock to apply
// it, and that lock may be held by a process whose request is waiting on
// that handler or lock. So the dcache event sink (NotifyQueue.Event) only
// queues, and one worker goroutine sends.
//
// Overflow. The queue is bounded (NotifyOptions.Size). An event that finds
// it full is dropped and counted (Stats.NotifyDropped), and the worker
// logs the count at warn level once it has caught up. What is lost is
// bounded: the kernel forgets a stale name or attribute after the entry,
// attribute or negative timeout, whichever applies, and a cached listing
// once the directory's attributes are fetched again after the attribute
// timeout (the listing is kept only while the directory's mtime, which
// every change of its entries moves, is the one it was read at), so a
// dropped notify costs at most one timeout of staleness and never an
// inconsistency inside the daemon, whose namespace stays the only truth.

// noticeKind is what a notify asks the kernel to do.
type noticeKind uint8

const (
	noticeEntry  noticeKind = iota + 1 // EntryNotify(parent, name): forget the name, positive or negative
	noticeDelete                       // DeleteNotify(parent, child, name): the name is gone
	noticeInode                        // InodeNotify(child, -1): forget the attributes
	noticeDir                          // InodeNotify(child, 0): forget the directory's cached listing (and attributes)
)

func (k noticeKind) String() string {
	switch k {
	case noticeEntry:
		return "entry"
	case noticeDelete:
		return "delete"
	case noticeInode:
		return "inode"
	case noticeDir:
		return "listing"
	}
	return "invalid"
}

// notice is one queued notify.
type notice struct {
	seq    uint64 // queue order, from 1
	kind   noticeKind
	parent uint64
	child  uint64
	name   string
}

// notifier is the part of *fuse.Server the worker uses; tests fake it.
type notifier interface {
	EntryNotify(parent uint64, name string) fuse.Status
	DeleteNotify(parent uint64, child uint64, name string) fuse.Status
	InodeNotify(node uint64, off int64, length int64) fuse.Status
}

// DefaultNotifyQueue is the default bound of the notify queue.
const DefaultNotifyQueue = 65536

// NotifyQueue turns namespace events into kernel notifies. It is the
// dcache.Sink of the namespace a Server serves: make it first, pass it as
// dcache.Options.Sink, then hand it to New. Until the server is mounted
// it drops every event — the kernel has nothing cached yet.
type NotifyQueue struct {
	max int // immutable
	// id is the mount this queue serves, as requests through it name it
	// (dcache.Caller.Mount): set by NotifyMux.Add before the queue's
	// server mounts, immutable after; 0 for a queue in no mux.
	id uint16
	// view, if not nil, is the view of the queue's mount (view.go): only
	// changes to names it admits are notified. Immutable after NewView.
	view *viewpath.View

	mu sync.Mutex // a leaf
	// Guarded by mu:
	q []notice
	// dirs are the directories with a noticeDir in q: one more change
	// to such a directory needs none of its own, the one queued being
	// sent after it. Emptied with q by take.
	dirs map[uint64]struct{}
	// listed are the directories whose listing the kernel may cache: a
	// READDIR or READDIRPLUS of it started (Listed) since its last
	// noticeDir was queued. A change to any other directory's entries
	// needs no noticeDir (pushDir): the kernel holds no listing of it,
	// and a noticeDir would also drop the directory's attributes, making
	// the next path walk through it a GETATTR round trip.
	listed map[uint64]struct{}
	// fills are the listings in progress (ListedFrom), by directory and
	// listing thread, each with whether the directory's entries changed
	// since its offset-0 reply was read, by any origin, this mount's own
	// changes included (listing_fill.go).
	fills map[uint64]map[uint32]bool
	// inherited: the kernel may hold listings this process never
	// served (a mount handed over, resume.go), so every directory is
	// taken for listed until its first noticeDir is queued; noticed are
	// the directories past that (nil unless inherited).
	inherited bool
	noticed   map[uint64]struct{}
	// absent are the names this mount answered absent, each with when
	// the kernel's negative entry for it times out; until absentAll
	// every name counts as one (absent.go).
	absent    map[absentKey]time.Time
	absentAll time.Time
	enabled   bool          // the mount is live: queue
	closed    bool          // the worker is stopping: drop
	seqIn     uint64        // seq of the last notice queued
	seqOut    uint64        // seq of the last notice sent (or discarded)
	progress  chan struct{} // closed and replaced when seqOut moves

	wake chan struct{} // capacity 1: "the queue is not empty"

	queued  atomic.Uint64 // notices queued
	dropped atomic.Uint64 // notices dropped because the queue was full
	sent    atomic.Uint64 // notices the kernel accepted
	failed  atomic.Uint64 // notices the kernel refused (other than ENOENT)
}

// NewNotifyQueue returns a queue holding at most size notices (size <= 0:
// DefaultNotifyQueue).
func NewNotifyQueue(size int) *NotifyQueue {
	if size <= 0 {
		size = DefaultNotifyQueue
	}
	return &NotifyQueue{max: size, wake: make(chan struct{}, 1), progress: make(chan struct{}),
		dirs: make(map[uint64]struct{}), listed: make(map[uint64]struct{}), fills: make(map[uint64]map[uint32]bool)}
}

var _ dcache.Sink = (*NotifyQueue)(nil)

// WantsLookups implements dcache.LookupSink: Event ignores LOOKUP events
// (nothing changed).
func (nq *NotifyQueue) WantsLookups() bool { return false }

// Event implements dcache.Sink: it turns a change the kernel cannot know
// of (one not made through this queue's mount) into notices and queues
// them; a change made through FUSE without a mount id (Caller.Mount 0) is
// taken for this mount's own. A view's queue skips what the view hides.
// It never blocks and never calls into dcache, lookup or the kernel.
//
// A change to a directory's entries (REGISTER, UNREGISTER, CREATE,
// DELETE: every rename and link is a CREATE and DELETE pair) also
// queues a noticeDir for the directory, which drops the listing the
// kernel may cache for it (FOPEN_CACHE_DIR, listing.go), if it may
// cache one (Listed, pushDir). The kernel
// of the mount that made the change drops its own (fuse_dir_changed),
// but for one thing: a directory renamed keeps its cached listing, whose
// ".." now names another parent; so a renamed directory's listing is
// dropped in every mount, its own included.
func (nq *NotifyQueue) Event(ev dcache.Event) {
	switch ev.Kind {
	case dcache.KindRegister, dcache.KindCreate, dcache.KindUnregister, dcache.KindDelete:
		nq.changedDuringFill(ev.Parent)
	}
	if (ev.Kind == dcache.KindUnregister || ev.Kind == dcache.KindDelete) && ev.Type == dcache.TypeDir && !ev.Renamed {
		nq.forgetDir(ev.Ino) // gone: its listing marks would only accumulate
	}
	own := ev.Caller.Origin == dcache.OriginFUSE && (ev.Caller.Mount == nq.id || ev.Caller.Mount == 0)
	movedDir := ev.Renamed && ev.Kind == dcache.KindCreate && ev.Type == dcache.TypeDir && ev.Ino != 0
	if own && !movedDir {
		return // the kernel of this mount made this change itself
	}
	if nq.view != nil && !viewNotifies(nq.view, &ev) {
		return // outside this mount's view: its kernel holds nothing of it
	}
	if own {
		nq.pushDir(ev.Ino)
		return
	}
	var n notice
	listing := false
	switch ev.Kind {
	case dcache.KindRegister:
		// A new name: the kernel can hold only an absence of it
		// (absent.go).
		if !nq.mayCacheAbsent(ev.Parent, ev.Name) {
			nq.pushDir(ev.Parent)
			return
		}
		n = notice{kind: noticeEntry, parent: ev.Parent, name: ev.Name}
		listing = true
	case dcache.KindCreate:
		n = notice{kind: noticeEntry, parent: ev.Parent, name: ev.Name}
		listing = true
	case dcache.KindExpire: // a miss: in no listing
		n = notice{kind: noticeEntry, parent: ev.Parent, name: ev.Name}
	case dcache.KindUnregister, dcache.KindDelete:
		n = notice{kind: noticeDelete, parent: ev.Parent, child: ev.Ino, name: ev.Name}
		listing = true
	case dcache.KindChange:
		n = notice{kind: noticeInode, child: ev.Ino}
	default:
		return // LOOKUP: nothing changed
	}
	if n.kind != noticeInode && (n.parent == 0 || n.name == "") {
		return
	}
	if n.kind == noticeInode && n.child == 0 {
		return // node id 0 is no node (to a new kernel: every node)
	}
	nq.push(n)
	if listing {
		nq.pushDir(ev.Parent)
	}
	if movedDir {
		nq.pushDir(ev.Ino)
	}
}

// Listed records that a listing of directory dir (READDIR or
// READDIRPLUS, from any offset) is being served: its reply may fill the
// kernel's cached listing, so the next change of dir's entries queues a
// noticeDir. The server calls it before it reads the directory, so that
// a change either is in what the listing reads or comes after Listed
// and is noticed (its event is emitted after the change is applied).
func (nq *NotifyQueue) Listed(dir uint64) {
	nq.mu.Lock()
	if !nq.closed {
		nq.listed[dir] = struct{}{} // even before enable: the reply reaches a live mount
	}
	nq.mu.Unlock()
}

// pushDir queues a noticeDir for directory dir if the kernel may hold a
// listing of it (Listed since the last one was queued), unless one is
// queued and not yet taken by the worker: that one is sent after this
// change, and dir stays listed, so a listing served since that one was
// queued is dropped by the next change's notice as well.
//
// A listing in flight while dir changes: its reply, read before the
// change, may reach the kernel after the noticeDir, and fill the cache
// with the old listing. What drops it is what dropped it before this
// policy (listing.go): the noticeDir also dropped dir's attributes, and
// the kernel started that cache at dir's mtime before the change, so the
// next listing from offset 0 fetches the attributes, finds dir's mtime
// moved and reads the directory again. A later change of dir before
// that listing queues no noticeDir of its own unless dir was listed
// again, nor needs one: the stale cache is dropped by the same mtime
// check.
func (nq *NotifyQueue) pushDir(dir uint64) {
	if dir == 0 || !listingNotices() {
		return
	}
	nq.mu.Lock()
	if _, ok := nq.listed[dir]; !ok && !nq.inheritedLocked(dir) {
		nq.mu.Unlock()
		return // the kernel holds no listing of dir
	}
	if _, queued := nq.dirs[dir]; queued {
		nq.mu.Unlock()
		return // the one queued will be sent after this change
	}
	delete(nq.listed, dir)
	if nq.inherited {
		nq.noticed[dir] = struct{}{}
	}
	nq.pushLocked(notice{kind: noticeDir, child: dir})
}

// inheritListings records that the kernel may hold cached listings of
// any directory, served before this queue's server took the mount over:
// each directory's first change queues its noticeDir. Call it before
// the server serves.
func (nq *NotifyQueue) inheritListings() {
	nq.mu.Lock()
	nq.inherited = true
	nq.noticed = make(map[uint64]struct{})
	nq.mu.Unlock()
}

// inheritedLocked reports whether the kernel may hold a listing of dir
// served before the takeover. Preconditions: nq.mu held.
func (nq *NotifyQueue) inheritedLocked(dir uint64) bool {
	if !nq.inherited {
		return false
	}
	_, done := nq.noticed[dir]
	return !done
}

func (nq *NotifyQueue) push(n notice) {
	nq.mu.Lock()
	if n.kind == noticeDir {
		if _, queued := nq.dirs[n.child]; queued {
			nq.mu.Unlock()
			return // the one queued will be sent after this change
		}
	}
	nq.pushLocked(n)
}

// pushLocked queues n. Preconditions: nq.mu held; it is released.
func (nq *NotifyQueue) pushLocked(n notice) {
	if !nq.enabled || nq.closed {
		nq.mu.Unlock()
		return
	}
	if len(nq.q) >= nq.max {
		nq.mu.Unlock()
		nq.dropped.Add(1)
		return
	}
	if n.kind == noticeDir {
		nq.dirs[n.child] = struct{}{}
	}
	nq.seqIn++
	n.seq = nq.seqIn
	nq.q = append(nq.q, n)
	nq.mu.Unlock()
	nq.queued.Add(1)
	select {
	case nq.wake <- struct{}{}:
	default:
	}
}

// enable starts queueing (the mount is live).
func (nq *NotifyQueue) enable() {
	nq.mu.Lock()
	nq.enabled = true
	nq.mu.Unlock()
}

// close stops queueing and wakes the worker so that it can exit.
func (nq *NotifyQueue) close() {
	nq.mu.Lock()
	nq.closed = true
	nq.q = nil
	clear(nq.dirs)
	clear(nq.listed)
	clear(nq.fills)
	nq.advanceLocked(nq.seqIn) // what is left will never be sent
	nq.mu.Unlock()
	select {
	case nq.wake <- struct{}{}:
	default:
	}
}

// take returns the queued notices and empties the queue; done reports
// that the queue was closed.
func (nq *NotifyQueue) take() (batch []notice, done bool) {
	nq.mu.Lock()
	defer nq.mu.Unlock()
	batch, nq.q = nq.q, nil
	clear(nq.dirs) // taken: a later change needs a notice of its own
	return batch, nq.closed
}

// advanceLocked records that every notice up to seq was sent (or will
// never be) and wakes Sync. Preconditions: nq.mu held.
func (nq *NotifyQueue) advanceLocked(seq uint64) {
	if seq <= nq.seqOut {
		return
	}
	nq.seqOut = seq
	close(nq.progress)
	nq.progress = make(chan struct{})
}

// Sync waits until every notice queued before the call has been sent to
// the kernel (or dropped, or the queue closed), or until ctx ends. A
// registration made outside FUSE — the control API, the test hook —
// calls it after the registration returned, with no namespace lock held
// and outside any FUSE handler, so that its caller's next system call on
// the mount sees the change. It must never be called from a FUSE handler
// or a loader's Load: the notify may wait on a directory lock that the
// handler's caller holds.
func (nq *NotifyQueue) Sync(ctx context.Context) error {
	nq.mu.Lock()
	target := nq.seqIn
	for nq.seqOut < target {
		ch := nq.progress
		nq.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		nq.mu.Lock()
	}
	nq.mu.Unlock()
	return nil
}

// len returns the number of queued notices.
func (nq *NotifyQueue) len() int {
	nq.mu.Lock()
	defer nq.mu.Unlock()
	return len(nq.q)
}

// run is the worker: it sends queued notices, in order, until close. It
// holds no lock while it sends. A notice may block in the kernel for as
// long as a request on its directory is in flight; that is why it runs
// here and nowhere else.
func (nq *NotifyQueue) run(k notifier, log *zap.Logger) {
	var reportedDrops uint64
	for {
		batch, done := nq.take()
		if done {
			return
		}
		for _, n := range batch {
			st := send(k, n)
			nq.mu.Lock()
			nq.advanceLocked(n.seq)
			nq.mu.Unlock()
			switch st {
			case fuse.OK:
				nq.sent.Add(1)
			case fuse.ENOENT:
				// The kernel holds nothing under that name or id:
				// nothing to invalidate.
				nq.sent.Add(1)
			default:
				nq.failed.Add(1)
				if st != fuse.Status(syscall.ENODEV) && st != fuse.Status(syscall.EBADF) {
					log.Debug("notify refused", zap.Stringer("kind", n.kind),
						zap.Uint64("parent", n.parent), zap.Uint64("ino", n.child),
						zap.String("name", n.name), zap.Stringer("status", st))
				}
			}
		}
		if d := nq.dropped.Load(); d != reportedDrops {
			log.Warn("notify queue overflowed; the kernel may serve stale names until their timeouts",
				zap.Uint64("dropped_total", d), zap.Int("queue_size", nq.max))
			reportedDrops = d
		}
		if len(batch) == 0 {
			<-nq.wake
		}
	}
}

func send(k notifier, n notice) fuse.Status {
	switch n.kind {
	case noticeEntry:
		return k.EntryNotify(n.parent, n.name)
	case noticeDelete:
		return k.DeleteNotify(n.parent, n.child, n.name)
	case noticeInode:
		return k.InodeNotify(n.child, -1, 0) // attributes only
	case noticeDir:
		return k.InodeNotify(n.child, 0, 0) // attributes and every cached page: the listing
	}
	return fuse.EINVAL
}

// NotifyStats counts the queue's work.
type NotifyStats struct {
	Queued, Dropped, Sent, Failed uint64
	Pending                       int
}

// Stats returns the queue's counters.
func (nq *NotifyQueue) Stats() NotifyStats {
	return NotifyStats{Queued: nq.queued.Load(), Dropped: nq.dropped.Load(),
		Sent: nq.sent.Load(), Failed: nq.failed.Load(), Pending: nq.len()}
}

// stopWorker closes nq and waits up to d for the worker to exit. A worker
// blocked in the kernel (a notify waiting on a directory lock) is left
// behind; the process exit ends it.
func stopWorker(nq *NotifyQueue, exited <-chan struct{}, d time.Duration) bool {
	nq.close()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-exited:
		return true
	case <-t.C:
		return false
	}
}

// NotifyMux is the namespace's event sink when several mounts serve it:
// it hands every event to the notify queue of each mount, which decides
// for its own kernel (NotifyQueue.Event). It never blocks. Each queue
// added gets a mount id, unique among the mux's queues, which requests
// through its server put in dcache.Caller.Mount.
type NotifyMux struct {
	mu  sync.Mutex                     // serializes Add and Remove
	qs  atomic.Pointer[[]*NotifyQueue] // copy on write: Event takes no lock
	ids map[uint16]bool                // guarded by mu: ids in use
}

// NewNotifyMux returns a mux over qs (the main mount's queue).
func NewNotifyMux(qs ...*NotifyQueue) *NotifyMux {
	m := &NotifyMux{ids: map[uint16]bool{}}
	m.qs.Store(new([]*NotifyQueue))
	for _, q := range qs {
		if err := m.Add(q); err != nil {
			panic(err)
		}
	}
	return m
}

var _ dcache.Sink = (*NotifyMux)(nil)

// WantsLookups implements dcache.LookupSink: a LOOKUP changes nothing the
// kernel caches, so no queue has a use for it.
func (m *NotifyMux) WantsLookups() bool { return false }

// Event implements dcache.Sink.
func (m *NotifyMux) Event(ev dcache.Event) {
	for _, q := range *m.qs.Load() {
		q.Event(ev)
	}
}

// Add gives q a mount id and starts handing it events. Call it before
// q's server mounts (the id is read by its requests).
func (m *NotifyMux) Add(q *NotifyQueue) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := uint16(0)
	for i := 1; i <= 1<<16-1; i++ {
		if !m.ids[uint16(i)] {
			id = uint16(i)
			break
		}
	}
	if id == 0 {
		return fmt.Errorf("fs: %d mounts already", 1<<16-1)
	}
	m.ids[id] = true
	q.id = id
	old := *m.qs.Load()
	next := make([]*NotifyQueue, 0, len(old)+1)
	next = append(append(next, old...), q)
	m.qs.Store(&next)
	return nil
}

// Remove stops handing q events (its mount is gone) and frees its id.
func (m *NotifyMux) Remove(q *NotifyQueue) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.qs.Load()
	next := make([]*NotifyQueue, 0, len(old))
	for _, x := range old {
		if x != q {
			next = append(next, x)
		}
	}
	if len(next) != len(old) {
		delete(m.ids, q.id)
	}
	m.qs.Store(&next)
}
