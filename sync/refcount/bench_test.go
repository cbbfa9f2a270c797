package refcount

import (
	"sync/atomic"
	"testing"
)

// The figures and the command are in test/bench/README.md, section
// "sync/refcount vs atomic.Int64". Each benchmark does one take and one
// drop per iteration, from b.RunParallel goroutines (GOMAXPROCS of them).

// BenchmarkAtomicInt64 is the baseline: one shared atomic.Int64,
// Add(1) then Add(-1).
func BenchmarkAtomicInt64(b *testing.B) {
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Add(1)
			n.Add(-1)
		}
	})
}

// BenchmarkGetPut is the sharded fast path: Get then Put.
func BenchmarkGetPut(b *testing.B) {
	r := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Get()
			r.Put()
		}
	})
}

// BenchmarkTryGetPut is what a request does: TryGet then Put.
func BenchmarkTryGetPut(b *testing.B) {
	r := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r.TryGet() {
				r.Put()
			}
		}
	})
}

// BenchmarkGetPutKilled is the dead-mode path (a request finishing during
// a drain): a failed shard add, its undo, and the central atomic.
func BenchmarkGetPutKilled(b *testing.B) {
	r := New()
	r.Get()
	r.Kill()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Get()
			r.Put()
		}
	})
}
