//go:build mutant_kept_empty

package daemon

// mutantKeptEmptyOnResume, mutant KP3: the memfd of a daemon serving kept
// mounts again starts with no mounts until each is resumed, so a crash in
// between (DEVFSD_TEST_DIE_AFTER_RESERVE) makes the next start drop the
// mounts' descriptors; TestKeeperCrashBeforeResumeKeepsTheMount
// (test/integration) must fail in this build.
const mutantKeptEmptyOnResume = true
