//go:build mutant_keeper_stuck

package daemon

// waitWholeExit, mutant: the keeper waits until every thread of the old
// daemon is gone, as systemd does, so a thread stuck in the kernel for
// want of a server keeps the next daemon from starting;
// TestKeeperStartsAgainPastAStuckThread must fail in this build.
const waitWholeExit = true
