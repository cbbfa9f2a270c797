package fs

import (
	"fmt"
	"sync"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

// mkMany registers n character devices named prefix0.. and returns them,
// in inode order.
func mkMany(t *testing.T, ns *dcache.Namespace, prefix string, n int) []*dcache.Node {
	t.Helper()
	out := make([]*dcache.Node, n)
	for i := range out {
		out[i] = mk(t, ns, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// A page of ids leaves the directory when its last id is forgotten, once
// the inode counter has passed it; the page holding the newest ids stays
// (churn would otherwise make a page per node), and is dropped when a
// later page is made after it emptied.
func TestNodeTablePagesComeAndGo(t *testing.T) {
	tab, ns := newTable(t)
	nodes := mkMany(t, ns, "n", 3*pageIDs)
	for _, n := range nodes {
		tab.ref(n)
	}
	want := int(nodes[len(nodes)-1].Ino()>>pageBits-nodes[0].Ino()>>pageBits) + 1
	if tab.pages() != want || tab.len() != int64(len(nodes)) {
		t.Fatalf("%d pages, %d ids after %d refs; want %d pages", tab.pages(), tab.len(), len(nodes), want)
	}
	for _, n := range nodes {
		if !tab.forget(n.Ino(), 1) {
			t.Fatalf("forget of %d did not drop it", n.Ino())
		}
	}
	// Only the page of the newest inode number is left, empty.
	if tab.pages() != 1 || tab.len() != 0 {
		t.Fatalf("%d pages, %d ids after forgetting all; want 1 page, 0 ids", tab.pages(), tab.len())
	}
	// A node made in the next page makes that page and sweeps the empty
	// one it passed.
	var next *dcache.Node
	for next == nil || next.Ino()>>pageBits == nodes[len(nodes)-1].Ino()>>pageBits {
		next = mk(t, ns, fmt.Sprintf("m%d", ns.LastIno()))
	}
	tab.ref(next)
	if tab.pages() != 1 || tab.get(next.Ino()) != next {
		t.Fatalf("%d pages after a ref in a new page; want 1", tab.pages())
	}
	// An id of a dropped page is unknown, and known again after a ref.
	old := nodes[0]
	if tab.get(old.Ino()) != nil || tab.lookups(old.Ino()) != 0 || tab.forget(old.Ino(), 1) {
		t.Fatal("an id of a dropped page is still known")
	}
	tab.ref(old)
	if tab.get(old.Ino()) != old || tab.lookups(old.Ino()) != 1 || tab.pages() != 2 {
		t.Fatalf("re-ref of an id of a dropped page: get %v, lookups %d, %d pages",
			tab.get(old.Ino()), tab.lookups(old.Ino()), tab.pages())
	}
}

// Each worker holds a lookup of its node between ref and forget, so
// get must find the node then, whatever the other workers do to the same
// ids: counts of the same id moving to and from zero at once, and pages
// dropped and made again under the workers' feet (every id here belongs
// to a page the inode counter has passed). At the end every count is
// zero and every page gone.
func TestHammerNodeTableZeroTransitionsKeepNodes(t *testing.T) {
	tab, ns := newTable(t)
	nodes := mkMany(t, ns, "n", 2*pageIDs)
	for ns.LastIno()>>pageBits <= nodes[len(nodes)-1].Ino()>>pageBits {
		mk(t, ns, fmt.Sprintf("pad%d", ns.LastIno()))
	}
	// Few ids, one per page, so that workers collide: most forgets
	// move a count to zero while other workers' refs move it from zero.
	ids := []*dcache.Node{nodes[0], nodes[len(nodes)-1]}
	const workers, per = 8, 20000
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				n := ids[(i*7+w)%len(ids)]
				if tab.ref(n) != n.Ino() {
					errs <- "ref returned another id"
					return
				}
				if got := tab.get(n.Ino()); got != n {
					errs <- fmt.Sprintf("get(%d) = %v while a lookup of it is held", n.Ino(), got)
					return
				}
				tab.forget(n.Ino(), 1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	for _, n := range ids {
		if c := tab.lookups(n.Ino()); c != 0 {
			t.Fatalf("id %d left with count %d", n.Ino(), c)
		}
	}
	if tab.len() != 0 || tab.pages() != 0 {
		t.Fatalf("%d ids, %d pages left; want none", tab.len(), tab.pages())
	}
}
