package helper

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The kept verdicts: see "Verdicts kept" in proc.go.

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
	n, err := unix.Ppoll(fds[:polled(v.n)], &zero, nil)
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
