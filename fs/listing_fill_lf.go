//go:build !mutant_fill_dir

package fs

// fillThread is the key a listing in progress is followed by: its
// thread. listing_fill_mutant_lf.go, built with the tag mutant_fill_dir,
// replaces it.
func fillThread(tid uint32) uint32 { return tid }
