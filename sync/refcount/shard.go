package refcount

import (
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

const (
	// cacheLine is the padding unit. 128, not 64: amd64's adjacent-line
	// prefetcher pulls lines in pairs (sync.Pool pads its per-P data the
	// same way).
	cacheLine = 128

	// poison is the value Kill swaps into a shard. Any shard value at or
	// below poisonFloor means "switched"; live shard values stay far above
	// it (see Limits in the package doc), and an update that lands on a
	// poisoned shard moves it by one and undoes itself, so a poisoned shard
	// stays within a few thousand of poison.
	poison      = -(int64(1) << 62)
	poisonFloor = -(int64(1) << 61)
)

// shard is one counter of a Ref, alone on its cache line(s). n is the net
// number of Gets minus Puts that landed here while the Ref was sharded, or
// poison (plus transient undo traffic) once Kill switched it. n is only ever
// updated atomically: by add (Get, TryGet, Put), by their undo, and by
// Kill's Swap.
type shard struct {
	n atomic.Int64
	_ [cacheLine - 8]byte
}

// testHooks are the points where TestR5LostShardUpdate and
// TestDyingBiasKeepsCountAboveZero force an interleaving. A Ref's hooks are
// nil except in tests, which set them on a Ref of their own before any
// goroutine uses it and never change them while one does.
type testHooks struct {
	// shardUpdate runs at the start of every shard update step (add); in
	// the mutant_r5 build it runs between the load and the store.
	shardUpdate func()
	// killSwitched runs in Kill after shard i is switched, so that a test
	// can act in the dying mode.
	killSwitched func(i int)
}

// procPin and procUnpin are the runtime's (sync.Pool and sync/atomic use the
// same pair). procPin disables preemption and returns the current P's id;
// Go 1.23+ keeps them reachable by linkname (go.dev/issue/67401). We only
// want the id as a hint, so we unpin at once: if the goroutine migrates
// before its add, the add is still atomic and still counts — it just lands
// on another P's shard.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// shard returns the calling P's shard.
func (r *Ref) shard() *shard {
	p := procPin()
	procUnpin()
	return &r.shards[p&r.mask]
}

// ProcHint returns the id of the P the calling goroutine runs on now. It is
// a hint: the goroutine may have moved to another P by the time the caller
// uses it, so whatever it indexes must still be updated atomically. Other
// packages use it to pick a per-P shard the way Ref does (metrics).
func ProcHint() int {
	p := procPin()
	procUnpin()
	return p
}

// ShardCount is the number of shards for n Ps: n rounded up to a power of
// two (so that a P id is reduced by a mask), at most maxShards. Ref sizes
// its shards with it, and so may any per-P array indexed by
// ProcHint() & (ShardCount(n)-1).
func ShardCount(n int) int {
	size := 1
	for size < n && size < maxShards {
		size <<= 1
	}
	return size
}
