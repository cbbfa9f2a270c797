package rwsem

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/devfsd/devfsd/sync/waitq"
)

// waitKind is what a queued waiter waits for.
type waitKind uint8

const (
	kindRead    waitKind = iota + 1 // DownRead: granted readerBias
	kindWrite                       // DownWrite: granted WRITER
	kindRelease                     // WaitForRelease: granted nothing
)

// A waiter is the record of one wait: one call of a Down slow path or of
// WaitForRelease queues exactly one record and returns it to the pool when
// it returns (race R2: a wait is one record). Records come from recordPool
// (or, in tests, from hooks.getRecord) and are reused; the rules that make
// reuse safe are in the package doc.
type waiter struct {
	// wakeLink is empty in real builds; the mutant_r1 build threads its
	// wake list through it.
	wakeLink

	// tok is the record's wake handle. It stays with the record across
	// reuses, so every wakeup posted to it must be consumed before the
	// record is put back.
	tok waitq.Token

	// kind is set before the record is queued and not changed while it is
	// queued.
	kind waitKind
	// passedOver is when a grant to this record, at the head, first failed
	// because s was held: the start of its handoff wait limit. Zero until
	// then (the clock is read only on a pass-over, not on every enqueue).
	// Guarded by Sem.waitMu.
	passedOver time.Time

	// prev and next link the record into its Sem's wait list, and queued
	// is true while it is linked. Guarded by Sem.waitMu. For a reader or
	// WaitForRelease record, unlinking and clearing queued is the grant:
	// the last write made to the record by anyone but its owner. A writer
	// unlinks its own record when it takes s.
	prev, next *waiter
	queued     bool
	// woken is set when a waker collects the wake handle of this queued
	// writer, the last write a waker makes to it, and cleared by the
	// writer once it has consumed that wakeup: a wakeup is in flight or
	// pending exactly while it is set, and no second one is collected.
	// Guarded by Sem.waitMu.
	woken bool
}

var recordPool = sync.Pool{New: func() any { return &waiter{tok: waitq.NewToken()} }}

// getRecord returns a reset record of the given kind.
func (s *Sem) getRecord(k waitKind) *waiter {
	var w *waiter
	if h := s.hooks; h != nil && h.getRecord != nil {
		w = h.getRecord()
	} else {
		w = recordPool.Get().(*waiter)
	}
	*w = waiter{tok: w.tok, kind: k}
	return w
}

// putRecord returns a finished record. Its wakeup, if any, was consumed.
func (s *Sem) putRecord(w *waiter) {
	if h := s.hooks; h != nil && h.putRecord != nil {
		h.putRecord(w)
		return
	}
	recordPool.Put(w)
}

// enqueueLocked appends w to the wait list and returns the state word after
// setting WAITERS if w is the first waiter, with adj added to it in the
// same atomic step. Preconditions: s.waitMu held.
func (s *Sem) enqueueLocked(w *waiter, adj int64) int64 {
	w.queued = true
	w.prev = s.tail
	if s.tail != nil {
		s.tail.next = w
	} else {
		s.head = w
		adj += flagWaiters // WAITERS is clear: the list was empty.
	}
	s.tail = w
	c := s.state.Add(adj)
	if h := s.hooks; h != nil && h.enqueued != nil {
		h.enqueued(w)
	}
	return c
}

// unlinkLocked takes w off the wait list. Preconditions: s.waitMu held. It does
// not touch the state word.
func (s *Sem) unlinkLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		s.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		s.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
}

// removeLocked takes a cancelled waiter off the wait list, clearing
// HANDOFF if it was the head (the bit was its) and WAITERS if the list is
// now empty. It returns the state word after the change and whether w was
// the head. Preconditions: s.waitMu held; w queued.
// Model: removeLocked in test/model/rwsem.pml.
func (s *Sem) removeLocked(w *waiter) (c int64, wasHead bool) {
	wasHead = s.head == w
	s.unlinkLocked(w)
	clear := int64(0)
	if wasHead {
		clear |= flagHandoff
	}
	if s.head == nil {
		clear |= flagWaiters | flagHandoff
	}
	if clear != 0 {
		return s.state.And(^clear) &^ clear, wasHead
	}
	return s.state.Load(), wasHead
}

// wake runs markWakeLocked under waitMu and posts the collected wakeups
// after dropping it. Called by releases that leave s free (or read-held)
// with WAITERS set.
func (s *Sem) wake() {
	var wl wakeList
	s.waitMu.Lock()
	s.markWakeLocked(&wl)
	s.waitMu.Unlock()
	s.issue(&wl)
}

// issue posts the wakeups collected under waitMu. waitMu must not be held.
func (s *Sem) issue(wl *wakeList) {
	if wl.empty() {
		return
	}
	if h := s.hooks; h != nil && h.beforeWake != nil {
		h.beforeWake()
	}
	wl.wake(s.hooks)
}

