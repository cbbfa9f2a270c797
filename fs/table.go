package fs

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/devfsd/devfsd/dcache"
)

// nodeTable maps the node ids the kernel holds to their nodes, with the
// kernel's lookup count of each (the nlookup of FUSE's protocol). The node
// id of a node is its dcache inode number, so the table never allocates
// ids; it only remembers which ones the kernel may still use, so that a
// GETATTR, OPEN or SETATTR on a node id finds its node even after the node
// was unlinked, renamed or unregistered.
//
// Counting rule: every reply that hands the kernel an entry (LOOKUP,
// MKNOD, MKDIR, SYMLINK, LINK, CREATE, and each READDIRPLUS entry other
// than "." and "..") adds one before the reply is sent; FORGET and
// BATCH_FORGET subtract what the kernel says it forgot. An id whose count
// reaches zero leaves the table; the node itself is untouched — the
// namespace is the only truth, and a node never vanishes from the tree
// because the kernel forgot it. The root (id 1) is never counted and never
// leaves.
//
// # Layout
//
// Inode numbers are handed out by a counter (dcache), so the ids in use
// are dense: the table is an array of slots indexed by id, in pages of
// tablePage ids, found through a small directory (page index → page) that
// is replaced whole when a page comes or goes and is read with one atomic
// load. A request on a known id (GETATTR, OPEN, ...) takes no lock: get
// is a directory lookup and a load. A LOOKUP of an id already known is one
// compare-and-swap on its count. Only a count's moves between zero and
// nonzero take a lock, one of tableStripes mutexes chosen by id, so that
// neighbouring ids (names looked up in order) do not share one. (The
// previous table, 32 mutex-guarded maps, cost a cold LOOKUP a lock and two
// cache-missing probes of a large map, and a counter shared by all CPUs.)
//
// A page is dropped when its last known id is forgotten and the
// namespace's inode counter has passed the page's end (no new node can
// still be given one of its ids); the page holding the newest ids stays,
// so mknod+unlink churn does not allocate a page per node.
//
// # Why the counts are exact
//
// A count moves from zero (ref) or to zero (forget) only under its
// stripe's mutex; every other change is a compare-and-swap from a nonzero
// value to a nonzero value. So a zero transition never interleaves with
// another one of the same id, and a nonzero compare-and-swap either comes
// before a forget's move to zero (which then sees the larger count) or
// fails and retries. The node pointer is stored before the count leaves
// zero and cleared after it returns to zero, both under the mutex, so a
// nonzero count always has its node. A page's live count (its ids with a
// nonzero count) moves with the zero transitions; a page is dropped by
// moving live from 0 to -1 under dirMu, and a zero transition that finds
// -1 starts again from the directory, which no longer has that page.
// Because counts only add and subtract, a FORGET racing a LOOKUP of the
// same node gives the same result in either order, and the reply carrying
// a new count is written only after the count was added.
type nodeTable struct {
	root     *dcache.Node  // immutable
	frontier func() uint64 // the last inode number handed out; immutable

	dir     atomic.Pointer[map[uint64]*tablePage]
	dirMu   sync.Mutex // serialises replacing dir; a leaf
	stripes [tableStripes]tableStripe
}

const (
	pageBits     = 8
	pageIDs      = 1 << pageBits
	tableStripes = 64 // a power of two
)

type tableStripe struct {
	mu sync.Mutex // a leaf: nothing is called with it held
	_  [56]byte   // one stripe per cache line
}

type tablePage struct {
	index uint64       // id >> pageBits of its ids; immutable
	live  atomic.Int64 // ids with a nonzero count; -1 once dropped
	slots [pageIDs]tableSlot
}

type tableSlot struct {
	node    atomic.Pointer[dcache.Node]
	nlookup atomic.Uint64
}

func newNodeTable(root *dcache.Node) *nodeTable {
	t := &nodeTable{root: root, frontier: root.Namespace().LastIno}
	t.dir.Store(&map[uint64]*tablePage{})
	return t
}

// page returns the page holding id, making it if create is set (else nil
// if there is none). Making a page also drops the pages left without a
// known id once the inode counter had not yet passed them (see forget),
// so that such pages do not accumulate.
func (t *nodeTable) page(id uint64, create bool) *tablePage {
	if p := (*t.dir.Load())[id>>pageBits]; p != nil || !create {
		return p
	}
	t.dirMu.Lock()
	defer t.dirMu.Unlock()
	d := *t.dir.Load()
	if p := d[id>>pageBits]; p != nil {
		return p
	}
	p := &tablePage{index: id >> pageBits}
	nd := make(map[uint64]*tablePage, len(d)+1)
	last := t.frontier()
	for i, q := range d {
		if !t.passed(q, last) || !q.live.CompareAndSwap(0, -1) {
			nd[i] = q
		}
	}
	nd[p.index] = p
	t.dir.Store(&nd)
	return p
}

// passed says whether every id of p had been handed out by the time the
// inode counter read last.
func (t *nodeTable) passed(p *tablePage, last uint64) bool {
	return last >= p.index<<pageBits|(pageIDs-1)
}

