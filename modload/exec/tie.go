//go:build !mutant_orphan

package exec

// tieToParent: programs die with their parent (keeper.go).
const tieToParent = true
