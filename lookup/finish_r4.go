//go:build !mutant_r4

package lookup

import "context"

// finishMiss ends a miss for its owner: step 4 (unpublish, wake every
// waiter, drop the owner's reference), then step 5's lock (sem shared). A
// waiter may hold sem exclusive while it sleeps on the call, so waking it
// must come first: this order is the fix of the 2003 devfs deadlock (race
// R4). On return without error the owner holds sem shared.
// Model: finishMiss in proctype Lookup, test/model/lookup.pml.
func (r *Resolver) finishMiss(ctx context.Context, cl *call) error {
	// complete drops the owner's reference: the record is not touched
	// after it (DESIGN.md R4: it lives as long as its last reference).
	dir, name := cl.dir, cl.name
	r.complete(cl)
	return r.retake(ctx, dir, name)
}
