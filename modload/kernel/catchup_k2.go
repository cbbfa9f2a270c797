//go:build !mutant_k2

package kernel

// catchUpOnMiss says that a lookup miss (Declines, Load) first applies the
// uevents queued on the socket. catchup_mutant_k2.go, built with the tag
// mutant_k2, turns it off.
const catchUpOnMiss = true
