//go:build mutant_u1

package integration

// The devfsd under test is built with the mutant's tag too (TestMain).
func init() { mutantTags = append(mutantTags, "mutant_u1") }
