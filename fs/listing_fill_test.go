package fs

import (
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

// A listing from a later offset of a directory changed since one from
// offset 0 was served queues a listing notice, whoever made the change;
// without a change it queues none; a removed directory's marks go.
func TestListedFromNoticesAFillAChangeOvertook(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	own := dcache.Caller{Origin: dcache.OriginFUSE, Mount: nq.id}
	queued := func() int {
		nq.mu.Lock()
		defer nq.mu.Unlock()
		n := 0
		for _, x := range nq.q {
			if x.kind == noticeDir && x.child == 7 {
				n++
			}
		}
		return n
	}
	nq.ListedFrom(7, 0, 1)
	nq.ListedFrom(7, 5, 1) // no change since: nothing
	if n := queued(); n != 0 {
		t.Fatalf("unchanged directory: %d listing notices, want 0", n)
	}
	nq.ListedFrom(7, 0, 1)
	nq.Event(dcache.Event{Kind: dcache.KindDelete, Parent: 7, Name: "x", Ino: 9, Type: dcache.TypeChar, Caller: own})
	if n := queued(); n != 0 {
		t.Fatalf("the mount's own unlink queued %d listing notices before the continuation, want 0", n)
	}
	nq.ListedFrom(7, 5, 1)
	if n := queued(); n != 1 {
		t.Fatalf("continuation after a change: %d listing notices, want 1", n)
	}
	nq.take() // sent

	// A listing whose reply is delayed past a whole other listing: its
	// own continuation still queues a notice after the other's did.
	nq.ListedFrom(7, 0, 1)
	nq.Event(dcache.Event{Kind: dcache.KindDelete, Parent: 7, Name: "y", Ino: 10, Type: dcache.TypeChar, Caller: own})
	nq.ListedFrom(7, 0, 2) // thread 2 lists from 0 after the change
	nq.ListedFrom(7, 5, 2) // its continuation: 1's mark is still set
	if n := queued(); n != 1 {
		t.Fatalf("another listing's continuation after a change: %d listing notices, want 1", n)
	}
	nq.ListedFrom(7, 9, 2) // its end
	nq.ListingEnded(7, 2)
	nq.take()
	nq.ListedFrom(7, 5, 1) // the delayed listing's own continuation
	if n := queued(); n != 1 {
		t.Fatalf("the delayed listing's continuation: %d listing notices, want 1", n)
	}
	nq.take()
	nq.ListedFrom(7, 9, 1) // nothing changed since its notice
	if n := queued(); n != 0 {
		t.Fatalf("continuation with nothing changed since: %d listing notices, want 0", n)
	}
	nq.ListingEnded(7, 1)
	nq.mu.Lock()
	_, still := nq.fills[7]
	nq.mu.Unlock()
	if still {
		t.Fatal("ended listings still followed")
	}
	nq.ListedFrom(7, 0, 1)
	nq.Event(dcache.Event{Kind: dcache.KindDelete, Parent: 1, Name: "d", Ino: 7, Type: dcache.TypeDir, Caller: own})
	nq.mu.Lock()
	_, listed := nq.listed[7]
	_, filled := nq.fills[7]
	nq.mu.Unlock()
	if listed || filled {
		t.Fatalf("removed directory still marked: listed %v, fills %v", listed, filled)
	}
}
