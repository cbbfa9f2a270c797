// Package helper is the helper loader of DESIGN.md section 5: lookups that
// missed are forwarded, one LOOKUP request with an id each, to a
// long-running helper daemon attached from outside the process, which
// registers what it wants and answers done(id).
//
// The transport is not here. Whoever accepts helpers (package control, over
// the daemon's Unix socket) calls [Loader.Attach] with the helper's
// identity, taken from the socket's peer credentials, and a [Conn] that
// carries requests to it; it calls [Session.Done] when the helper answers
// and [Session.Detach] when the connection ends. modload therefore never
// imports control.
//
// # Waits and death
//
// A Load waits for the helper's done, for its context (package lookup
// bounds it by the loader timeout), or for the session to end, whichever
// comes first. When the helper disconnects or dies every pending Load is
// answered at once with [ErrGone] (which wraps syscall.ENOENT, so that a
// caller that knows no better sees a miss): Detach takes the pending table
// and answers each Load's channel. The helper never said the name is
// missing, so a caller with another loader (package chain) asks that one. Death is noticed two ways,
// whichever is first: the transport calls Detach when the connection
// closes, and Attach watches the helper process itself through a pidfd
// (pidfd_open(2)), which becomes readable when the process exits even if a
// child inherited the socket and keeps it open.
//
// # The helper's own lookups
//
// [Loader.IsHelper] reports whether a process is the attached helper or
// one of its descendants; it is package lookup's bypass predicate, so that
// the helper's own lookups through the mount (and those of programs it
// runs) see the namespace as it is instead of waiting on the helper. It
// walks the live parent links through pidfds, proving each against pid
// reuse, or through /proc on a kernel without PIDFD_GET_INFO (proc.go
// says why, with the candidates measured); a session keeps a walk's
// verdict with the walk's pidfds, and answers a thread that asks again
// with one ppoll of them ("Verdicts kept" in proc.go).
package helper

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Request is one LOOKUP forwarded to the helper: load what provides Name
// in Dir (a path as modload takes it, "" for the root) and answer done(ID).
type Request struct {
	ID     uint64
	Dir    string
	Name   string
	Caller dcache.Caller
}

// Conn carries requests to one attached helper. Send queues r and must
// never block (it is called from a Load); it returns false if r could not
// be queued (the helper's queue is full, or the connection is closing),
// and the Load then fails at once.
type Conn interface {
	Send(r Request) bool
}

// Errors.
var (
	// ErrNotAttached: no helper is attached; a chain falls back.
	ErrNotAttached = errors.New("helper: no helper attached")
	// ErrAttached: Attach while another helper is attached.
	ErrAttached = errors.New("helper: a helper is attached already")
	// ErrUnknownID: Done for an id that is not pending (answered, timed
	// out, or never sent to this session).
	ErrUnknownID = errors.New("helper: no pending lookup with that id")
	// ErrGone: the helper went away (disconnected or died) while the load
	// was pending, before it answered. It wraps syscall.ENOENT; it is not
	// the helper's answer, and a chain falls back.
	ErrGone = fmt.Errorf("helper: the helper went away before answering: %w", syscall.ENOENT)
)

// Loader forwards loads to the attached helper, if any. Its methods are
// safe for concurrent use.
type Loader struct {
	log *zap.Logger // immutable

	mu sync.Mutex // guards attaching and detaching
	// cur is the attached session, nil if none. Written under mu, read
	// without it (Load, IsHelper: the fast path when none is attached).
	cur atomic.Pointer[Session]

	ids      atomic.Uint64 // last request id handed out; ids are never reused
	sessions atomic.Uint64 // sessions attached so far

	sent, answered, timedOut, aborted, refused atomic.Uint64
	answeredRegistering                        atomic.Uint64
}

var _ modload.Loader = (*Loader)(nil)

// New returns a Loader with no helper attached. log may be nil.
func New(log *zap.Logger) *Loader {
	if log == nil {
		log = zap.NewNop()
	}
	return &Loader{log: log.Named("helper")}
}

