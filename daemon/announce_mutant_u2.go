//go:build mutant_u2

package daemon

// letGoFirst, mutant U2: the mounts are let go before the handover is
// announced, so Run may see the main mount's serve loop end first, take it
// for an unmount from outside and exit without answering the upgrade;
// TestUpgradeUnderLoad (test/integration) must fail in this build.
const letGoFirst = true
