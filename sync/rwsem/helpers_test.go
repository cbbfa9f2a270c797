package rwsem

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/devfsd/devfsd/sync/waitq"
)

// deadline bounds every wait in these tests for something that must happen.
// Events waited for take microseconds; the bound only turns a bug into a
// clean failure instead of a hang.
const deadline = 3 * time.Second

// recv waits for a value from ch, failing the test after deadline.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(deadline):
		t.Fatalf("timed out after %v waiting for %s", deadline, what)
		panic("unreachable")
	}
}

// freeList is a LIFO record allocator, so that a test knows which record
// the next wait gets. It flags records freed with a wakeup pending.
type freeList struct {
	t    *testing.T
	mu   sync.Mutex
	recs []*waiter
}

func (f *freeList) get() *waiter {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.recs); n > 0 {
		w := f.recs[n-1]
		f.recs = f.recs[:n-1]
		return w
	}
	return &waiter{tok: waitq.NewToken()}
}

func (f *freeList) put(w *waiter) {
	if w.tok.Pending() {
		f.t.Errorf("record %p freed with a wakeup pending", w)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = append(f.recs, w)
}

// queueLen returns the number of queued waiters.
func (s *Sem) queueLen() int {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	n := 0
	for w := s.head; w != nil; w = w.next {
		n++
	}
	return n
}

// String dumps the state word for failure messages.
func (s *Sem) String() string {
	c := s.state.Load()
	return fmt.Sprintf("readers=%d writer=%v waiters=%v handoff=%v queued=%d",
		c>>readerShift, c&writerLocked != 0, c&flagWaiters != 0, c&flagHandoff != 0, s.queueLen())
}

// checkIdle fails the test unless s is free with nobody queued.
func checkIdle(t *testing.T, s *Sem) {
	t.Helper()
	if c := s.state.Load(); c != 0 || s.queueLen() != 0 {
		t.Fatalf("semaphore not idle at the end: %v", s)
	}
}

// withEnqueueHook installs hooks that report each queued record on the
// returned channel.
func withEnqueueHook(s *Sem) <-chan *waiter {
	enq := make(chan *waiter, 64)
	s.hooks = &testHooks{enqueued: func(w *waiter) { enq <- w }}
	return enq
}

// ctxDeadline returns a context that ends after deadline.
func ctxDeadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}
