//go:build mutant_r4

package lookup

// r4RetakeFirst, mutant R4: the 2003 devfs_lookup order, in which the owner
// takes sem again before it wakes the waiters. A waiter holding sem
// exclusive (rm -f of the loading name) and the owner then wait for each
// other; TestR4LsAndRmOfLoadingName must fail in this build.
// Model: switch MUT_R4 in test/model/lookup.pml.
const r4RetakeFirst = true
