//go:build mutant_k2

package kernel

// catchUpOnMiss, mutant K2: a miss answers from the tree as the reader has
// left it, so the first lookup after the call that made a device may miss
// it (TestMissAppliesQueuedUevents must fail).
const catchUpOnMiss = false
