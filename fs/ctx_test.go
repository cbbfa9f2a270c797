package fs

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A context released without being waited on is reused, and a reused
// context starts clean: no done channel, no watcher, the new request's
// channels and pid.
func TestReqCtxReuseStartsClean(t *testing.T) {
	for i := 0; i < 100; i++ {
		stop := make(chan struct{})
		c := newReqCtx(nil, stop, 7)
		if c.pid != 7 || c.done != nil || c.fin != nil {
			t.Fatalf("cycle %d: new context not clean: pid %d done %v fin %v", i, c.pid, c.done, c.fin)
		}
		if i%2 == 0 {
			c.release() // unused: back to the pool
			continue
		}
		if err := c.Err(); err != nil {
			t.Fatalf("cycle %d: Err before stop: %v", i, err)
		}
		close(stop)
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("cycle %d: Done not closed after stop", i)
		}
		if err := c.Err(); err != context.Canceled {
			t.Fatalf("cycle %d: Err after stop: %v, want context.Canceled", i, err)
		}
		c.release() // used: left to the collector, its watcher ended
	}
}

// Contexts taken and released from many goroutines, some waited on and
// some not, never share state (run with -race): each sees only its own
// stop channel.
func TestReqCtxPoolNoSharing(t *testing.T) {
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				stop := make(chan struct{})
				c := newReqCtx(nil, stop, uint32(g))
				if c.pid != uint32(g) || c.stop != stop {
					t.Errorf("goroutine %d: context carries another request's fields", g)
					return
				}
				if i%3 == 0 {
					_ = c.Done() // starts a watcher; release ends it
				}
				if i%5 == 0 {
					close(stop)
					if c.Err() != context.Canceled {
						t.Errorf("goroutine %d: Err after its stop closed is not Canceled", g)
						return
					}
				}
				c.release()
			}
		}()
	}
	wg.Wait()
}
