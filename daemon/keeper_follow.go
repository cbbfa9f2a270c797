//go:build !mutant_keeper_nofollow

package daemon

// followSuccessor on: the keeper follows the successor the daemon names
// (MAINPID=) after an upgrade.
const followSuccessor = true
