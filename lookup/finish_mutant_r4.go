//go:build mutant_r4

package lookup

import "context"

// finishMiss, mutant R4: the 2003 devfs_lookup order, retaking sem before
// waking the waiters. A waiter holding sem exclusive (rm -f of the loading
// name) and this owner then wait for each other.
// Model: switch MUT_R4 in test/model/lookup.pml.
func (r *Resolver) finishMiss(ctx context.Context, cl *call) error {
	if err := r.retake(ctx, cl.dir, cl.name); err != nil {
		r.complete(cl)
		return err
	}
	r.complete(cl)
	return nil
}
