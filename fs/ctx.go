package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// reqCtx is the context of one FUSE request that may wait (a lookup on a
// loader, a namespace change on a lookup in flight, a directory lock). It
// is done when shutdown begins, or when the kernel interrupts the request
// because its caller is dying; its Err is then context.Canceled, which
// package lookup answers with EINTR.
//
// # Which interrupts count
//
// The kernel sends one FUSE INTERRUPT per request, for the first signal
// its caller receives while waiting, whatever the signal. Most are not
// fatal: Go programs receive SIGURG many times a second (goroutine
// preemption), shells SIGCHLD, terminals SIGWINCH. Answering those with
// EINTR would fail open(2) and stat(2) calls that no local file system
// ever fails — SA_RESTART cannot restart a FUSE reply — so the go-fuse
// posixtest suite itself sees "interrupted system call". So a request's
// waits are killable, not interruptible, like the kernel's own
// rwsem_down_read_killable: on INTERRUPT the server looks at the caller's
// pending signals (/proc/PID/status, SigPnd and ShdPnd); if SIGKILL is
// pending — which is also how the kernel marks any signal whose default
// action kills, such as SIGINT or SIGTERM without a handler — the
// context is done at once. Otherwise the wait goes on, and since the
// kernel will not send a second INTERRUPT, the watcher keeps checking
// every killPoll until the request ends or the caller becomes dying; the
// wait is bounded anyway by the loader timeout. A caller that cannot be
// examined (it exited, or the request came from the kernel, pid 0) counts
// as dying.
//
// Most requests never wait, and the layers below look at Done only on
// their slow paths, so the done channel — and the goroutine that watches
// for the causes — is made on the first call to Done or Err (so an Err
// can see what a Done would), never on the fast path. release, called
// when the request is answered, ends the watcher.
type reqCtx struct {
	intr <-chan struct{} // the request's cancel channel (go-fuse)
	stop <-chan struct{} // closed when shutdown begins
	pid  uint32          // the caller (a thread id), 0 for the kernel

	once   sync.Once
	inited bool          // init ran (under once): a watcher exists
	done   chan struct{} // made by the first Done; closed when cancelled
	fin    chan struct{} // closed by release
}

// killPoll is how often an interrupted request that goes on waiting
// checks whether its caller has become dying since.
const killPoll = 20 * time.Millisecond

var _ context.Context = (*reqCtx)(nil)

func (c *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *reqCtx) Value(any) any               { return nil }

func (c *reqCtx) Err() error {
	select {
	case <-c.stop:
		return context.Canceled
	default:
	}
	c.once.Do(c.init)
	if c.done != nil {
		select {
		case <-c.done:
			return context.Canceled
		default:
		}
	}
	return nil
}

func (c *reqCtx) Done() <-chan struct{} {
	c.once.Do(c.init)
	return c.done
}

// init makes the done channel and starts the watcher.
func (c *reqCtx) init() {
	c.inited = true
	c.done = make(chan struct{})
	c.fin = make(chan struct{})
	go c.watch()
}

func (c *reqCtx) watch() {
	select {
	case <-c.stop:
		close(c.done)
		return
	case <-c.fin:
		return
	case <-c.intr:
	}
	t := time.NewTicker(killPoll)
	defer t.Stop()
	for !dying(c.pid) {
		select {
		case <-c.stop:
		case <-c.fin:
			return
		case <-t.C:
			continue
		}
		break
	}
	close(c.done)
}

// release ends the watcher, if Done made one. Call it once, when the
// request is answered; c must not be used afterwards (nor may anything
// call its Done or Err for the first time after it).
//
// A context whose Done and Err were never called goes back to a pool: no
// watcher holds it, and nothing below kept it — a layer that keeps a
// context past the call (a derived context, a load that outlives an
// interrupted owner) calls Done first, and that context is left to the
// garbage collector. Most requests never wait, so most are reused.
//
// Done and Err are called by the request's own goroutine, or by goroutines
// it started after calling Done itself (a derived context calls it), so
// inited needs no synchronisation here; a sync.Once.Do to close the once
// would take its mutex on every request.
func (c *reqCtx) release() {
	if c.inited {
		close(c.fin) // ends the watcher
		return
	}
	*c = reqCtx{}
	reqCtxPool.Put(c)
}

// reqCtxPool holds released contexts that were never waited on.
var reqCtxPool = sync.Pool{New: func() any { return new(reqCtx) }}

// newReqCtx returns a context for a request from intr (go-fuse's cancel
// channel), stop (closed at shutdown) and the caller's pid.
func newReqCtx(intr, stop <-chan struct{}, pid uint32) *reqCtx {
	c := reqCtxPool.Get().(*reqCtx)
	c.intr, c.stop, c.pid = intr, stop, pid
	return c
}

func (c *reqCtx) String() string { return "fs.reqCtx" }

// dying reports whether process (thread) pid has SIGKILL pending, or
// cannot be examined.
func dying(pid uint32) bool {
	if pid == 0 {
		return true
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	return sigkillPending(status)
}

// sigkillPending reads the SigPnd and ShdPnd masks of a /proc/PID/status
// text and reports whether SIGKILL (bit 8) is in either.
func sigkillPending(status []byte) bool {
	for _, key := range [][]byte{[]byte("\nSigPnd:"), []byte("\nShdPnd:")} {
		i := bytes.Index(status, key)
		if i < 0 {
			continue
		}
		rest := status[i+len(key):]
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			rest = rest[:j]
		}
		mask, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 16, 64)
		if err == nil && mask&(1<<8) != 0 {
			return true
		}
	}
	return false
}