// Session is one attached helper, from Attach to Detach.
type Session struct {
	l     *Loader
	conn  Conn
	id    dcache.Caller
	start uint64 // the helper's start time (/proc/PID/stat field 22), 0 if unknown
	num   uint64 // which session this is, from 1

	// pidfd is the helper's pidfd, opened at Attach (-1 if it could not
	// be), for the identity check (proc.go); closed by Detach under
	// pidfdMu held exclusive, so that a check holding it shared never
	// uses a closed (or reused) descriptor.
	pidfdMu   sync.RWMutex
	pidfd     int  // guarded by pidfdMu
	pidfdGone bool // Detach closed it; guarded by pidfdMu

	// kept are the verdicts of the identity check kept for callers that
	// ask again (verdicts.go); emptied by Detach, after it sets detached.
	kept     verdicts
	detached atomic.Bool

	mu sync.Mutex
	// Guarded by mu:
	pending map[uint64]chan error
	ended   bool

	gone     chan struct{} // closed by Detach
	stopWait func()        // stops the pidfd watcher
}

// Attach makes the helper identified by id the loader, with conn as its
// transport. ErrAttached if a helper is attached already.
func (l *Loader) Attach(id dcache.Caller, conn Conn) (*Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur.Load() != nil {
		return nil, ErrAttached
	}
	s := &Session{l: l, conn: conn, id: id, pending: make(map[uint64]chan error),
		gone: make(chan struct{}), num: l.sessions.Add(1)}
	s.start, _ = startTime(id.Pid)
	s.pidfd = -1
	if fd, err := unix.PidfdOpen(int(id.Pid), 0); err == nil {
		s.pidfd = fd
	}
	s.stopWait = watchExit(id.Pid, func() { s.Detach("the helper process exited") })
	l.cur.Store(s)
	l.log.Info("helper attached", zap.Uint32("pid", id.Pid), zap.Uint32("uid", id.Uid),
		zap.Uint64("session", s.num))
	return s, nil
}

// Identity returns who the helper is, from the socket's peer credentials
// (never from anything the helper says).
func (s *Session) Identity() dcache.Caller { return s.id }

// Gone is closed when the session has ended.
func (s *Session) Gone() <-chan struct{} { return s.gone }

// Detach ends the session: every pending Load is answered at once with
// ErrGone, and later Loads go to the fallback (ErrNotAttached).
// It is idempotent and never blocks on the helper.
func (s *Session) Detach(reason string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	pending := s.pending
	s.pending = nil
	close(s.gone)
	s.mu.Unlock()
	for _, ch := range pending {
		ch <- ErrGone // capacity 1, never written twice
	}
	s.l.aborted.Add(uint64(len(pending)))
	s.l.mu.Lock()
	if s.l.cur.Load() == s {
		s.l.cur.Store(nil)
	}
	s.l.mu.Unlock()
	s.stopWait()
	s.detached.Store(true)
	s.kept.clear() // a verdict kept after this sees detached and drops itself
	s.pidfdMu.Lock()
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	s.pidfdGone = true
	s.pidfdMu.Unlock()
	s.l.log.Info("helper detached", zap.Uint32("pid", s.id.Pid), zap.Uint64("session", s.num),
		zap.String("reason", reason), zap.Int("lookups_aborted", len(pending)))
}

// Done answers the pending lookup id: nil or an error. ErrUnknownID if it
// is not pending in this session.
func (s *Session) Done(id uint64, loadErr error) error { return s.done(id, loadErr, false) }

// DoneRegistering is Done for an answer that carried the registrations
// that provide the name (the one-request form), counted apart.
func (s *Session) DoneRegistering(id uint64, loadErr error) error { return s.done(id, loadErr, true) }

// done answers lookup id, counting it before the lookup can see it.
//
// It yields its processor to the lookup it woke before it returns: the
// woken goroutine is queued to run next on this processor, so without the
// yield the lookup's reply to the kernel would wait until the caller (the
// done request's handler) blocks, after encoding and writing its own
// answer, which nobody waits on as the lookup's caller does.
func (s *Session) done(id uint64, loadErr error, registering bool) error {
	s.mu.Lock()
	ch, ok := s.pending[id]
	if ok {
		delete(s.pending, id)
	}
	s.mu.Unlock()
	if !ok {
		return ErrUnknownID
	}
	s.l.answered.Add(1)
	if registering {
		s.l.answeredRegistering.Add(1)
	}
	ch <- loadErr
	runtime.Gosched()
	return nil
}

