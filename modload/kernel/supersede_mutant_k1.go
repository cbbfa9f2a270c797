//go:build mutant_k1

package kernel

// supersede, mutant K1: a rescan leaves the uevents queued before it to be
// applied after it (TestRescanSupersedesQueuedUevents must fail).
func supersede(last, _ uint64) uint64 { return last }
