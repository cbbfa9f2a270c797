//go:build mutant_r5

package refcount

// add, mutant R5: the shard update as a plain load and store (the
// __this_cpu_inc of the 2014 bug). An update made to the shard between the
// two is lost. TestR5LostShardUpdate must fail in this build.
func (r *Ref) add(s *shard, d int64) int64 {
	v := s.n.Load()
	if h := r.hooks; h != nil && h.shardUpdate != nil {
		h.shardUpdate()
	}
	v += d
	s.n.Store(v)
	return v
}
