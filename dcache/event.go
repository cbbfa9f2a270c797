package dcache

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is the kind of an Event, after devfsd's event names.
type Kind uint8

const (
	KindRegister   Kind = iota + 1 // REGISTER: a node was registered (and each parent created for it)
	KindUnregister                 // UNREGISTER: a registered node was removed
	KindLookup                     // LOOKUP: a lookup missed and asks the loader
	KindChange                     // CHANGE: mode or owner changed
	KindCreate                     // CREATE: a user made a node (mknod, mkdir, symlink, link, rename target)
	KindDelete                     // DELETE: a user removed a name (unlink, rmdir, rename source or victim)
	KindExpire                     // EXPIRE: a negative entry timed out (internal; not a devfsd event)
	KindTouch                      // TOUCH: times changed without mode or owner (internal; not a devfsd event)
	// The two devfsd events a devfsd.conf may name that this namespace
	// never raises: over FUSE the daemon sees no open or close of a
	// device (the kernel's driver does).
	KindAsyncOpen // ASYNC_OPEN: never raised
	KindClose     // CLOSE: never raised
)

var kindNames = [...]string{"INVALID", "REGISTER", "UNREGISTER", "LOOKUP", "CHANGE", "CREATE", "DELETE", "EXPIRE", "TOUCH", "ASYNC_OPEN", "CLOSE"}

// ParseKind is the inverse of Kind.String, in any case: "register" and
// "REGISTER" are KindRegister. It refuses "INVALID".
func ParseKind(s string) (Kind, bool) {
	for k := 1; k < len(kindNames); k++ {
		if strings.EqualFold(s, kindNames[k]) {
			return Kind(k), true
		}
	}
	return 0, false
}

// Internal reports whether k is one of the daemon's own kinds (EXPIRE,
// TOUCH) rather than a devfsd event: consumers outside the daemon never
// see them.
func (k Kind) Internal() bool { return k == KindExpire || k == KindTouch }

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "INVALID"
}

// Event describes one change. Path is slash-separated and relative to the
// namespace root ("input/event0"), as devfsd names devices; it is computed
// when the event is queued and may be stale under a concurrent rename of an
// ancestor. Parent and Name address the directory entry for a kernel entry
// or delete notify; Ino the inode for an inode notify.
type Event struct {
	Seq    uint64 // queue order, from 1
	Kind   Kind
	Path   string
	Parent uint64 // inode number of the directory holding Name
	Name   string
	Ino    uint64 // 0 for LOOKUP and EXPIRE (no inode)
	Type   Type   // 0 for LOOKUP and EXPIRE
	Mode   uint32 // S_IFMT | permission bits
	Major  uint32
	Minor  uint32
	Uid    uint32
	Gid    uint32
	Target string    // symlinks: the target
	Atime  time.Time // the node's times when the event was queued (0 for LOOKUP, EXPIRE)
	Mtime  time.Time
	Caller Caller // who made the change
	// Renamed marks the DELETE and CREATE events of one rename (two of
	// each for RENAME_EXCHANGE): the node moved, it was not removed and
	// made anew. A rename queues its Renamed events together, with
	// consecutive Seq, each CREATE after the DELETE of the same Ino, so
	// a consumer that keeps per-node state (package state) can hold a
	// Renamed DELETE until its CREATE arrives, which it always does in
	// the same delivery.
	Renamed bool
}

// FromLoader reports whether the loader (or helper) made the change, so it
// must not be echoed back to it.
func (e *Event) FromLoader() bool { return e.Caller.Origin == OriginLoader }

// Sink receives events. Event is called with no dcache mutex held, one
// call at a time, in queue order, possibly while the calling goroutine holds
// a directory sem (package lookup holds it across a namespace change). It
// must therefore only queue: never block, never call into dcache or lookup,
// never send a kernel notify itself. A sink that drops events must count
// what it drops.
type Sink interface {
	Event(ev Event)
}

