package fs

import (
	"context"
	"sync"
	"time"
)

// reqCtx is the context of one FUSE request that may wait (a lookup on a
// loader, a namespace change on a lookup in flight). It is done when the
// kernel interrupts the request (FUSE INTERRUPT closes the request's
// cancel channel) or when the server begins to shut down, and its Err is
// then context.Canceled, which package lookup answers with EINTR.
//
// Most requests never wait, and the layers below look at Done only on
// their slow paths, so the channel that merges the two causes — and the
// goroutine that watches them — is made on the first call to Done, never
// on the fast path. release, deferred by the handler, ends that goroutine.
type reqCtx struct {
	intr <-chan struct{} // the request's cancel channel (go-fuse)
	stop <-chan struct{} // closed when shutdown begins

	once sync.Once
	done chan struct{} // made by the first Done
	fin  chan struct{} // closed by release
}

var _ context.Context = (*reqCtx)(nil)

func (c *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *reqCtx) Value(any) any               { return nil }

func (c *reqCtx) Err() error {
	select {
	case <-c.intr:
		return context.Canceled
	case <-c.stop:
		return context.Canceled
	default:
		return nil
	}
}

func (c *reqCtx) Done() <-chan struct{} {
	c.once.Do(func() {
		c.done = make(chan struct{})
		c.fin = make(chan struct{})
		go func() {
			select {
			case <-c.intr:
			case <-c.stop:
			case <-c.fin:
				return
			}
			close(c.done)
		}()
	})
	return c.done
}

// release ends the watcher, if Done made one. Call it once, when the
// request is answered.
func (c *reqCtx) release() {
	c.once.Do(func() {}) // a Done after release makes no watcher
	if c.fin != nil {
		close(c.fin)
	}
}

func (c *reqCtx) String() string { return "fs.reqCtx" }
