//go:build mutant_u2

package daemon

import "time"

// letGoFirst, mutant U2: the mounts are let go before the handover is
// announced, so Run may see the main mount's serve loop end first, take it
// for an unmount from outside and exit without answering the upgrade;
// TestUpgradeUnderLoad (test/integration) must fail in this build.
const letGoFirst = true

// u2Window holds the wrong order's window open (as a preemption between
// the two steps would), so that every upgrade of the test meets it rather
// than one in a few hundred.
const u2Window = 20 * time.Millisecond
