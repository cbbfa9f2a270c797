//go:build !mutant_k1

package kernel

// supersede returns the last SEQNUM applied once a rescan that began when
// the kernel had counted seq uevents is applied: the scan reflects every
// uevent up to seq, so those still queued in the socket are stale. Without
// it an old queued uevent (a change of a device since removed) would undo
// the rescan, and nothing later would correct it.
func supersede(last, seq uint64) uint64 { return max(last, seq) }
