//go:build mutant_r2

package rwsem

// MUTANT R2: the futex lockless-wake bug. The granted waiter returns
// without waiting for its wakeup; the waker posts it later, into the
// record's next wait.
func consumeGrantWakeup(w *waiter) {}
