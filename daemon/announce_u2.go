//go:build !mutant_u2

package daemon

// letGoFirst selects the order of an upgrade's last step. It is false: the
// handover is announced (Run then waits for the upgrade's answer) before
// the mounts are let go, whose serve loops then end. announce_mutant_u2.go,
// built with the tag mutant_u2, sets it.
const letGoFirst = false

// u2Window is 0: no pause between the two steps.
const u2Window = 0
