package helper

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Verdicts kept
//
// A session keeps the answers of its pidfd walks (proc.go) so that a
// caller that asks again — the same thread, the usual case: a container
// runtime probing, a program looking up one name after another, the
// helper's own threads — is answered with one system call: a ppoll, with
// a zero timeout, of every pidfd of the chain the walk went up.
//
// What a kept verdict holds. The walk that settled (it reached the helper,
// init, or the top of the pid namespace, no link changing under it; see
// pidfdWalk) keeps, instead of closing them, the pidfds it opened: the
// thread's own (PIDFD_THREAD), then its process's parent's, and so on up
// to the helper's (a yes) or to the last process below init (a no; init,
// pid 1, never exits while the daemon lives). At most maxKeptLinks: a
// longer chain is walked every time, as before.
//
// Why the chain's pidfds prove the verdict still holds. A pidfd names one
// struct pid, never reused; a pid number is reused, a pidfd is not. The
// ppoll reports a pidfd readable (POLLIN, or POLLHUP once reaped) when
// its thread (the first) or its whole process (the others) has exited. So
// "no pidfd readable" means: the thread asking is still the thread the
// walk started from — its id cannot have been given to another thread,
// since an id is freed only when its thread is reaped, after it exited —
// and no process of the chain has exited. A verdict is a fact about the
// chain of live parent links from the thread's process up, and a link
// changes only one way: a process is reparented when its parent exits
// (to another thread of the parent's process while one lives, which is
// the same process; else to a subreaper among the parent's ancestors, or
// to the parent's pid namespace's init). Exec, ptrace, setsid, setns and
// PR_SET_CHILD_SUBREAPER change no existing link; CLONE_PARENT acts only
// at creation. Every parent on the chain is polled — the helper too for a
// yes — so no link of it can have changed while none is readable, except
// the two whose parent is not polled: init's (it has none), and the top's
// (its parent is outside the daemon's pid namespace, and whoever takes
// it over when that parent exits, an ancestor of that parent or that
// parent's namespace's init, is outside it too: the top stays the top).
// The chain unchanged, the verdict is unchanged: a yes stays a yes (the
// helper is on it, polled), a no stays a no. This covers what a check of
// the first link alone would miss: a no that turns into a yes with the
// caller's own parent unchanged, when a process higher up is reparented
// into the helper's tree (a process that entered the helper's pid
// namespace by setns, whose parent outside exits, goes to that
// namespace's init, which may be the helper or its descendant).
//
// The one window, and why it is no worse than the walk's. A process's
// children are reparented, under the kernel's tasklist lock, a moment
// before the process shows as exited (its exit state is set in the same
// lock hold when it is the last thread to go, a little later when the
// last thread is not its leader). A question asked in that moment, racing
// with the exit, gets the verdict from before it; the walk racing the
// same exit answers no (it finds the link changed under it, and does not
// settle), which is the verdict from before it too unless that was a yes.
// Both answer a question asked while the answer changes with one that
// held an instant before; once the exit is complete the verdict is
// dropped.
//
// A verdict is dropped (evicted, its pidfds closed once nobody uses them)
// when a poll finds a pidfd readable (the caller is then walked again),
// when another thread's verdict takes its slot, and when the session
// detaches (a new helper gets a new, empty set: a verdict is about one
// session's helper). Memory is bounded: verdictSlots slots, each a
// verdict of at most maxKeptLinks pidfds, so the cache holds at most
// verdictSlots*maxKeptLinks descriptors (1024). The slot is chosen by
// the thread id (direct-mapped, no list to keep); the hot path takes no
// lock: an atomic load of the slot, a compare-and-swap on the verdict's
// own reference count (callers of different threads touch different
// verdicts), the ppoll, an atomic add.

// verdictSlots is how many verdicts a session keeps (a power of 2).
const verdictSlots = 128

// maxKeptLinks bounds a kept verdict's chain (pidfds); a longer chain is
// walked on every question.
const maxKeptLinks = 8

// verdict is one kept answer for thread tid: yes, proved by fds.
type verdict struct {
	tid uint32
	yes bool
	n   int                       // fds[:n] are the chain's pidfds
	fds [maxKeptLinks]unix.PollFd // Events POLLIN; never written after creation
	// refs counts the slot's reference (1 while the verdict is in a slot)
	// and each caller's polling it; the fds are closed when it reaches 0,
	// and it is never raised from 0.
	refs atomic.Int32
}

func newVerdict(tid uint32, yes bool, fds []int32) *verdict {
	v := &verdict{tid: tid, yes: yes, n: len(fds)}
	for i, fd := range fds {
		v.fds[i] = unix.PollFd{Fd: fd, Events: unix.POLLIN}
	}
	v.refs.Store(1)
	return v
}

// acquire takes a reference; false if the fds are closed (or closing).
func (v *verdict) acquire() bool {
	for {
		r := v.refs.Load()
		if r <= 0 {
			return false
		}
		if v.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// release drops a reference; the last closes the fds.
func (v *verdict) release() {
	if v.refs.Add(-1) == 0 {
		for _, p := range v.fds[:v.n] {
			unix.Close(int(p.Fd))
		}
	}
}

// holds reports whether the verdict still holds: none of its pidfds is
// readable. One ppoll; the caller holds a reference.
func (v *verdict) holds() bool {
	fds := v.fds // a copy: the kernel writes revents
	var zero unix.Timespec
	n, err := unix.Ppoll(fds[:v.n], &zero, nil)
	return err == nil && n == 0
}

// verdicts is a session's kept verdicts.
type verdicts struct {
	slots [verdictSlots]atomic.Pointer[verdict]
}

func slotOf(tid uint32) uint32 { return (tid * 0x9E3779B1) >> (32 - 7) } // 2^7 == verdictSlots

// get returns the kept verdict for tid if one is kept and still holds; a
// kept one that no longer holds is dropped.
func (c *verdicts) get(tid uint32) (yes, ok bool) {
	slot := &c.slots[slotOf(tid)]
	v := slot.Load()
	if v == nil || v.tid != tid || !v.acquire() {
		return false, false
	}
	if v.holds() {
		yes = v.yes
		v.release()
		return yes, true
	}
	if slot.CompareAndSwap(v, nil) {
		v.release() // the slot's reference
	}
	v.release()
	return false, false
}

// put keeps a verdict for tid whose chain is fds (owned by the cache from
// now on), in place of whatever its slot held.
func (c *verdicts) put(tid uint32, yes bool, fds []int32) *verdict {
	v := newVerdict(tid, yes, fds)
	if old := c.slots[slotOf(tid)].Swap(v); old != nil {
		old.release()
	}
	return v
}

// drop removes v from its slot if it is there.
func (c *verdicts) drop(v *verdict) {
	if c.slots[slotOf(v.tid)].CompareAndSwap(v, nil) {
		v.release()
	}
}

// clear drops every verdict.
func (c *verdicts) clear() {
	for i := range c.slots {
		if v := c.slots[i].Swap(nil); v != nil {
			v.release()
		}
	}
}
