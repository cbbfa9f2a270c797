//go:build !mutant_keptlink

package helper

// polled is how many of a kept verdict's n pidfds its check polls: all
// of them ("Verdicts kept" in proc.go). pollchain_mutant_keptlink.go,
// built with the tag mutant_keptlink, polls the caller's own only.
func polled(n int) int { return n }
