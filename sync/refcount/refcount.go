// Package refcount is a sharded reference count with the semantics of
// Linux's percpu_ref: Get and Put are cheap while the count is alive, and
// the one moment the count must be exact — shutdown — is paid for once, by
// Kill.
//
// The daemon counts live FUSE requests with it, so that unmount and reload
// can refuse new requests (TryGet fails) and then wait for the running ones
// to drain (WaitZero).
//
// # Why sharded
//
// A reference count taken and dropped by every request is the hottest word
// in the daemon. One atomic integer makes every Get and Put pull its cache
// line from whichever core touched it last. Instead a Ref starts in sharded
// mode: a small array of counters, one per P (Go's stand-in for a CPU), each
// on its own cache line. Get adds one to the caller's shard, Put subtracts
// one from the caller's shard — possibly a different one, so a shard can go
// negative. Only the sum of the shards means anything, and nobody computes
// it while the count is alive: in sharded mode we do not try to detect zero,
// which is what makes Get and Put cheap.
//
// That only works because the user keeps track of one reference, the
// initial one that New returns the Ref with. The count cannot reach zero
// while the initial reference is held, so as long as we leave sharded mode
// before dropping it, nothing is missed. Kill does both: it switches the Ref
// to a single atomic count and then drops the initial reference.
//
// # Modes
//
//	sharded  Get, Put and TryGet update the caller's shard. central holds
//	         bias + 1 (the initial reference) and nobody touches it.
//	dying    Kill is switching. Shards already switched are poisoned; an
//	         update that lands on one is undone and goes to central (Get,
//	         Put) or fails (TryGet). Shards not yet switched still count.
//	         central holds bias + the true count, less what is still in the
//	         unswitched shards.
//	dead     Every shard is poisoned and its value moved into central, and
//	         bias is gone: central is the exact count. TryGet fails; Get
//	         (by someone already holding a reference) and Put use central,
//	         and the Put that takes it to zero wakes WaitZero.
//
// Only Kill changes mode (sharded → dying → dead, never back: a Ref is
// single-use; make a new one after a drain). A Ref is "killed" from the
// moment Kill is called.
//
// # The switch
//
// Linux updates a per-CPU counter with a CPU-local, non-atomic-across-CPUs
// add, and must therefore wait for an RCU grace period after flagging the
// ref dead: a CPU may have read "percpu mode" and not yet done its add. Go
// has no preempt-disabled sections to wait for, so we close that window
// instead of waiting it out. The mode check and the update are the same
// instruction: each shard is one atomic word, and being switched is a value
// of that word (poison, far below any count a shard can reach). Kill swaps
// poison into each shard and moves the value it took out into central. Every
// update of that shard is then ordered, in the shard's single modification
// order, either before the swap — and is in the value moved to central — or
// after it, and sees poison in the result of its own add, undoes the add
// (the shard stays poisoned: its value is never read again) and goes to
// central. No update is in flight across the switch, so there is no grace
// period, and Kill's confirmation is ready when Kill returns.
//
// While Kill is between shards, a Get may land in central and its Put in a
// shard not yet switched, so central may briefly hold less than the truth;
// that is why central carries a bias (1<<62) until every shard is moved, so
// that it cannot reach zero early. Kill removes the bias last.
//
// This is also why a shard update must be atomic (race R5 of DESIGN.md,
// from the 2014 percpu-refcount fix for __this_cpu_inc used from process and
// softirq context): a read-modify-write done as load and store loses any
// update made to the same shard between the two — by another goroutine on
// the same P after a preemption, by one that was migrated, or by Kill's
// swap — and a count that lost a Put never drains. Every shard update here
// is a single atomic add; the test hook and mutant in shardadd*.go and
// TestR5LostShardUpdate prove that the test notices when it is not.
//
// # Memory-model contract
//
//   - A Get, or a TryGet that returns true, takes one reference, and the
//     count cannot reach zero until a matching Put.
//   - Every Put happens before WaitZero returns nil: whatever a holder
//     wrote before its Put, the waiter can read after WaitZero.
//   - The channel Kill returns is closed once every shard is switched. A
//     TryGet that happens after it is closed (in particular, any TryGet that
//     starts after Kill returns) fails. A TryGet concurrent with Kill, not
//     ordered after the close, may still succeed; if it does, its reference
//     is counted like any other and WaitZero waits for its Put.
//   - After a TryGet fails, no reference was taken and none is owed.
//   - Get after Kill is allowed only to a caller that already holds a
//     reference (count > 0), as in Linux; so is a Get that may race with
//     Kill. A caller without a reference that may meet a killed Ref uses
//     TryGet.
//   - Count is exact once the Ref is dead (Kill has returned, or Count
//     observed it dead); before that it is a snapshot.
//
// # Misuse
//
// Kill twice, a Put that takes the exact (dead-mode) count below zero, and
// a Get on a dead count that already reached zero panic with a message
// starting "refcount:". A Put without a matching Get while the Ref is still
// sharded cannot be seen (shards go negative legitimately); it surfaces as a
// panic or an early zero after Kill.
//
// # Picking a shard
//
// Go gives no CPU id, so the hint is the P id, read with the runtime's
// procPin/procUnpin (by linkname; see shard.go). A P is run by one thread at
// a time and threads rarely change CPUs, so a P's shard stays in that core's
// cache. The hint only has to be cheap and sticky, not exact: the update is
// atomic whatever shard it lands on. A random shard would not be sticky:
// at GOMAXPROCS 2 every other update would pull the line from the other
// core, which costs more than one shared atomic.
//
// # Limits
//
// A shard's value drifts by one for every Get and Put that land on
// different Ps; it would take about 2^61 unbalanced pairs (centuries) to
// reach the poison range. The number of shards is fixed by New from
// GOMAXPROCS (rounded up to a power of two, at most maxShards); if
// GOMAXPROCS grows later, Ps share shards, which is correct, just slower.
package refcount

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

