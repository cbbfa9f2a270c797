//go:build !mutant_k4

package kernel

// readBatch is one turn of the reader: up to readerBatch messages taken
// from the socket and applied under one hold of mu, so that a miss
// holding mu has seen the effect of every message taken before it (see
// "Catching up on a miss"). reader_mutant_k4.go, built with the tag
// mutant_k4, takes them without mu.
func (s *Source) readBatch(c *conn, fd uintptr) (more bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drainLocked(c, fd, readerBatch)
}
