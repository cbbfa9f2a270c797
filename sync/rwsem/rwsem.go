// Package rwsem is a reader-writer semaphore with the semantics of Linux's
// kernel/locking/rwsem.c: shared readers, one exclusive writer, a FIFO wait
// queue with phase-fair reader batches, writer lock stealing bounded by a
// handoff bit, context-aware ("killable") acquisition, and WaitForRelease,
// a wait for the current writer to finish that takes no lock (the
// rwsem_wait_killable proposal).
//
// It exists instead of sync.RWMutex because devfsd's directory semaphore
// needs what sync.RWMutex lacks: acquisition that gives up when a context
// is done (a FUSE INTERRUPT) without leaving anything behind, a wait for a
// writer without becoming a reader, and a starvation bound that is stated.
//
// # The state word
//
// Everything a fast path needs is in one 64-bit word, s.state:
//
//	bit 63 ........... 8 | 7 .. 3 |    2    |    1    |    0
//	     reader count    | unused | HANDOFF | WAITERS | WRITER
//
//	WRITER   (writerLocked) a writer holds s. Set only by the writer that
//	         takes s (fast path CAS, stealing CAS, TryDownWrite, or, queued
//	         at the head, tryWriteLockLocked); cleared by UpWrite and
//	         DowngradeWrite. Nobody grants s to a writer on its behalf.
//	WAITERS  (flagWaiters) the wait list is not empty. Set and cleared only
//	         under waitMu, always together with the change to the list, so
//	         under waitMu it is exactly "s.head != nil".
//	HANDOFF  (flagHandoff) the first waiter has been passed over for
//	         longer than waitLimit and must be served next: nobody else may
//	         take s, neither a fast path nor a stealing writer. Changed
//	         only under waitMu (see below).
//	readers  (readerBias units) the number of readers holding s, plus
//	         readers momentarily testing it on the read fast path.
//
// The states, with R = reader count:
//
//	0                          free, nobody waiting
//	R>0                        read-locked, nobody waiting
//	WRITER                     write-locked, nobody waiting
//	WAITERS                    free with waiters: a waker is on its way
//	                           (every release that leaves this state calls
//	                           one), or a woken head writer is waking up to
//	                           take s; meanwhile a writer may steal s
//	R>0|WAITERS                read-locked; the head waiter is a writer
//	                           (new readers queue behind it)
//	WRITER|WAITERS             write-locked with waiters
//	...|HANDOFF                as above, but s is reserved for the head
//	                           waiter: only the head may take it (a waker
//	                           granting head readers, or the head writer
//	                           itself)
//
// WRITER and R>0 are never both set except for the transient reader
// increments of failing read fast paths (a reader adds readerBias, sees
// WRITER, and removes it again in its slow path); such a transient count
// only makes others fail and retry, and the reader that removes it calls
// the waker itself if that removal freed s.
//
// HANDOFF is set in exactly one function, passedOverLocked, when the head
// waiter could not have s because s is held (a stealing writer took it,
// or readers hold it) and the head has been passed over for longer than
// waitLimit, counted from the first such failure. It is called from
// three places, all under waitMu and all for the head: wakeWriterLocked
// (a waker finds s held with a writer at the head), grantReadersLocked (a
// reader phase finds a writer holding s), and tryWriteLockLocked (the
// woken head writer finds s stolen; the kernel sets the bit there too, in
// rwsem_try_write_lock). It is cleared in exactly four places, all under
// waitMu: by tryWriteLockLocked when the head writer takes s and by
// grantReadersLocked when it grants the head readers (the reservation is
// used up), by removeLocked when the head waiter it was set for leaves
// the queue (cancelled), and with WAITERS when the queue empties. The bit
// therefore always belongs to the current head waiter.
//
// # Acquiring
//
// DownRead's fast path is one atomic add of readerBias; it succeeds if the
// result has neither WRITER nor WAITERS (HANDOFF implies WAITERS). DownWrite's
// is one compare-and-swap from 0 to WRITER. Up calls are one atomic add (or
// CAS) and take the slow path only if WAITERS is set and the release freed
// s.
//
// A writer that fails its fast path steals s if s is free and HANDOFF is
// clear, even with waiters queued — writer lock stealing. Readers never
// steal: once anyone waits, new readers queue.
//
// Stealing happens while s is free with waiters queued, which is mostly
// while a woken writer is waking up: a waker does not grant s to the
// writer at the head, it only wakes it (as the kernel's rwsem_mark_wake
// does: "until the task is actually awoken later by the caller, other
// writers are able to steal it"), and the writer takes s itself when it
// runs (tryWriteLockLocked, the kernel's rwsem_try_write_lock). Meanwhile
// s stays free and a running writer can take it, rather than every write
// handing s to a goroutine that still has to be scheduled, which convoys
// at 50% writes (test/bench/README.md has the figures). A woken writer
// that finds s taken sleeps again, still at the head; the thief's release
// wakes it again. Readers, and WaitForRelease waiters, are granted by the
// waker, in a reader phase.
//
// Readers do not steal, unlike the kernel's (commit 1a728dff855a,
// "locking/rwsem: Enable reader optimistic lock stealing", bounded by
// commit 2f06f702925b): a reader that has just released s (waking the
// head writer) and reads again would steal s back before the woken writer
// runs, again and again until HANDOFF stops it after waitLimit, while
// WAITERS queues every other reader behind that writer. The kernel's
// woken writer spins on the owner and so usually wins; a goroutine cannot
// (test/bench/README.md has the figures).
//
// Writers are not starved by a stream of readers: new readers queue
// behind a waiting writer. Waiters are not starved by stealing writers:
// after waitLimit the head sets HANDOFF and stealing stops until the head
// has s.
//
// # The wait list and waking
//
// Waiters queue FIFO under waitMu, the semaphore's wait lock, each with
// one record (a *waiter) and its wake handle (a waitq.Token). Waking is
// done by markWakeLocked, always under waitMu, which looks at the head:
//
//   - a writer at the head is woken if s is free, unless it already has
//     been and has not yet run (its record's woken flag); nothing is granted
//     to it, it stays queued and takes s itself when it runs. If s is held
//     nothing happens — whoever holds s will call the waker again when
//     releasing it;
//   - a reader or WaitForRelease waiter at the head starts a reader phase
//     (phase-fair, as in the kernel): if no writer holds s, every reader and
//     WaitForRelease waiter in the queue, up to maxReadersWakeup of them, is
//     granted at once, skipping the writers between them, and the reader
//     count is raised by the number of readers in one atomic step before any
//     of them is woken.
//
// The grant (or, for a writer, the wake) is done entirely under waitMu and
// is the last write a waker makes to a record: it unlinks a reader or
// WaitForRelease record (a writer's it marks woken) and collects its Token
// into a wake list. The Tokens are posted after waitMu is dropped; a woken
// reader owns what it was granted as soon as it receives its Token and may
// return, and a woken writer may take s and return, so the record may be
// reused at once (race R1 of DESIGN.md). A reader or WaitForRelease waiter
// whose context ends takes waitMu: if its record is still queued it
// unlinks it and fails; if it was already granted, it consumes the wakeup
// in flight — so that no later wait on the same record can receive it
// (race R2) — and reports success, holding what it was granted. A writer
// whose context ends is always still queued: it unlinks its record, and if
// it had been woken it consumes that wakeup (R2) and wakes whoever can
// have s after it. A failed DownReadCtx or DownWriteCtx thus never leaves
// s held or a record queued.
//
// WaitForRelease waiters are never counted as readers: the reader phase
// adds readerBias only for real readers. If a reader phase woke only
// WaitForRelease waiters and s is then free, markWakeLocked starts over
// with the new head, so that a writer queued behind them is not left
// asleep on a free semaphore (race R3).
//
// The wait list is not a waitq.Queue, though it shares its mechanism. Who
// may be woken depends on the state word, and granting must change it —
// raise the reader count, set WRITER, clear WAITERS and HANDOFF — in the
// same critical section that takes the waiters off the list; a waker that
// changed the state word after dropping a queue lock would let a stealing
// writer in between, or leave WAITERS set on an empty list. waitq.Queue's
// lock is its own and its wake policy knows only exclusive and
// non-exclusive, not reader phases. What rwsem takes from waitq is the
// wake handle, waitq.Token (one per record, posted at most once before it
// is consumed, consumed before the record is reused), and the
// collect-under-the-lock, post-after discipline of waitq.WakeList.
//
// A waiter that is cancelled while at the head may have been what blocked
// those behind it (a writer ahead of readers on a read-held s), so
// removeLocked's callers run markWakeLocked after it.
//
// No optimistic spinning on the owner is done, unlike the kernel: a Go
// goroutine cannot see whether the holder is running. Instead a writer
// that would be the first to queue yields the processor a few times
// (writerYields), retrying to steal, so that holders which are runnable
// but not running can finish before WAITERS diverts every new reader into
// the queue. A blocked goroutine parks on its Token's channel; a woken
// writer that finds s stolen parks on it again.
//
// # Model
//
// test/model/rwsem.pml is a spin model of this algorithm: the state word,
// the wait list, reader phases, handoff, writer stealing, the woken
// writer's retry, the wake list posted after waitMu and record reuse, one
// Promela inline per function of slow.go and rwsem.go under the same name.
// test/model/check.sh proves mutual exclusion, no lost wakeup and R1 to R3
// with it, for the bounded set of goroutines docs/model.md describes, and
// that each mutant's bug is found. Change the model with the code.
//
// # Contract
//
// The zero Sem is unlocked. A Sem must not be copied after first use. A
// Sem is not tied to a goroutine: it may be released by a goroutine other
// than the one that acquired it.
//
// In the terms of the Go memory model: the n'th call to UpWrite is
// synchronized before the m'th call to DownWrite or DownRead (or their Ctx
// and Try forms) returns, for any n < m; DowngradeWrite counts as that
// UpWrite for later readers and for the next writer. For any call of a
// DownRead form that holds s, there is an n such that the n'th UpWrite is
// synchronized before it returns, and its matching UpRead is synchronized
// before the (n+1)'th DownWrite returns. A WaitForRelease that returns nil
// after waiting is preceded, in that order, by the UpWrite of the writer it
// waited for (or by one after it: only "a writer finished" is promised, and
// another writer may hold s again when it returns); one that returns at
// once observed no writer holding s and nobody queued.
//
// The queue is FIFO, but DownWrite and TryDownWrite may take s ahead of
// queued waiters (stealing), only ever a free s with HANDOFF clear. Once
// the head waiter has been passed over for waitLimit, HANDOFF reserves s
// for it and nobody steals until it has been served. DownRead and
// TryDownRead never steal: a reader that finds waiters queued joins the
// queue (where a reader phase may grant it ahead of writers queued before
// it: phase-fair).
//
// Misuse — UpRead or UpWrite of a semaphore not held that way,
// DowngradeWrite without the write lock — panics with a message starting
// "rwsem: ". The checks are best effort: an UpRead racing with a failing
// read fast path may go unnoticed.
package rwsem

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The state word. See the package doc.
const (
	writerLocked int64 = 1 << 0 // WRITER
	flagWaiters  int64 = 1 << 1 // WAITERS
	flagHandoff  int64 = 1 << 2 // HANDOFF

	readerShift       = 8
	readerBias  int64 = 1 << readerShift
	readerMask  int64 = ^(readerBias - 1)

	// lockMask: s is held by somebody.
	lockMask = writerLocked | readerMask
	// readFailMask: a read fast path must not take s.
	readFailMask = writerLocked | flagWaiters | flagHandoff
	// upReadSlowMask: UpRead must look further (WAITERS, or the sign bit
	// of a negative reader count).
	upReadSlowMask = uint64(flagWaiters) | 1<<63
)

