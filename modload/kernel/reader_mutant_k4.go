//go:build mutant_k4

package kernel

import (
	"time"

	"golang.org/x/sys/unix"
)

// readBatch, mutant K4: the reader takes a message from the socket before
// it takes mu, so a miss may find the queue empty while the message it
// needed is not applied yet, and a miss and the reader may apply two
// messages out of order (TestHammerCatchUpWithTheReader must fail).
func (s *Source) readBatch(c *conn, fd uintptr) (more bool, err error) {
	own := &conn{buf: make([]byte, recvBuffer), oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred))}
	msg, snd, err := own.recv(fd)
	switch err {
	case errAgain:
		return false, nil
	case errOverrun:
		s.mu.Lock()
		defer s.mu.Unlock()
		s.st.overruns.Add(1)
		if s.dirtySince.IsZero() {
			s.dirtySince = time.Now()
		}
		return true, nil
	case nil:
	default:
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handleLocked(msg, snd)
	return true, nil
}