// drop removes p from the directory if it is still without a known id.
func (t *nodeTable) drop(p *tablePage) {
	t.dirMu.Lock()
	defer t.dirMu.Unlock()
	if !p.live.CompareAndSwap(0, -1) {
		return // an id of p became known again meanwhile
	}
	nd := maps.Clone(*t.dir.Load())
	delete(nd, p.index)
	t.dir.Store(&nd)
}

// get returns the node the kernel calls id, or nil if the kernel holds no
// such id (a protocol error: the caller answers ESTALE). An id the table
// lost count of is still found if the namespace was imported from a
// predecessor (dcache.Namespace.ImportedNode): inode numbers are never
// reused, so the imported node of an id is the node of that id, whatever
// FORGET arithmetic says.
func (t *nodeTable) get(id uint64) *dcache.Node {
	if id == fuseRootID {
		return t.root
	}
	if p := t.page(id, false); p != nil {
		if n := p.slots[id&(pageIDs-1)].node.Load(); n != nil {
			return n
		}
	}
	return t.root.Namespace().ImportedNode(id)
}

// adopt counts c kernel lookups of n, which a predecessor handed the
// kernel (Server.Resume).
func (t *nodeTable) adopt(n *dcache.Node, c uint64) {
	if c == 0 || n.Ino() == fuseRootID {
		return
	}
	t.ref(n)
	if c > 1 {
		t.refMore(n.Ino(), c-1)
	}
}

// refMore adds c to the count of id, known (nonzero) already.
func (t *nodeTable) refMore(id, c uint64) {
	s := &t.page(id, false).slots[id&(pageIDs-1)]
	for {
		old := s.nlookup.Load()
		if s.nlookup.CompareAndSwap(old, old+c) {
			return
		}
	}
}

// each calls f with every id in the table (the root excluded), its node
// and count; a snapshot of a table that no request changes meanwhile.
func (t *nodeTable) each(f func(id uint64, n *dcache.Node, count uint64)) {
	for _, p := range *t.dir.Load() {
		for i := range p.slots {
			s := &p.slots[i]
			if c := s.nlookup.Load(); c != 0 {
				if n := s.node.Load(); n != nil {
					f(p.index<<pageBits|uint64(i), n, c)
				}
			}
		}
	}
}

// ref counts one more kernel lookup of n and returns its node id.
func (t *nodeTable) ref(n *dcache.Node) uint64 {
	id := n.Ino()
	if id == fuseRootID {
		return id
	}
	for {
		p := t.page(id, true)
		s := &p.slots[id&(pageIDs-1)]
		for c := s.nlookup.Load(); c != 0; c = s.nlookup.Load() {
			if s.nlookup.CompareAndSwap(c, c+1) {
				return id
			}
		}
		mu := &t.stripes[id&(tableStripes-1)].mu
		mu.Lock()
		if s.nlookup.Load() == 0 {
			if !p.acquire() {
				mu.Unlock()
				continue // p was dropped: find or make its successor
			}
			s.node.Store(n)
		}
		s.nlookup.Add(1)
		mu.Unlock()
		return id
	}
}

// acquire counts one more live id in p, unless p was dropped.
func (p *tablePage) acquire() bool {
	for l := p.live.Load(); l >= 0; l = p.live.Load() {
		if p.live.CompareAndSwap(l, l+1) {
			return true
		}
	}
	return false
}

// forget subtracts n kernel lookups of id. It reports whether the id left
// the table. Forgetting more than was counted (a kernel or table bug) drops
// the id rather than wrapping the count.
func (t *nodeTable) forget(id, n uint64) bool {
	if id == fuseRootID || n == 0 {
		return false
	}
	p := t.page(id, false)
	if p == nil {
		return false
	}
	s := &p.slots[id&(pageIDs-1)]
	for c := s.nlookup.Load(); c > n; c = s.nlookup.Load() {
		if s.nlookup.CompareAndSwap(c, c-n) {
			return false
		}
	}
	mu := &t.stripes[id&(tableStripes-1)].mu
	mu.Lock()
	var dropped bool
	for c := s.nlookup.Load(); c != 0; c = s.nlookup.Load() {
		if c > n {
			if s.nlookup.CompareAndSwap(c, c-n) {
				break
			}
			continue
		}
		if s.nlookup.CompareAndSwap(c, 0) {
			s.node.Store(nil)
			dropped = true
			break
		}
	}
	mu.Unlock()
	if dropped && p.live.Add(-1) == 0 && t.passed(p, t.frontier()) {
		t.drop(p)
	}
	return dropped
}

// lookups returns the kernel's lookup count of id (0 if unknown); tests
// and stats use it.
func (t *nodeTable) lookups(id uint64) uint64 {
	if p := t.page(id, false); p != nil {
		return p.slots[id&(pageIDs-1)].nlookup.Load()
	}
	return 0
}

// len returns the number of ids in the table, the root excluded.
func (t *nodeTable) len() int64 {
	var n int64
	for _, p := range *t.dir.Load() {
		n += max(p.live.Load(), 0)
	}
	return n
}

// pages returns the number of pages in the directory; tests use it.
func (t *nodeTable) pages() int { return len(*t.dir.Load()) }
