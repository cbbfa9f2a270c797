package rwsem

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSequential(t *testing.T) {
	type op struct {
		name string
		do   func(s *Sem) bool
		want bool
	}
	down := func(f func(*Sem)) func(*Sem) bool { return func(s *Sem) bool { f(s); return true } }
	tests := []struct {
		name string
		ops  []op
		end  int64
	}{
		{"read twice", []op{
			{"DownRead", down((*Sem).DownRead), true},
			{"TryDownRead", (*Sem).TryDownRead, true},
			{"TryDownWrite", (*Sem).TryDownWrite, false},
			{"UpRead", down((*Sem).UpRead), true},
			{"UpRead", down((*Sem).UpRead), true},
		}, 0},
		{"write excludes all", []op{
			{"DownWrite", down((*Sem).DownWrite), true},
			{"TryDownRead", (*Sem).TryDownRead, false},
			{"TryDownWrite", (*Sem).TryDownWrite, false},
			{"UpWrite", down((*Sem).UpWrite), true},
			{"TryDownWrite", (*Sem).TryDownWrite, true},
			{"UpWrite", down((*Sem).UpWrite), true},
		}, 0},
		{"downgrade", []op{
			{"DownWrite", down((*Sem).DownWrite), true},
			{"DowngradeWrite", down((*Sem).DowngradeWrite), true},
			{"TryDownRead", (*Sem).TryDownRead, true},
			{"TryDownWrite", (*Sem).TryDownWrite, false},
			{"UpRead", down((*Sem).UpRead), true},
		}, readerBias},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			for i, o := range tt.ops {
				if got := o.do(&s); got != o.want {
					t.Fatalf("op %d %s = %v, want %v (%v)", i, o.name, got, o.want, &s)
				}
			}
			if c := s.state.Load(); c != tt.end {
				t.Fatalf("end state %#x, want %#x", c, tt.end)
			}
		})
	}
}

func TestMisusePanics(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*Sem)
		do    func(*Sem)
		want  string
	}{
		{"UpRead unheld", func(*Sem) {}, (*Sem).UpRead, "rwsem: up_read of unheld semaphore"},
		{"UpWrite unheld", func(*Sem) {}, (*Sem).UpWrite, "rwsem: up_write of unheld semaphore"},
		{"UpWrite read-held", (*Sem).DownRead, (*Sem).UpWrite, "rwsem: up_write of unheld semaphore"},
		{"DowngradeWrite unheld", func(*Sem) {}, (*Sem).DowngradeWrite, "rwsem: downgrade_write of unheld semaphore"},
		{"DowngradeWrite read-held", (*Sem).DownRead, (*Sem).DowngradeWrite, "rwsem: downgrade_write of unheld semaphore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			tt.setup(&s)
			before := s.state.Load()
			func() {
				defer func() {
					r := recover()
					if msg, _ := r.(string); !strings.HasPrefix(msg, tt.want) {
						t.Fatalf("panic %v, want %q", r, tt.want)
					}
				}()
				tt.do(&s)
			}()
			if after := s.state.Load(); after != before {
				t.Fatalf("misuse changed the state word: %#x -> %#x", before, after)
			}
		})
	}
}

// TestCtxFailureLeavesNothing: a Ctx acquisition that fails leaves the
// state word as it was and nothing queued.
func TestCtxFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name string
		hold func(*Sem)
		try  func(*Sem, context.Context) error
	}{
		{"read vs writer", (*Sem).DownWrite, (*Sem).DownReadCtx},
		{"write vs writer", (*Sem).DownWrite, (*Sem).DownWriteCtx},
		{"write vs reader", (*Sem).DownRead, (*Sem).DownWriteCtx},
		{"release vs writer", (*Sem).DownWrite, (*Sem).WaitForRelease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			tt.hold(&s)
			before := s.state.Load()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := tt.try(&s, ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			if after := s.state.Load(); after != before || s.queueLen() != 0 {
				t.Fatalf("failed acquisition left %v (state %#x, was %#x)", &s, after, before)
			}
		})
	}
}

