//go:build mutant_keptlink

package helper

// polled, mutant of issue 17 item 1's kept verdicts: a kept verdict's
// check polls only the caller's own pidfd, so a yes outlives the exit of
// a process between the caller and the helper (the caller reparented out
// of the helper's tree). TestPidReuseCannotMakeAStrangerTheHelper must
// fail in this build.
func polled(n int) int { return min(n, 1) }
