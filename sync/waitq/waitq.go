// Package waitq is a wait queue: the Go form of the kernel's
// wait_queue_head_t, for goroutines that wait for a condition guarded by a
// lock of their own.
//
// # Waits
//
// A wait is one record, a *Waiter, made by Prepare and finished by exactly
// one of Wait or Abort. Prepare enqueues the record at once, so a waiter
// calls it while still holding the lock that guards its condition, checks
// the condition one last time, drops its lock, and sleeps in Wait: a wakeup
// issued between the check and the sleep is not lost, because it is
// recorded in the Waiter. The queue's own lock is a leaf: Prepare, Abort and
// the Wake calls may be made while holding any other lock.
//
//	mu.Lock()
//	for !cond() {
//		w := q.Prepare(false)
//		mu.Unlock()
//		err := w.Wait(ctx)
//		mu.Lock()
//		if err != nil { ...; return err }
//	}
//
// Waiters are exclusive or not, as in the kernel: a non-exclusive waiter is
// queued at the head and every wake call wakes it; an exclusive waiter is
// queued at the tail, in FIFO order, and WakeN(n) wakes at most n of them.
// So WakeN wakes all the non-exclusive waiters at the head of the queue
// plus up to n exclusive ones; WakeOne is WakeN(1); WakeAll wakes everyone.
//
// # Wakeups
//
// A wake call takes the queue lock, unlinks the waiters it wakes, marks
// each record woken (the last write any waker makes to it) and collects its
// Token, the record's wake handle, into a WakeList; it drops the lock and
// only then posts the Tokens. A waker therefore never touches a record
// after granting it (race R1 of DESIGN.md), and never wakes anything it did
// not take off the queue under the lock (no lockless wake, race R2).
//
// # Cancellation racing a wakeup
//
// Wait returns nil when it was woken and ctx.Err() when ctx was done
// first, with the record dequeued. When both happen at once the queue lock
// decides: if the record was still queued, Wait dequeues it and returns
// ctx.Err() — no wakeup was spent on it. If a waker had already dequeued
// it, the wakeup is on its way: Wait consumes it and returns nil. It
// reports success rather than dropping a wakeup that an exclusive wake
// spent on it, so a caller must treat a nil return as a wakeup even if its
// ctx is done (recheck the condition, or pass the wakeup on with WakeOne).
// No wakeup is ever lost, and none is ever delivered to a later wait:
// records are never reused (one wait, one record), and a record's wakeup is
// always consumed before Wait or Abort returns.
//
// Abort finishes a prepared wait the caller decided not to sleep on. If a
// wakeup had already been granted to it, Abort consumes it and, for an
// exclusive waiter, passes it on to the next exclusive waiter (WakeOne), so
// that the wakeup is not lost; it reports whether that happened.
//
// # Model
//
// test/model/lookup.pml models Prepare, Wait (with the race between
// cancellation and a wakeup), finish and WakeAll as package lookup uses
// them, as inlines of the same names; the Token rules (one post per grant,
// consumed before reuse) are checked in test/model/rwsem.pml, whose wait
// list uses them. See docs/model.md.
//
// # Memory model
//
// A wake call that wakes a Waiter is synchronized before the Wait (or
// Abort) that observes the wakeup returns. Everything the waker did before
// the wake call is therefore visible to the woken waiter.
//
// Misuse — finishing a record twice, a negative wake count — panics with a
// message starting "waitq: ".
package waitq

import (
	"context"
	"sync"
)

// Queue is a wait queue. The zero value is an empty queue ready to use. A
// Queue must not be copied after first use.
//
// Lock order: Queue.mu is a leaf; no other lock is taken under it.
type Queue struct {
	mu sync.Mutex
	// head and tail link the queued Waiters: non-exclusive ones first
	// (newest first), then exclusive ones in FIFO order. Guarded by mu.
	head, tail *Waiter
	// n is the number of queued Waiters. Guarded by mu.
	n int
}

// Waiter states. A record moves queued → woken → done or queued → done and
// never back.
const (
	stateQueued uint8 = iota // on the queue; a waker may grant it
	stateWoken               // dequeued by a waker, its Token posted or about to be
	stateDone                // finished by Wait or Abort
)

// A Waiter is the record of one wait on a Queue, from Prepare to its Wait
// or Abort.
type Waiter struct {
	// q and exclusive are set by Prepare and never change.
	q         *Queue
	exclusive bool
	// tok is the record's wake handle: posted once by the waker that
	// granted the record, consumed once by Wait or Abort.
	tok Token

	// prev and next link the record into q while it is queued. Guarded by
	// q.mu.
	prev, next *Waiter
	// state is one of the state constants. Guarded by q.mu.
	state uint8
}

