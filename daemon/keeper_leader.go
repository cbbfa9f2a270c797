//go:build !mutant_keeper_stuck

package daemon

// waitWholeExit off: the keeper starts the next daemon once the main
// thread of the old one is dead (watchLeader).
const waitWholeExit = false
