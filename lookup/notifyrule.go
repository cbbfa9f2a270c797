//go:build !mutant_notifywait

package lookup

// notifyRuleOff is false: MustNotWaitForNotify applies the deadlock rule
// "Notifies that cannot be delivered" of the package doc.
// notifyrule_mutant_notifywait.go, built with the tag mutant_notifywait,
// sets it.
const notifyRuleOff = false