// Prepare enqueues a new wait record and returns it. The caller must finish
// it with exactly one call of Wait or Abort. Prepare may be called while
// holding the lock that guards the awaited condition.
func (q *Queue) Prepare(exclusive bool) *Waiter {
	w := &Waiter{q: q, exclusive: exclusive, tok: NewToken()}
	q.mu.Lock()
	if exclusive {
		w.prev = q.tail
		if q.tail != nil {
			q.tail.next = w
		} else {
			q.head = w
		}
		q.tail = w
	} else {
		w.next = q.head
		if q.head != nil {
			q.head.prev = w
		} else {
			q.tail = w
		}
		q.head = w
	}
	q.n++
	q.mu.Unlock()
	return w
}

// removeLocked unlinks w. Preconditions: q.mu held; w queued.
func (q *Queue) removeLocked(w *Waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.n--
}

// Wait blocks until w is woken, returning nil, or until ctx is done,
// returning ctx.Err() with w dequeued. If a wakeup races the end of ctx,
// the one that reaches the queue lock first wins; a wakeup that won is
// consumed and reported as nil (see the package doc). Wait panics if w was
// already finished.
func (w *Waiter) Wait(ctx context.Context) error {
	select {
	case <-w.tok.C():
		w.finish()
		return nil
	case <-ctx.Done():
	}
	q := w.q
	q.mu.Lock()
	switch w.state {
	case stateQueued:
		q.removeLocked(w)
		w.state = stateDone
		q.mu.Unlock()
		return ctx.Err()
	case stateWoken:
		q.mu.Unlock()
		// Granted before we could give up: the waker is posting (or has
		// posted) our Token. Consume it so the wakeup is neither lost nor
		// left behind, and report it.
		w.tok.Consume()
		w.finish()
		return nil
	default:
		q.mu.Unlock()
		panic("waitq: Wait on a finished wait record")
	}
}

// finish marks a woken record done after its wakeup was consumed.
func (w *Waiter) finish() {
	q := w.q
	q.mu.Lock()
	if w.state != stateWoken {
		q.mu.Unlock()
		panic("waitq: wait record finished twice")
	}
	w.state = stateDone
	q.mu.Unlock()
}

// Abort finishes a prepared wait without sleeping on it. It returns false
// if w was still queued (it is now dequeued; no wakeup was spent on it) and
// true if a wakeup had already been granted to w; Abort then consumes it
// and, if w is exclusive, passes it on to the next waiter with WakeOne.
// Abort panics if w was already finished.
func (w *Waiter) Abort() bool {
	q := w.q
	q.mu.Lock()
	switch w.state {
	case stateQueued:
		q.removeLocked(w)
		w.state = stateDone
		q.mu.Unlock()
		return false
	case stateWoken:
		q.mu.Unlock()
		w.tok.Consume()
		w.finish()
		if w.exclusive {
			q.WakeOne()
		}
		return true
	default:
		q.mu.Unlock()
		panic("waitq: Abort of a finished wait record")
	}
}

// WakeOne wakes the non-exclusive waiters at the head of the queue and the
// first exclusive waiter. It returns the number of waiters woken.
func (q *Queue) WakeOne() int { return q.WakeN(1) }

// WakeAll wakes every queued waiter and returns how many there were.
func (q *Queue) WakeAll() int { return q.wake(-1) }

// WakeN wakes the non-exclusive waiters at the head of the queue plus up to
// n exclusive waiters, in queue order, and returns the number woken. WakeN(0)
// wakes only the non-exclusive waiters. A negative n panics.
func (q *Queue) WakeN(n int) int {
	if n < 0 {
		panic("waitq: negative wake count")
	}
	return q.wake(n)
}

// wake implements the wake calls; n < 0 means no limit on exclusive
// waiters.
func (q *Queue) wake(n int) int {
	var wl WakeList
	q.mu.Lock()
	woken := q.wakeLocked(n, &wl)
	q.mu.Unlock()
	wl.Wake()
	return woken
}

// wakeLocked grants up to n exclusive waiters (n < 0: all) and every
// non-exclusive waiter before the stopping point, collecting their Tokens
// into wl. Preconditions: q.mu held. Granting — unlinking the record and marking it
// woken — is the last write made to a record by a waker.
func (q *Queue) wakeLocked(n int, wl *WakeList) int {
	woken := 0
	for w := q.head; w != nil; {
		if w.exclusive {
			if n == 0 {
				break
			}
			if n > 0 {
				n--
			}
		}
		next := w.next
		q.removeLocked(w)
		wl.Add(w.tok)
		w.state = stateWoken
		woken++
		w = next
	}
	return woken
}

// Len returns the number of waiters queued and not yet woken.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
