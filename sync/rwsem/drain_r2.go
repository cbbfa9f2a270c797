//go:build !mutant_r2

package rwsem

// R2 (DESIGN.md section 4): a waiter that gives up but finds itself
// granted consumes the wakeup in flight before its record is reused, so
// the wakeup cannot reach the record's next wait.
// Model: consumeGrantWakeup in test/model/rwsem.pml (switch MUT_R2).
func consumeGrantWakeup(w *waiter) { w.tok.Consume() }