// LookupSink is implemented by a Sink that can say whether it wants LOOKUP
// events at the moment. While it says no, EmitLookup neither builds nor
// queues one: a miss of a name nobody provides is the hot path of mknod
// churn and of scanners, and a LOOKUP event changes nothing, so a sink
// that only keeps or mirrors the namespace has no use for it. A Sink that
// does not implement LookupSink gets every LOOKUP event.
//
// WantsLookups is called without any dcache mutex held, once per miss; it
// must be cheap and must not block. A sink that starts wanting LOOKUP
// events (a control-socket subscriber arriving) gets those of the misses
// that asked after it started; a miss that asked a moment before is not
// replayed, as it would not have been had the subscriber come a moment
// later.
type LookupSink interface {
	WantsLookups() bool
}

// WantsLookups reports whether s wants LOOKUP events now: a nil sink does
// not, a Sink that is no LookupSink always does.
func WantsLookups(s Sink) bool {
	if s == nil {
		return false
	}
	ls, ok := s.(LookupSink)
	return !ok || ls.WantsLookups()
}

// eventQueue orders events under the namespace locks and delivers them
// outside them. Whoever flushes first becomes the single deliverer and
// drains until the queue is empty; the others return at once.
type eventQueue struct {
	sink Sink // immutable

	mu sync.Mutex // leaf; taken under dir mus and attrMu
	// Guarded by mu:
	seq      uint64
	pending  []Event
	flushing bool
	// spare is the emptied backing array of the last batch delivered,
	// reused by the next push that finds pending nil, so that a queue
	// holding one event at a time (every change through FUSE) does not
	// allocate a slice per event. Never larger than maxSpare.
	spare []Event

	// queued is len(pending), written under mu, read without it by
	// flush's fast path: most flushes (every lookup calls one) find
	// nothing to deliver and need not take mu. A flush that reads 0 has
	// nothing of its own caller's to deliver: a caller flushes after its
	// own pushes, which it sees in program order, and an event pushed by
	// another goroutine is flushed by that goroutine.
	queued atomic.Int64
}

// push queues ev. It takes q.mu, a leaf: callers may hold any namespace
// lock, and usually do, so that events queue in the order of the changes.
func (q *eventQueue) push(ev Event) { q.pushAll(ev) }

// maxSpare bounds the batch array a queue keeps for reuse (events).
const maxSpare = 256

// reuseLocked makes pending the spare array if pending is nil.
// Preconditions: q.mu held.
func (q *eventQueue) reuseLocked() {
	if q.pending == nil && q.spare != nil {
		q.pending, q.spare = q.spare, nil
	}
}

// pushAll queues evs with consecutive sequence numbers, nothing between
// them. It takes q.mu, as push.
func (q *eventQueue) pushAll(evs ...Event) {
	if q.sink == nil {
		return
	}
	q.mu.Lock()
	q.reuseLocked()
	for _, ev := range evs {
		q.seq++
		ev.Seq = q.seq
		q.pending = append(q.pending, ev)
	}
	q.queued.Store(int64(len(q.pending)))
	q.mu.Unlock()
}

// lastSeq returns the sequence number of the last event queued.
func (q *eventQueue) lastSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.seq
}

// flush delivers queued events. Preconditions: no dcache mutex held.
func (q *eventQueue) flush() {
	if q.sink == nil || q.queued.Load() == 0 {
		return
	}
	q.mu.Lock()
	if q.flushing {
		q.mu.Unlock()
		return
	}
	q.flushing = true
	locked := true // whether this goroutine holds mu
	defer func() {
		// A panicking sink must not stop delivery for good: it panics
		// with mu released, so retake it before clearing flushing.
		if !locked {
			q.mu.Lock()
		}
		q.flushing = false
		q.mu.Unlock()
	}()
	for len(q.pending) > 0 {
		batch := q.pending
		q.pending = nil
		q.queued.Store(0)
		q.mu.Unlock()
		locked = false
		for i := range batch {
			q.sink.Event(batch[i])
		}
		// The sink has the events by value: the array can take the
		// next ones (emptied first, so that it pins no strings).
		clear(batch)
		q.mu.Lock()
		locked = true
		if cap(batch) <= maxSpare {
			q.spare = batch[:0]
		}
	}
}
