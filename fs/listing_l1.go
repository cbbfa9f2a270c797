//go:build !mutant_l1

package fs

// listingNotices reports that a change of a directory's entries queues
// the directory's listing notice (NotifyQueue.pushDir). Without it a
// listing the kernel cached outlives the change: a registration, or a
// change made through another mount, does not show in the next listing.
func listingNotices() bool { return true }
