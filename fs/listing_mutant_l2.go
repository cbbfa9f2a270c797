//go:build mutant_l2

package fs

// expiresListings, mutant L2: a filled listing is kept until its
// directory changes (TestListingLastsAsLongAsItsNames must fail).
func expiresListings() bool { return false }
