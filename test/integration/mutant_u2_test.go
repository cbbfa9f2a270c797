//go:build mutant_u2

package integration

// The devfsd under test is built with the mutant's tag too (TestMain).
func init() { mutantTags = append(mutantTags, "mutant_u2") }
