package rwsem

// testHooks are the points where the regression tests of DESIGN.md
// section 4 force an interleaving. A Sem's hooks are nil except in tests.
type testHooks struct {
	// getRecord and putRecord replace recordPool, so that a test can make
	// record reuse deterministic (a LIFO free list) and inspect records.
	getRecord func() *waiter
	putRecord func(*waiter)
	// enqueued is called under waitMu after a record was queued.
	enqueued func(*waiter)
	// beforeWake is called after waitMu was dropped and before the
	// collected wakeups are posted, when there are any.
	beforeWake func()
	// posted is called after each wakeup is posted.
	posted func()
	// grantedWhileCancelling is called by a waiter whose ctx ended but
	// whose wakeup is already in flight, before it consumes it (R2): a
	// reader or WaitForRelease waiter that found itself granted (sleep), or
	// a writer that had been woken (sleepWriter). One hook serves both: the
	// point forced is the same, "the wakeup is posted after we gave up".
	grantedWhileCancelling func()
}

// posted calls the posted hook if set.
func (h *testHooks) callPosted() {
	if h != nil && h.posted != nil {
		h.posted()
	}
}
