//go:build !mutant_r4

package lookup

// r4RetakeFirst selects the order of steps 4 and 5 in Resolver.miss. It is
// false: the owner wakes every waiter (step 4) before it takes sem again
// (step 5), the fix of race R4. order_mutant_r4.go, built with the tag
// mutant_r4, sets it.
const r4RetakeFirst = false
