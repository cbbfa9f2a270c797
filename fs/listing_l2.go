//go:build !mutant_l2

package fs

// expiresListings reports that a listing filled by a READDIRPLUS is
// dropped once the names it brought expire (Server.expireListing).
// Without it an `ls -l` after they expired is a LOOKUP per name, served
// from a listing that gives the kernel no names.
func expiresListings() bool { return true }