// maxReadersWakeup bounds the number of waiters granted in one reader
// phase, as the kernel's MAX_READERS_WAKEUP. The rest are granted by the
// next phase.
const maxReadersWakeup = 256

// waitLimit is how long a waiter may be passed over before it sets HANDOFF.
// The kernel's RWSEM_WAIT_TIMEOUT is 4 ms. A variable so tests can shorten
// it; it is read only by slow paths.
var waitLimit = 4 * time.Millisecond

// Sem is a reader-writer semaphore. The zero value is unlocked.
type Sem struct {
	// state is the state word. Atomic; the WAITERS and HANDOFF bits change
	// only under waitMu.
	state atomic.Int64

	// waitMu is the wait lock. It is a leaf: nothing else is locked under
	// it, and no Token is posted under it.
	waitMu sync.Mutex
	// head and tail link the queued waiters, FIFO. Guarded by waitMu.
	head, tail *waiter

	// hooks is nil except in tests. Set before s is used and never changed
	// while s is in use.
	hooks *testHooks
}

// DownRead takes s for reading, waiting as long as it takes.
func (s *Sem) DownRead() {
	if s.state.Add(readerBias)&readFailMask == 0 {
		return
	}
	_ = s.downReadSlow(nil, kindRead)
}

// DownReadCtx takes s for reading, or returns ctx.Err() if ctx is done
// before s could be granted, leaving s as it was and nothing queued. If s
// can be taken at once it is, even if ctx is already done. If ctx ends just
// as s is granted, the grant wins: DownReadCtx returns nil and s is held.
func (s *Sem) DownReadCtx(ctx context.Context) error {
	if s.state.Add(readerBias)&readFailMask == 0 {
		return nil
	}
	return s.downReadSlow(ctx, kindRead)
}