const (
	// bias keeps central far from zero while Kill is still moving shards
	// into it (mode dying). Added by New, removed by Kill.
	bias = int64(1) << 62

	// maxShards caps the shard array (128 bytes each).
	maxShards = 64
)

// Mode values, stored in Ref.mode.
const (
	modeSharded uint32 = iota // set by New
	modeDying                 // set by Kill before the first swap
	modeDead                  // set by Kill after the last swap and the bias removal
)

// Ref is a sharded reference count. Make one with New; the zero value is not
// usable. A Ref must not be copied after first use.
type Ref struct {
	// shards is allocated by New and never changes; each element is
	// updated only by atomic operations (see shard).
	shards []shard
	// mask is len(shards)-1; set by New, read-only after.
	mask int
	// hooks is nil except in tests (see testHooks); read by every shard
	// update, so it shares the read-only line of shards and mask.
	hooks *testHooks

	_ [cacheLine]byte // keep central off the line holding shards/mask

	// central is the count in dying and dead modes (see the mode table);
	// atomic. In sharded mode it holds bias+1 and is not touched.
	central atomic.Int64

	// mode is modeSharded, modeDying or modeDead. Written only by Kill
	// under mu; read atomically by anyone (Count).
	mode atomic.Uint32

	// mu serializes Kill against itself and against Count's snapshot, so
	// that Count never sees a half-switched Ref. It is never taken by Get,
	// TryGet or Put.
	mu sync.Mutex

	// confirmed is made by New and closed once by Kill, under mu, when
	// every shard is poisoned.
	confirmed chan struct{}

	// zero is made by New and closed once, by the atomic operation that
	// takes the dead-mode count from 1 to 0; released guards that once.
	zero     chan struct{}
	released atomic.Bool
}

// New returns a Ref in sharded mode holding one reference: the initial
// reference, which Kill drops (percpu_ref_init).
func New() *Ref {
	return newRef(runtime.GOMAXPROCS(0))
}

// newRef makes a Ref with at least n shards (rounded up to a power of two,
// capped at maxShards). Tests use n = 1 to put two goroutines on one shard.
func newRef(n int) *Ref {
	size := ShardCount(n)
	r := &Ref{
		shards:    make([]shard, size),
		mask:      size - 1,
		confirmed: make(chan struct{}),
		zero:      make(chan struct{}),
	}
	r.central.Store(bias + 1)
	return r
}

// Get takes a reference. Before Kill anyone may call it; after Kill only a
// caller that already holds a reference may (it cannot fail then, because
// the count is above zero).
func (r *Ref) Get() { r.getOn(r.shard()) }

