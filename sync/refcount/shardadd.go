//go:build !mutant_r5

package refcount

// add is the shard update step on s, a shard of r: one atomic
// read-modify-write, so that no update to the same shard — from another
// goroutine or from Kill's swap — can fall between its read and its write
// (R5). It returns the new value.
func (r *Ref) add(s *shard, d int64) int64 {
	if h := r.hooks; h != nil && h.shardUpdate != nil {
		h.shardUpdate()
	}
	return s.n.Add(d)
}