// Pending reports whether lookup id is pending in this session: sent and
// not yet answered, timed out or aborted. An answer that registers first
// checks it, so that a late one changes nothing.
func (s *Session) Pending(id uint64) bool {
	s.mu.Lock()
	_, ok := s.pending[id]
	s.mu.Unlock()
	return ok
}

// Load forwards the lookup to the attached helper and waits for its done,
// ctx, or the helper's end. ErrNotAttached when no helper is attached.
func (l *Loader) Load(ctx context.Context, dir, name string, caller dcache.Caller) error {
	s := l.cur.Load()
	if s == nil {
		return ErrNotAttached
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	req := Request{ID: l.ids.Add(1), Dir: dir, Name: name, Caller: caller}
	ch := make(chan error, 1)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return ErrNotAttached
	}
	s.pending[req.ID] = ch
	s.mu.Unlock()
	if !s.conn.Send(req) {
		s.forget(req.ID)
		l.refused.Add(1)
		return fmt.Errorf("helper: the helper's request queue is full: %w", syscall.EAGAIN)
	}
	l.sent.Add(1)
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		if s.forget(req.ID) {
			l.timedOut.Add(1)
			return ctx.Err()
		}
		return <-ch // answered (or aborted) as ctx ended
	}
}

// forget removes id from the pending table; false if it was not there.
func (s *Session) forget(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[id]; !ok {
		return false
	}
	delete(s.pending, id)
	return true
}

// Attached reports whether a helper is attached, and which.
func (l *Loader) Attached() (dcache.Caller, bool) {
	if s := l.cur.Load(); s != nil {
		return s.id, true
	}
	return dcache.Caller{}, false
}

// Current returns the attached session, or nil.
func (l *Loader) Current() *Session { return l.cur.Load() }

// IsHelper reports whether pid (a process or thread id) is the attached
// helper or one of its descendants. False at once when none is attached.
func (l *Loader) IsHelper(pid uint32) bool {
	s := l.cur.Load()
	if s == nil || pid == 0 {
		return false
	}
	return s.isHelper(pid)
}

// isHelper reports whether pid is s's helper or one of its descendants
// (proc.go): from a verdict kept for pid if one still holds, else by a
// walk, whose verdict is kept (verdicts.go); false once s has detached.
func (s *Session) isHelper(pid uint32) bool {
	if s.detached.Load() {
		return false
	}
	if yes, ok := s.kept.get(pid); ok {
		return yes && !s.detached.Load()
	}
	s.pidfdMu.RLock()
	defer s.pidfdMu.RUnlock()
	if s.pidfdGone {
		return false
	}
	if s.pidfd < 0 || noPidfdWalk.Load() {
		return descends(pid, s.id.Pid, s.pidfd, s.start)
	}
	var keep [maxKeptLinks]int32
	yes, kept, err := pidfdWalk(pid, s.id.Pid, s.pidfd, keep[:])
	if err != nil {
		return descends(pid, s.id.Pid, s.pidfd, s.start)
	}
	if kept > 0 {
		v := s.kept.put(pid, yes, keep[:kept])
		if s.detached.Load() {
			s.kept.drop(v) // Detach's clear may have run before the put
		}
	}
	return yes
}

// Stats counts the loader's work.
type Stats struct {
	Attached bool
	Pid      uint32
	Sessions uint64 // helpers attached so far
	Sent     uint64 // LOOKUP requests delivered to a helper's queue
	Answered uint64 // done(id) received in time
	// AnsweredRegistering counts the Answered whose done carried the
	// registrations (one request instead of register(s) and done).
	AnsweredRegistering uint64
	TimedOut            uint64 // loads whose context ended before done
	Aborted             uint64 // loads answered ENOENT because the helper went away
	Refused             uint64 // loads failed because the helper's queue was full
}

// Stats returns the counters.
func (l *Loader) Stats() Stats {
	id, ok := l.Attached()
	return Stats{Attached: ok, Pid: id.Pid, Sessions: l.sessions.Load(), Sent: l.sent.Load(),
		Answered: l.answered.Load(), AnsweredRegistering: l.answeredRegistering.Load(), TimedOut: l.timedOut.Load(), Aborted: l.aborted.Load(),
		Refused: l.refused.Load()}
}
