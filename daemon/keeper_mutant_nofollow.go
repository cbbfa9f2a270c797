//go:build mutant_keeper_nofollow

package daemon

// followSuccessor, mutant: the keeper ignores MAINPID=, follows only the
// process it started, and ends when that one exits after handing over;
// TestKeeperFollowsAnUpgrade must fail in this build.
const followSuccessor = false
