//go:build mutant_r1

package rwsem

// MUTANT R1: the 2004 rwsem-scale bug. The wake list is threaded through
// the waiter records themselves and walked after waitMu is dropped: the
// waker reads (and clears) a record's link after posting its wakeup, when
// the woken waiter may already have returned and reused the record.
// Model: switch MUT_R1 in test/model/rwsem.pml.

type wakeLink struct{ wakeNext *waiter }

type wakeList struct{ head, tail *waiter }

func (wl *wakeList) add(w *waiter) {
	if wl.tail != nil {
		wl.tail.wakeNext = w
	} else {
		wl.head = w
	}
	wl.tail = w
}

func (wl *wakeList) empty() bool { return wl.head == nil }

func (wl *wakeList) wake(h *testHooks) {
	for w := wl.head; w != nil; {
		w.tok.Post()
		h.callPosted()
		next := w.wakeNext // BUG: w may be somebody else's record by now
		w.wakeNext = nil   // BUG: a write after the grant
		w = next
	}
	wl.head, wl.tail = nil, nil
}
