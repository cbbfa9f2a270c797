//go:build mutant_r2

package rwsem

// MUTANT R2: the futex lockless-wake bug. The granted waiter returns
// without waiting for its wakeup; the waker posts it later, into the
// record's next wait.
// Model: switch MUT_R2 in test/model/rwsem.pml.
func consumeGrantWakeup(w *waiter) {}