// markWakeLocked grants s to the waiters at the head of the queue that can
// have it now, collecting their wake handles into wl. Preconditions: s.waitMu held.
// See "The wait list and waking" in the package doc.
// Model: markWakeLocked in test/model/rwsem.pml.
func (s *Sem) markWakeLocked(wl *wakeList) {
	for {
		w := s.head
		if w == nil {
			return
		}
		if w.kind == kindWrite {
			s.wakeWriterLocked(w, wl)
			return
		}
		if !s.grantReadersLocked(wl) {
			return
		}
	}
}

// passedOverLocked is called when the grant to the head waiter w failed
// because s is held. If w has been passed over for longer than waitLimit
// (counted from its first pass-over at the head) it reserves s for w by
// setting HANDOFF — the only place the bit is set. Preconditions: s.waitMu held.
func (s *Sem) passedOverLocked(w *waiter, c int64) {
	if c&flagHandoff != 0 {
		return
	}
	now := time.Now()
	if w.passedOver.IsZero() {
		w.passedOver = now
	}
	if now.Sub(w.passedOver) >= waitLimit {
		s.state.Or(flagHandoff)
	}
}

// wakeWriterLocked wakes the writer w at the head of the queue if s is
// free, without granting s: w takes s itself when it runs
// (tryWriteLockLocked), and until then others may steal s. If s is held,
// w is passed over; whoever holds s wakes the head again on release.
// Preconditions: s.waitMu held.
// Model: wakeWriterLocked in test/model/rwsem.pml.
func (s *Sem) wakeWriterLocked(w *waiter, wl *wakeList) {
	if c := s.state.Load(); c&lockMask != 0 {
		s.passedOverLocked(w, c)
		return
	}
	if !w.woken {
		w.woken = true
		wl.add(w)
	}
}

// tryWriteLockLocked takes s for the queued writer w, which must be the
// head, if s is free. Taking s clears HANDOFF (it was w's) and, if w was
// the only waiter, WAITERS, and dequeues w. Preconditions: s.waitMu held.
// Model: tryWriteLockLocked in test/model/rwsem.pml.
func (s *Sem) tryWriteLockLocked(w *waiter) bool {
	for {
		c := s.state.Load()
		if c&lockMask != 0 {
			s.passedOverLocked(w, c)
			return false
		}
		n := (c | writerLocked) &^ flagHandoff
		if w.next == nil {
			n &^= flagWaiters
		}
		if s.state.CompareAndSwap(c, n) {
			break
		}
	}
	s.unlinkLocked(w)
	return true
}

// grantReadersLocked runs a reader phase for the reader or WaitForRelease
// waiter at the head: if no writer holds s it grants every reader and
// WaitForRelease waiter in the queue, up to maxReadersWakeup, raising the
// reader count by the number of readers only. It reports whether the
// caller should look at the head again: the phase woke only WaitForRelease
// waiters, s is free and others are still queued (race R3). Preconditions:
// s.waitMu held.
// Model: grantReadersLocked in test/model/rwsem.pml (R3: again).
func (s *Sem) grantReadersLocked(wl *wakeList) (again bool) {
	head := s.head
	// Count the phase first: the state word must be raised for all the
	// readers before any of them can run (and release).
	readers, n := int64(0), 0
	left := false // will anyone still be queued after this phase?
	for w := head; w != nil; w = w.next {
		if w.kind == kindWrite || n == maxReadersWakeup {
			left = true
			continue
		}
		n++
		if w.kind == kindRead {
			readers++
		}
	}
	var c, nc int64
	for {
		c = s.state.Load()
		if c&writerLocked != 0 {
			s.passedOverLocked(head, c)
			return false
		}
		nc = (c + readers*readerBias) &^ flagHandoff
		if !left {
			nc &^= flagWaiters
		}
		if s.state.CompareAndSwap(c, nc) {
			break
		}
	}
	for w := head; w != nil && n > 0; {
		next := w.next
		if w.kind != kindWrite {
			s.unlinkLocked(w)
			wl.add(w)
			n--
		}
		w = next
	}
	return readers == 0 && s.head != nil && wakeNextIfFree(nc)
}

// downReadSlow is DownRead after its fast path failed; the caller's
// readerBias is still counted in the state word. done is ctx's Done channel
// (nil: wait forever).
func (s *Sem) downReadSlow(ctx context.Context, k waitKind) error {
	var wl wakeList
	s.waitMu.Lock()
	if s.head == nil && s.state.Load()&writerLocked == 0 {
		// The writer we saw left and nobody waits: keep our count.
		s.waitMu.Unlock()
		return nil
	}
	w := s.getRecord(k)
	c := s.enqueueLocked(w, -readerBias)
	if c&writerLocked == 0 {
		// Removing our count may have freed s, or s is read-held and we
		// may be at the head: let the head have it (perhaps us).
		s.markWakeLocked(&wl)
	}
	s.waitMu.Unlock()
	s.issue(&wl)
	return s.sleep(ctx, w)
}

