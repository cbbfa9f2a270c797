//go:build !mutant_r1

package rwsem

import "github.com/devfsd/devfsd/sync/waitq"

// R1 (DESIGN.md section 4): the grant is the last write to a waiter record.
// The wake list holds the records' wake handles, copied under waitMu; after
// waitMu is dropped only the handles are used, never the records, which
// their owners may already have reused.
// Model: wlAdd and issue in test/model/rwsem.pml; switch MUT_R1 is
// wakelist_mutant_r1.go.

// wakeLink adds nothing to a record in this build.
type wakeLink struct{}

// wakeList collects wake handles under waitMu.
type wakeList struct{ l waitq.WakeList }

// add collects the granted record w's handle. Preconditions: the Sem's waitMu held.
func (wl *wakeList) add(w *waiter) { wl.l.Add(w.tok) }

func (wl *wakeList) empty() bool { return wl.l.Len() == 0 }

// wake posts the handles. waitMu must not be held.
func (wl *wakeList) wake(h *testHooks) {
	if h == nil {
		wl.l.Wake()
		return
	}
	wl.l.WakeEach(h.callPosted)
}