// getOn is Get on shard s (tests pick the shard; Get picks the caller's).
// The fast path is one atomic add and a compare; the rest is in getSlow.
func (r *Ref) getOn(s *shard) {
	if r.add(s, 1) <= poisonFloor {
		r.getSlow(s)
	}
}

// getSlow: the shard is switched. Undo the add (the value is dead anyway)
// and count in central.
func (r *Ref) getSlow(s *shard) {
	s.n.Add(-1)
	if r.central.Add(1) == 1 {
		panic("refcount: Get on a killed count that already reached zero")
	}
}

// TryGet takes a reference unless it finds the Ref killed, and reports
// whether it did (percpu_ref_tryget_live). It always fails once Kill has
// returned; while Kill runs it may still succeed, and its reference then
// counts like any other (see the package doc).
func (r *Ref) TryGet() bool { return r.tryGetOn(r.shard()) }

func (r *Ref) tryGetOn(s *shard) bool {
	if r.add(s, 1) > poisonFloor {
		return true
	}
	// Poison is only ever written by Kill: the Ref is dying or dead. Undo.
	s.n.Add(-1)
	return false
}

// Put drops a reference. The Put that drops the last reference after Kill
// wakes WaitZero.
func (r *Ref) Put() { r.putOn(r.shard()) }

func (r *Ref) putOn(s *shard) {
	if r.add(s, -1) <= poisonFloor {
		r.putSlow(s)
	}
}

// putSlow: the shard is switched. Undo the add and drop from central.
func (r *Ref) putSlow(s *shard) {
	s.n.Add(1)
	r.putCentral()
}

// putCentral drops one reference from central. While central carries the
// bias it cannot reach zero, so the checks only fire in dead mode.
func (r *Ref) putCentral() {
	switch n := r.central.Add(-1); {
	case n == 0:
		if !r.released.CompareAndSwap(false, true) {
			panic("refcount: count reached zero twice")
		}
		close(r.zero)
	case n < 0:
		panic("refcount: Put without a matching Get (count below zero)")
	}
}

// Kill switches the Ref to a single atomic count, marks it dead so that
// TryGet fails, and then drops the initial reference
// (percpu_ref_kill_and_confirm). It returns a channel that is closed when
// every TryGet ordered after the close is guaranteed to fail. This
// implementation needs no grace period (see "The switch"), so the channel
// is already closed when Kill returns; waiting on it costs nothing and keeps
// callers correct if that ever changes.
//
// Kill panics if called twice. It does not wait for the count to drain:
// use WaitZero.
func (r *Ref) Kill() <-chan struct{} {
	r.mu.Lock()
	if r.mode.Load() != modeSharded {
		r.mu.Unlock()
		panic("refcount: Kill of a Ref already killed")
	}
	r.mode.Store(modeDying)
	for i := range r.shards {
		r.central.Add(r.shards[i].n.Swap(poison))
		if h := r.hooks; h != nil && h.killSwitched != nil {
			h.killSwitched(i)
		}
	}
	// Every shard is moved: central is bias + the exact count (>= 1, the
	// initial reference is still held), so removing the bias cannot reach
	// zero.
	r.central.Add(-bias)
	r.mode.Store(modeDead)
	close(r.confirmed)
	r.mu.Unlock()

	r.putCentral() // the initial reference
	return r.confirmed
}

// WaitZero blocks until the Ref has been killed and its count has reached
// zero, or ctx is done. It returns nil in the first case — every Put then
// happens before WaitZero returns — and an error wrapping ctx.Err() in the
// second. If both are true, nil wins. It may be called before Kill, and by
// any number of goroutines.
func (r *Ref) WaitZero(ctx context.Context) error {
	select {
	case <-r.zero:
		return nil
	default:
	}
	select {
	case <-r.zero:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("refcount: wait for zero: %w", ctx.Err())
	}
}

// Count returns the number of references held. Once Kill has returned it is
// exact (a single atomic load). Before that it is a snapshot: the shards are
// read one by one while Get and Put go on, so it is exact only if none run
// concurrently. It never blocks Get, TryGet or Put.
func (r *Ref) Count() int64 {
	if r.mode.Load() == modeDead {
		return r.central.Load()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode.Load() == modeDead {
		return r.central.Load()
	}
	// Sharded mode (Kill holds mu through the dying mode).
	n := r.central.Load() - bias
	for i := range r.shards {
		n += r.shards[i].n.Load()
	}
	return n
}