// writerYields bounds how often a writer yields, retrying to steal s,
// before it queues.
const writerYields = 4

// downWriteSlow is DownWrite after its fast path failed. Once queued, the
// writer takes s itself when it is the head and s is free: a waker only
// wakes it, and it sleeps again if s was stolen meanwhile.
// Model: downWrite in test/model/rwsem.pml (the yield loop is one steal
// attempt there: a failed attempt writes nothing).
func (s *Sem) downWriteSlow(ctx context.Context) error {
	// Before queueing — which sets WAITERS and so sends every new reader
	// to the queue too — give the holders a few chances to finish, as
	// long as nobody is queued yet. Without this, a holder preempted on an
	// oversubscribed P starts a convoy in which most operations queue
	// (see test/bench/README.md). Bounded, so a writer queues soon.
	for range writerYields {
		if s.tryStealWrite() {
			return nil
		}
		if s.state.Load()&flagWaiters != 0 {
			break
		}
		runtime.Gosched()
	}
	if s.tryStealWrite() {
		return nil
	}
	var wl wakeList
	s.waitMu.Lock()
	w := s.getRecord(kindWrite)
	c := s.enqueueLocked(w, 0)
	for {
		if s.head == w {
			if s.tryWriteLockLocked(w) {
				s.waitMu.Unlock()
				s.putRecord(w)
				return nil
			}
		} else if c&writerLocked == 0 {
			// s is free or read-held: the head may be able to have it.
			s.markWakeLocked(&wl)
		}
		s.waitMu.Unlock()
		s.issue(&wl)
		if err := s.sleepWriter(ctx, w); err != nil {
			return err
		}
		s.waitMu.Lock()
		w.woken = false
		c = s.state.Load()
	}
}

// sleepWriter waits until the queued writer w is woken (nil; it is still
// queued and retries) or ctx is done (ctx.Err(), w dequeued and returned
// to the pool).
// Model: sleepWriter in test/model/rwsem.pml (R2: consumeGrantWakeup).
func (s *Sem) sleepWriter(ctx context.Context, w *waiter) error {
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	if done == nil {
		w.tok.Consume()
		return nil
	}
	select {
	case <-w.tok.C():
		return nil
	case <-done:
	}
	var wl wakeList
	s.waitMu.Lock()
	c, wasHead := s.removeLocked(w)
	if wasHead && c&writerLocked == 0 {
		// We may have been what held up those behind us, or we were
		// woken to take a free s: pass it on.
		s.markWakeLocked(&wl)
	}
	woken := w.woken
	s.waitMu.Unlock()
	s.issue(&wl)
	if woken {
		// Our wakeup is on its way; consume it before the record can be
		// reused (race R2).
		if h := s.hooks; h != nil && h.grantedWhileCancelling != nil {
			h.grantedWhileCancelling()
		}
		consumeGrantWakeup(w)
	}
	s.putRecord(w)
	return ctx.Err()
}

// waitForReleaseSlow is WaitForRelease when a writer holds s or others wait.
func (s *Sem) waitForReleaseSlow(ctx context.Context) error {
	var wl wakeList
	s.waitMu.Lock()
	if s.state.Load()&readFailMask == 0 {
		s.waitMu.Unlock()
		return nil
	}
	w := s.getRecord(kindRelease)
	c := s.enqueueLocked(w, 0)
	if c&writerLocked == 0 {
		s.markWakeLocked(&wl)
	}
	s.waitMu.Unlock()
	s.issue(&wl)
	return s.sleep(ctx, w)
}

// sleep waits on the queued reader or WaitForRelease record w until it is
// granted (nil) or ctx is done (ctx.Err(), w dequeued, nothing held). It
// returns w to the pool.
// Model: sleep in test/model/rwsem.pml (R2: consumeGrantWakeup).
func (s *Sem) sleep(ctx context.Context, w *waiter) error {
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	if done == nil {
		// DownRead, DownWrite, or a context that never ends: a plain
		// receive is much cheaper than a select.
		w.tok.Consume()
		s.putRecord(w)
		return nil
	}
	select {
	case <-w.tok.C():
		s.putRecord(w)
		return nil
	case <-done:
	}
	var wl wakeList
	s.waitMu.Lock()
	if w.queued {
		c, wasHead := s.removeLocked(w)
		if wasHead && c&writerLocked == 0 {
			// We may have been what held up those behind us.
			s.markWakeLocked(&wl)
		}
		s.waitMu.Unlock()
		s.issue(&wl)
		s.putRecord(w)
		return ctx.Err()
	}
	s.waitMu.Unlock()
	// Granted before we could give up: the grant wins. Its wakeup is on
	// its way; consume it before the record can be reused (race R2).
	if h := s.hooks; h != nil && h.grantedWhileCancelling != nil {
		h.grantedWhileCancelling()
	}
	consumeGrantWakeup(w)
	s.putRecord(w)
	return nil
}
