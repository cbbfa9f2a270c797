//go:build mutant_l1

package fs

// listingNotices, mutant L1: no listing notice is ever queued
// (TestListingSeesEveryChange must fail).
func listingNotices() bool { return false }
