//go:build !mutant_kept_empty

package daemon

// mutantKeptEmptyOnResume is false: a daemon serving kept mounts again
// keeps listing them in the memfd from its first write on.
// keep_mutant_kr.go, built with the tag mutant_kept_empty, sets it.
const mutantKeptEmptyOnResume = false
