// Package rwsem is a reader-writer semaphore.
//
// PLACEHOLDER: this file carries the final API with a deliberately simple
// implementation so that dependent packages compile while the real one
// (state word, FIFO wait queue, handoff) is written. It is replaced whole.
package rwsem

import (
	"context"
	"sync"
)

// Sem is a reader-writer semaphore. The zero value is unlocked.
type Sem struct {
	mu      sync.Mutex
	readers int
	writer  bool
	changed chan struct{}
}

func (s *Sem) waitChange() <-chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

func (s *Sem) broadcast() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

func (s *Sem) DownRead()  { _ = s.DownReadCtx(context.Background()) }
func (s *Sem) DownWrite() { _ = s.DownWriteCtx(context.Background()) }

func (s *Sem) DownReadCtx(ctx context.Context) error {
	for {
		s.mu.Lock()
		if !s.writer {
			s.readers++
			s.mu.Unlock()
			return nil
		}
		ch := s.waitChange()
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Sem) DownWriteCtx(ctx context.Context) error {
	for {
		s.mu.Lock()
		if !s.writer && s.readers == 0 {
			s.writer = true
			s.mu.Unlock()
			return nil
		}
		ch := s.waitChange()
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Sem) TryDownRead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writer {
		return false
	}
	s.readers++
	return true
}

func (s *Sem) TryDownWrite() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writer || s.readers > 0 {
		return false
	}
	s.writer = true
	return true
}

func (s *Sem) UpRead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readers == 0 {
		panic("rwsem: up_read of unheld semaphore")
	}
	s.readers--
	s.broadcast()
}

func (s *Sem) UpWrite() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.writer {
		panic("rwsem: up_write of unheld semaphore")
	}
	s.writer = false
	s.broadcast()
}

func (s *Sem) DowngradeWrite() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.writer {
		panic("rwsem: downgrade_write of unheld semaphore")
	}
	s.writer = false
	s.readers++
	s.broadcast()
}

// WaitForRelease waits until the writer holding s (if any) releases it,
// without taking s.
func (s *Sem) WaitForRelease(ctx context.Context) error {
	s.mu.Lock()
	if !s.writer {
		s.mu.Unlock()
		return nil
	}
	ch := s.waitChange()
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
