//go:build !mutant_r5

package refcount

// add is the shard update step: one atomic read-modify-write, so that no
// update to the same shard — from another goroutine or from Kill's swap —
// can fall between its read and its write (R5). It returns the new value.
func (s *shard) add(d int64) int64 {
	if h := testHookShardUpdate; h != nil {
		h()
	}
	return s.n.Add(d)
}