// TryDownRead takes s for reading if that is possible without waiting: no
// writer holds s and nobody is queued. It reports whether it did.
func (s *Sem) TryDownRead() bool {
	for {
		c := s.state.Load()
		if c&readFailMask != 0 {
			return false
		}
		if s.state.CompareAndSwap(c, c+readerBias) {
			return true
		}
	}
}

// UpRead releases s taken for reading. It panics if s is not read-held.
func (s *Sem) UpRead() {
	// Slow if waiters are queued, or if the count went negative (misuse).
	if c := s.state.Add(-readerBias); uint64(c)&upReadSlowMask != 0 {
		s.upReadSlow(c)
	}
}

// upReadSlow is UpRead with waiters queued, or misuse. It is kept out of
// line so that UpRead inlines.
//
//go:noinline
func (s *Sem) upReadSlow(c int64) {
	if c < 0 {
		s.state.Add(readerBias)
		panic("rwsem: up_read of unheld semaphore")
	}
	if c&lockMask == 0 {
		s.wake()
	}
}

// DownWrite takes s for writing, waiting as long as it takes.
func (s *Sem) DownWrite() {
	if s.state.CompareAndSwap(0, writerLocked) {
		return
	}
	_ = s.downWriteSlow(nil)
}

// DownWriteCtx takes s for writing, or returns ctx.Err() if ctx is done
// before s could be granted, leaving s as it was and nothing queued. If s
// can be taken at once it is, even if ctx is already done. If ctx ends just
// as s is granted, the grant wins: DownWriteCtx returns nil and s is held.
func (s *Sem) DownWriteCtx(ctx context.Context) error {
	if s.state.CompareAndSwap(0, writerLocked) {
		return nil
	}
	return s.downWriteSlow(ctx)
}

