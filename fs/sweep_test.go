package fs

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
)

func TestSweepIntervalFollowsNegativeTTL(t *testing.T) {
	for _, tt := range []struct {
		ttl, want time.Duration
	}{
		{-1, maxSweepInterval}, // caching off: only look at the TTL again
		{0, maxSweepInterval},
		{time.Millisecond, minSweepInterval}, // never a busy loop
		{time.Second, time.Second},
		{10 * time.Second, 10 * time.Second},
		{time.Hour, maxSweepInterval},
	} {
		if got := sweepInterval(tt.ttl); got != tt.want {
			t.Errorf("sweepInterval(%v) = %v, want %v", tt.ttl, got, tt.want)
		}
	}
}

// fakeClock is the namespace's clock and the sweeper's timer: the test
// moves the time and fires the timer.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time

	asked chan time.Duration    // each wait the sweeper starts
	fire  chan chan<- time.Time // the channel of that wait
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_000_000, 0), asked: make(chan time.Duration, 16), fire: make(chan chan<- time.Time, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.asked <- d
	c.fire <- ch
	return ch
}

// nextWait returns the next wait the sweeper starts and its channel.
func (c *fakeClock) nextWait(t *testing.T) (time.Duration, chan<- time.Time) {
	t.Helper()
	select {
	case d := <-c.asked:
		return d, <-c.fire
	case <-time.After(10 * time.Second):
		t.Fatal("the sweeper started no wait within 10s")
		return 0, nil
	}
}

// waitPending waits until nq holds n notices: push signals nq.wake.
func waitPending(t *testing.T, nq *NotifyQueue, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for nq.len() < n {
		select {
		case <-nq.wake:
		case <-deadline:
			t.Fatalf("notify queue holds %d notices, want %d", nq.len(), n)
		}
	}
}

// TestSweeperExpiresNegativesOnItsTimer: an expired miss nobody looks up
// again is dropped by the sweep when its timer fires, and becomes an entry
// notify for the kernel; a fresh one is kept; stop is bounded and
// idempotent.
func TestSweeperExpiresNegativesOnItsTimer(t *testing.T) {
	clk := newFakeClock()
	nq := NewNotifyQueue(0)
	nq.enable() // as Mount does
	const ttl = 5 * time.Second
	ns := dcache.New(dcache.Options{NegativeTTL: ttl, Now: clk.Now, Sink: nq})
	root := ns.Root()
	root.LockMu()
	root.AddNegativeLocked("gone")
	root.UnlockMu()

	w := startSweeper(ns, zap.NewNop(), clk.After)
	d, fire := clk.nextWait(t)
	if d != sweepInterval(ttl) {
		t.Fatalf("first wait %v, want %v", d, sweepInterval(ttl))
	}
	// Not yet expired: the sweep keeps it.
	fire <- clk.Now()
	d, fire = clk.nextWait(t)
	if w.sweeps.Load() != 1 || w.dropped.Load() != 0 || nq.len() != 0 {
		t.Fatalf("after a sweep before expiry: sweeps %d dropped %d notices %d, want 1 0 0",
			w.sweeps.Load(), w.dropped.Load(), nq.len())
	}
	root.LockMu()
	_, neg := root.ChildLocked("gone")
	root.UnlockMu()
	if !neg {
		t.Fatal("a fresh negative entry was swept")
	}

	clk.advance(ttl)
	root.LockMu()
	root.AddNegativeLocked("fresh") // cached now: expires one ttl later
	root.UnlockMu()
	fire <- clk.Now()
	_, fire = clk.nextWait(t) // the sweep is over
	if w.dropped.Load() != 1 || nq.len() != 1 {
		t.Fatalf("dropped %d, notices %d; want 1, 1", w.dropped.Load(), nq.len())
	}
	batch, _ := nq.take()
	if len(batch) != 1 || batch[0].kind != noticeEntry || batch[0].name != "gone" || batch[0].parent != root.Ino() {
		t.Fatalf("notices %+v, want one entry notice for gone", batch)
	}
	root.LockMu()
	_, goneNeg := root.ChildLocked("gone")
	_, freshNeg := root.ChildLocked("fresh")
	root.UnlockMu()
	if goneNeg || !freshNeg {
		t.Fatalf("after the sweep: gone cached %v, fresh cached %v; want false, true", goneNeg, freshNeg)
	}

	// The TTL is read again before every wait (a reload changes it).
	ns.SetNegativeTTL(30 * time.Second)
	fire <- clk.Now()
	if d, _ = clk.nextWait(t); d != 30*time.Second {
		t.Fatalf("wait after the TTL changed: %v, want 30s", d)
	}

	stopped := make(chan struct{})
	go func() {
		w.stop()
		w.stop() // idempotent
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return within 10s while the sweeper waited")
	}
	select {
	case <-w.done:
	default:
		t.Fatal("stop returned before the sweeper did")
	}
	var nilSweeper *sweeper
	nilSweeper.stop() // a server that was never mounted
}

// TestSweeperIdleWithoutNegativeCaching: with negative caching off the
// sweeper never walks the tree, it only waits to look at the TTL again.
func TestSweeperIdleWithoutNegativeCaching(t *testing.T) {
	clk := newFakeClock()
	ns := dcache.New(dcache.Options{NegativeTTL: -1, Now: clk.Now})
	w := startSweeper(ns, zap.NewNop(), clk.After)
	defer w.stop()
	for i := 0; i < 3; i++ {
		d, fire := clk.nextWait(t)
		if d != maxSweepInterval {
			t.Fatalf("wait %v, want %v", d, maxSweepInterval)
		}
		fire <- clk.Now()
	}
	clk.nextWait(t) // the fourth wait began: the third firing was handled
	if n := w.sweeps.Load(); n != 0 {
		t.Fatalf("%d sweeps with negative caching off, want 0", n)
	}
}

// TestSweeperWithRealTimer: the default timer, a real TTL: the expired
// miss is dropped without anyone looking it up.
func TestSweeperWithRealTimer(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	ns := dcache.New(dcache.Options{NegativeTTL: time.Millisecond, Sink: nq})
	root := ns.Root()
	root.LockMu()
	root.AddNegativeLocked("x")
	root.UnlockMu()
	w := startSweeper(ns, zap.NewNop(), nil)
	defer w.stop()
	waitPending(t, nq, 1) // within about minSweepInterval
	w.stop()
	if w.dropped.Load() != 1 {
		t.Fatalf("dropped %d, want 1", w.dropped.Load())
	}
}
