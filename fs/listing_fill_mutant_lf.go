//go:build mutant_fill_dir

package fs

// fillThread, mutant LF1: every listing of a directory shares one mark,
// as when fills were kept per directory, so a second listing clears the
// mark of one whose reply was delayed past it;
// TestListedFromNoticesAFillAChangeOvertook must fail in this build.
func fillThread(uint32) uint32 { return 0 }
