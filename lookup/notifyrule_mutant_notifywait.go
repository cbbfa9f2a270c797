//go:build mutant_notifywait

package lookup

// notifyRuleOff, mutant of issue 17 item 2: MustNotWaitForNotify always
// says wait, so a change made by or for the loader serving a lookup waits
// for a notify that the lookup's held directory keeps from completing
// (only the helper's own changes skip the wait, as control decides by
// itself). TestExecLoaderRegistersThroughCtlWithoutNotifyTimeout and
// TestMustNotWaitForNotify must fail in this build.
const notifyRuleOff = true
