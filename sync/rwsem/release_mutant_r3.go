//go:build mutant_r3

package rwsem

// MUTANT R3: rwsem_wait_killable as first posted: after waking only
// WaitForRelease waiters, the waker stops, and a writer queued behind them
// sleeps on a free semaphore.
// Model: switch MUT_R3 in test/model/rwsem.pml.
func wakeNextIfFree(c int64) bool { return false }