func TestWaitForReleaseFreeReturnsAtOnce(t *testing.T) {
	var s Sem
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WaitForRelease(ctx); err != nil {
		t.Fatalf("WaitForRelease on a free semaphore: %v", err)
	}
	s.DownRead()
	if err := s.WaitForRelease(ctx); err != nil {
		t.Fatalf("WaitForRelease on a read-held semaphore: %v", err)
	}
	s.UpRead()
	checkIdle(t, &s)
}

// TestDowngradeGrantsQueuedReaders: readers queued behind a writer get in
// when it downgrades; a writer behind them waits for all readers.
func TestDowngradeGrantsQueuedReaders(t *testing.T) {
	var s Sem
	enq := withEnqueueHook(&s)
	s.DownWrite()
	got := make(chan string, 3)
	go func() { s.DownRead(); got <- "r1" }()
	recv(t, enq, "r1 queued")
	go func() { s.DownWrite(); got <- "w" }()
	recv(t, enq, "w queued")
	go func() { s.DownRead(); got <- "r2" }()
	recv(t, enq, "r2 queued")
	s.DowngradeWrite()
	for range 2 {
		if g := recv(t, got, "a reader"); g == "w" {
			t.Fatalf("writer got in while readers hold: %v", &s)
		}
	}
	s.UpRead()
	s.UpRead()
	s.UpRead()
	if g := recv(t, got, "the writer"); g != "w" {
		t.Fatalf("got %s", g)
	}
	s.UpWrite()
	checkIdle(t, &s)
}

// TestHandoffSetForPassedOverHead: a head waiter passed over after
// waitLimit reserves the semaphore; stealing stops; the grant clears it.
func TestHandoffSetForPassedOverHead(t *testing.T) {
	defer func(d time.Duration) { waitLimit = d }(waitLimit)
	waitLimit = 0
	var s Sem
	enq := withEnqueueHook(&s)
	s.DownWrite()
	done := make(chan error, 1)
	go func() { done <- s.DownReadCtx(ctxDeadline(t)) }()
	recv(t, enq, "reader queued")
	// A waker that finds the semaphore held by a writer (as after a steal).
	s.wake()
	if s.state.Load()&flagHandoff == 0 {
		t.Fatalf("HANDOFF not set for a head passed over after the wait limit: %v", &s)
	}
	if s.TryDownRead() {
		t.Fatalf("TryDownRead succeeded past HANDOFF")
	}
	s.UpWrite()
	if s.TryDownWrite() {
		t.Fatalf("TryDownWrite stole the semaphore reserved for the head: %v", &s)
	}
	if err := recv(t, done, "the reader"); err != nil {
		t.Fatal(err)
	}
	if s.state.Load() != readerBias {
		t.Fatalf("after the grant: %v", &s)
	}
	s.UpRead()
	checkIdle(t, &s)
}