// TryDownWrite takes s for writing if nobody holds it and HANDOFF does not
// reserve it for a waiter (so it may take s ahead of queued waiters, like a
// stealing writer). It reports whether it did.
func (s *Sem) TryDownWrite() bool {
	return s.tryStealWrite()
}

// tryStealWrite takes s for writing if s is free and not reserved.
func (s *Sem) tryStealWrite() bool {
	for {
		c := s.state.Load()
		if c&(lockMask|flagHandoff) != 0 {
			return false
		}
		if s.state.CompareAndSwap(c, c|writerLocked) {
			return true
		}
	}
}

// UpWrite releases s taken for writing. It panics if s is not write-held.
func (s *Sem) UpWrite() {
	if !s.state.CompareAndSwap(writerLocked, 0) {
		s.upWriteSlow()
	}
}

// upWriteSlow is UpWrite with waiters queued, readers testing the state
// word, or misuse.
func (s *Sem) upWriteSlow() {
	old := s.state.Add(-writerLocked) + writerLocked
	if old&writerLocked == 0 {
		s.state.Add(writerLocked)
		panic("rwsem: up_write of unheld semaphore")
	}
	if old&flagWaiters != 0 {
		s.wake()
	}
}

// DowngradeWrite turns the write lock the caller holds into a read lock,
// atomically: no writer can take s in between. Readers queued at the head
// are granted with it. It panics if s is not write-held.
func (s *Sem) DowngradeWrite() {
	if !s.state.CompareAndSwap(writerLocked, readerBias) {
		s.downgradeSlow()
	}
}

// downgradeSlow is DowngradeWrite with waiters queued, readers testing the
// state word, or misuse.
func (s *Sem) downgradeSlow() {
	old := s.state.Add(readerBias-writerLocked) - readerBias + writerLocked
	if old&writerLocked == 0 {
		s.state.Add(writerLocked - readerBias)
		panic("rwsem: downgrade_write of unheld semaphore")
	}
	if old&flagWaiters != 0 {
		s.wake()
	}
}

// WaitForRelease waits until the writer holding s, if any, releases it,
// without taking s: it is DownRead followed at once by UpRead, except that
// the caller never holds s, so it cannot delay a writer by being preempted
// inside. It returns nil at once if no writer holds s and nobody is queued;
// otherwise it queues like a reader and returns nil when a reader in its
// place would have been granted s. Only "a writer finished" is promised:
// another writer may hold s when it returns. It returns ctx.Err() if ctx is
// done first, with nothing left queued. WaitForRelease waiters never count
// as readers and never hold up anyone behind them.
func (s *Sem) WaitForRelease(ctx context.Context) error {
	if s.state.Load()&readFailMask == 0 {
		return nil
	}
	return s.waitForReleaseSlow(ctx)
}
