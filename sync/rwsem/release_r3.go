//go:build !mutant_r3

package rwsem

// R3 (DESIGN.md section 4): a reader phase that woke only WaitForRelease
// waiters leaves s as it found it; if s is free, the next waiter (a writer
// behind them) must be served too. c is the state word after the phase.
// Model: again in grantReadersLocked, test/model/rwsem.pml (switches
// MUT_R3, and MUT_R3H for WaitForRelease counted as a reader).
func wakeNextIfFree(c int64) bool { return c&lockMask == 0 }
