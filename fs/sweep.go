package fs

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
)

// The sweep of expired negative entries.
//
// A miss is cached in dcache as a negative entry for the negative timeout.
// An expired entry is dropped lazily, by the next lookup that meets it; a
// name nobody looks up again would keep its entry (up to dcache's bound per
// directory) and its EXPIRE event would never be raised, so the kernel
// would never be told. The sweeper is the periodic call that
// dcache.Namespace.ExpireNegatives asks for: while the server is mounted it
// drops every expired entry once per interval, and the EXPIRE events go
// through the NotifyQueue like every other change not made through FUSE
// (an entry notify from the worker, never from here).
//
// Bounds. The interval follows the namespace's negative TTL, read again
// before every wait, so a reload that changes the TTL is followed: once
// per TTL, so that an expired entry lives at most about two TTLs, but
// never more often than minSweepInterval (a sweep walks the whole tree,
// taking each directory's mu in turn, and must not become a busy loop
// under a tiny TTL) and at least every maxSweepInterval (so that a TTL
// turned on by a reload is noticed). With negative caching off there is
// nothing to drop and the sweeper only wakes to look at the TTL again.
// One sweep takes no sem and no lock across directories; stop waits for
// at most the sweep in progress.

// Bounds of the sweep interval.
const (
	minSweepInterval = time.Second
	maxSweepInterval = time.Minute
)

// sweepInterval is the wait before the next sweep when misses are cached
// for ttl (<= 0: not cached).
func sweepInterval(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return maxSweepInterval
	}
	return min(max(ttl, minSweepInterval), maxSweepInterval)
}

// sweeper runs the periodic sweep of one namespace; see above. Make it
// with startSweeper; stop it with stop.
type sweeper struct {
	// Immutable after startSweeper:
	ns  *dcache.Namespace
	log *zap.Logger
	// after is time.After; tests stand in a clock they drive.
	after func(time.Duration) <-chan time.Time

	stopOnce sync.Once
	stopc    chan struct{} // closed by stop
	done     chan struct{} // closed when run has returned

	sweeps  atomic.Uint64 // sweeps made
	dropped atomic.Uint64 // negative entries they dropped
}

// startSweeper starts sweeping ns; after nil means time.After.
func startSweeper(ns *dcache.Namespace, log *zap.Logger, after func(time.Duration) <-chan time.Time) *sweeper {
	if after == nil {
		after = time.After
	}
	w := &sweeper{ns: ns, log: log, after: after, stopc: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *sweeper) run() {
	defer close(w.done)
	for {
		select {
		case <-w.after(sweepInterval(w.ns.NegativeTTL())):
		case <-w.stopc:
			return
		}
		select {
		case <-w.stopc:
			return // stop and the timer at once: stop wins
		default:
		}
		if w.ns.NegativeTTL() > 0 {
			w.sweep()
		}
	}
}

// sweep drops the expired negative entries once and returns how many.
// Preconditions: no dcache lock held.
func (w *sweeper) sweep() int {
	n := w.ns.ExpireNegatives()
	w.sweeps.Add(1)
	w.dropped.Add(uint64(n))
	if n > 0 {
		w.log.Debug("expired negative entries swept", zap.Int("dropped", n))
	}
	return n
}

// stop ends the sweeper and waits for the sweep in progress, if any. It is
// idempotent, and a no-op on a nil sweeper (a server never mounted).
func (w *sweeper) stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() { close(w.stopc) })
	<-w.done
}