// TestWriterStealsWhileWokenWriterWakes: a queued writer is woken, not
// granted; until it runs, s is free with WAITERS set and a running writer
// may steal it. The woken writer finds s taken, sleeps again, still at the
// head, and is woken again by the thief's release.
func TestWriterStealsWhileWokenWriterWakes(t *testing.T) {
	var s Sem
	enq := make(chan *waiter, 8)
	stole := make(chan struct{})
	armed := true // touched only by the test goroutine (the wakers here)
	s.hooks = &testHooks{
		enqueued: func(w *waiter) { enq <- w },
		beforeWake: func() {
			if !armed {
				return
			}
			armed = false
			// The writer's wakeup is collected, not yet posted: s is free.
			if c := s.state.Load(); c != flagWaiters {
				t.Errorf("while the woken writer wakes: %#x, want WAITERS alone", c)
			}
			if !s.TryDownWrite() {
				t.Errorf("TryDownWrite could not steal a free s: %v", &s)
			}
			close(stole)
		},
	}
	s.DownWrite()
	wDone := make(chan error, 1)
	go func() { wDone <- s.DownWriteCtx(ctxDeadline(t)) }()
	recv(t, enq, "the writer to queue")
	s.UpWrite()
	recv(t, stole, "the steal")
	select {
	case err := <-wDone:
		t.Fatalf("the woken writer returned (%v) while the thief holds s", err)
	case <-time.After(10 * time.Millisecond):
	}
	if c := s.state.Load(); c&writerLocked == 0 || s.queueLen() != 1 {
		t.Fatalf("after the steal: %v, want the thief holding and the writer queued", &s)
	}
	s.UpWrite()
	if err := recv(t, wDone, "the writer, woken again by the thief's release"); err != nil {
		t.Fatal(err)
	}
	if c := s.state.Load(); c != writerLocked {
		t.Fatalf("after the writer took s: %v", &s)
	}
	s.UpWrite()
	checkIdle(t, &s)
}

// TestWokenWriterCancelledPassesItOn: a writer woken to take a free s gives
// up before it runs. It consumes its wakeup before its record is freed
// (R2), and wakes those behind it: a reader queued behind it gets s.
func TestWokenWriterCancelledPassesItOn(t *testing.T) {
	var s Sem
	fl := &freeList{t: t}
	enq := make(chan *waiter, 8)
	cancelling := make(chan struct{}, 1)
	ctxW, cancelW := context.WithCancel(context.Background())
	defer cancelW()
	armed := true // touched only by the test goroutine (UpWrite's waker)
	s.hooks = &testHooks{
		getRecord:              fl.get,
		putRecord:              fl.put,
		enqueued:               func(w *waiter) { enq <- w },
		grantedWhileCancelling: func() { cancelling <- struct{}{} },
		beforeWake: func() {
			if !armed {
				return
			}
			armed = false
			// The writer is woken, its wakeup not yet posted. It gives up.
			cancelW()
			recv(t, cancelling, "the woken writer to find its wakeup in flight")
		},
	}
	s.DownWrite()
	wDone := make(chan error, 1)
	go func() { wDone <- s.DownWriteCtx(ctxW) }()
	recv(t, enq, "the writer to queue")
	rDone := make(chan error, 1)
	go func() { rDone <- s.DownReadCtx(ctxDeadline(t)) }()
	recv(t, enq, "the reader to queue behind it")
	s.UpWrite()
	if err := recv(t, wDone, "the cancelled writer"); !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled writer returned %v, want context.Canceled", err)
	}
	if err := recv(t, rDone, "the reader behind the cancelled writer"); err != nil {
		t.Fatalf("the reader behind a woken writer that gave up was not let in: %v (%v)", err, &s)
	}
	s.UpRead()
	checkIdle(t, &s)
}

// TestReaderQueuesBehindWaitingWriter: readers do not steal. A reader whose
// fast path fails because a writer waits queues behind it even though s is
// only read-held, so that a stream of readers cannot keep the reader count
// above zero and the writer from being woken.
func TestReaderQueuesBehindWaitingWriter(t *testing.T) {
	var s Sem
	enq := withEnqueueHook(&s)
	s.DownRead()
	wDone := make(chan error, 1)
	go func() { wDone <- s.DownWriteCtx(ctxDeadline(t)) }()
	recv(t, enq, "the writer to queue")
	rDone := make(chan error, 1)
	go func() { rDone <- s.DownReadCtx(ctxDeadline(t)) }()
	recv(t, enq, "the second reader to queue behind the writer")
	s.UpRead()
	if err := recv(t, wDone, "the writer"); err != nil {
		t.Fatal(err)
	}
	s.UpWrite()
	if err := recv(t, rDone, "the reader behind the writer"); err != nil {
		t.Fatal(err)
	}
	s.UpRead()
	checkIdle(t, &s)
}
