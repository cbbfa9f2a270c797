//go:build mutant_orphan

package exec

// tieToParent false is the mutant of issue 14 item 3: no Pdeathsig, no
// keeper; a program outlives a parent that is killed.
// TestRunProgramsDieWithTheirParent must fail under this tag.
const tieToParent = false
