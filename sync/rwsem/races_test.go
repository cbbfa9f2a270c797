package rwsem

import (
	"context"
	"sync/atomic"
	"testing"
)

// TestR1WakerDoesNotTouchGrantedRecord reproduces the rwsem-scale race of
// 2004 (seeds/000, R1 of DESIGN.md): a waker grants a batch of readers A
// and B and wakes A; before it gets to B, A returns, releases, and starts a
// new wait that reuses A's record. A waker that still walks the records
// (here: follows A's link to B) finds a recycled record and loses B.
// The fix keeps only the wake handles after the lock is dropped.
func TestR1WakerDoesNotTouchGrantedRecord(t *testing.T) {
	var s Sem
	fl := &freeList{t: t}
	enq := make(chan *waiter, 8)
	aReturned := make(chan struct{})
	aGo := make(chan struct{})
	aDone := make(chan error, 1)
	bDone := make(chan struct{})
	var recA *waiter // set before the waker can run
	posts := 0       // touched only by the waker, the test goroutine (UpWrite)
	s.hooks = &testHooks{
		getRecord: fl.get,
		putRecord: fl.put,
		enqueued:  func(w *waiter) { enq <- w },
		posted: func() {
			posts++
			if posts != 1 {
				return
			}
			// A's wakeup is posted, B's is not yet. Let A run: it
			// returns, releases its read lock and waits again, for
			// write, on its recycled record.
			recv(t, aReturned, "A to return from DownRead")
			close(aGo)
			if w := recv(t, enq, "A's second wait to queue"); w != recA {
				t.Errorf("A's second wait did not reuse A's record")
			}
		},
	}
	s.DownWrite()
	go func() {
		s.DownRead()
		close(aReturned)
		<-aGo
		s.UpRead()
		aDone <- s.DownWriteCtx(ctxDeadline(t))
	}()
	recA = recv(t, enq, "A to queue")
	go func() { s.DownRead(); close(bDone) }()
	recv(t, enq, "B to queue")

	s.UpWrite() // grants A and B in one reader phase

	recv(t, bDone, "B's wakeup: the waker must not follow a record its owner has reused (R1)")
	s.UpRead() // B's read lock; A's write wait is granted
	if err := recv(t, aDone, "A's write lock"); err != nil {
		t.Fatalf("A's DownWriteCtx: %v", err)
	}
	s.UpWrite()
	checkIdle(t, &s)
}

// TestR2CancelledWaiterDoesNotReceiveStaleWakeup reproduces the futex
// lockless-wake race (seeds/001, R2): a waiter gives up just as it is
// granted; the wakeup is still in flight when it returns; it waits again on
// the same record and must not take the old wakeup for its new wait. The
// fix: a granted waiter that gives up consumes its wakeup first.
func TestR2CancelledWaiterDoesNotReceiveStaleWakeup(t *testing.T) {
	var s Sem
	fl := &freeList{t: t}
	enq := make(chan *waiter, 8)
	granted := make(chan struct{}, 1)
	var armed, stale atomic.Bool
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	s.hooks = &testHooks{
		getRecord: fl.get,
		putRecord: fl.put,
		enqueued: func(w *waiter) {
			if w.tok.Pending() {
				stale.Store(true)
			}
			enq <- w
		},
		grantedWhileCancelling: func() { granted <- struct{}{} },
		beforeWake: func() {
			if !armed.CompareAndSwap(true, false) {
				return
			}
			// The reader is granted; its wakeup is not yet posted.
			// Its context ends now, and it finds itself granted.
			cancel1()
			recv(t, granted, "the reader to find itself granted while cancelling")
		},
	}
	s.DownWrite()
	first := make(chan error, 1)
	go func() { first <- s.DownReadCtx(ctx1) }()
	rec := recv(t, enq, "the first wait to queue")
	armed.Store(true)
	s.UpWrite()
	if err := recv(t, first, "the first wait to return"); err != nil {
		t.Fatalf("granted wait returned %v; the grant must win", err)
	}
	s.UpRead()

	// Wait again, on the same record, while a writer holds s.
	s.DownWrite()
	second := make(chan error, 1)
	go func() { second <- s.DownReadCtx(ctxDeadline(t)) }()
	if got := recv(t, enq, "the second wait to queue"); got != rec {
		t.Fatalf("the second wait did not reuse the record of the first")
	}
	if stale.Load() {
		t.Fatalf("the second wait's record already holds the wakeup of the first wait (R2): it will return while a writer holds the semaphore")
	}
	select {
	case err := <-second:
		t.Fatalf("the second wait returned (%v) while a writer holds the semaphore", err)
	default:
	}
	s.UpWrite()
	if err := recv(t, second, "the second wait to be granted"); err != nil {
		t.Fatal(err)
	}
	s.UpRead()
	checkIdle(t, &s)
}

// TestR3WriterBehindWaitForReleaseIsWoken reproduces the review of
// rwsem_wait_killable (seeds/002, R3): a writer releases; the head waiter
// only waits for that release and takes nothing; the writer queued behind
// it must be woken on the now free semaphore, and the release waiter must
// not count as a reader.
func TestR3WriterBehindWaitForReleaseIsWoken(t *testing.T) {
	var s Sem
	enq := withEnqueueHook(&s)
	s.DownWrite()
	rel := make(chan error, 1)
	go func() { rel <- s.WaitForRelease(ctxDeadline(t)) }()
	recv(t, enq, "the WaitForRelease waiter to queue")
	wr := make(chan error, 1)
	go func() { wr <- s.DownWriteCtx(ctxDeadline(t)) }()
	recv(t, enq, "the writer to queue")

	s.UpWrite()

	if err := recv(t, rel, "WaitForRelease to return"); err != nil {
		t.Fatalf("WaitForRelease: %v", err)
	}
	if err := recv(t, wr, "the writer queued behind the WaitForRelease waiter (R3)"); err != nil {
		t.Fatalf("the writer queued behind a WaitForRelease waiter was left asleep on a free semaphore (R3): %v (%v)", err, &s)
	}
	if c := s.state.Load(); c != writerLocked {
		t.Fatalf("after the writer's grant: %v (a WaitForRelease waiter counted as a reader?)", &s)
	}
	s.UpWrite()
	checkIdle(t, &s)
}
