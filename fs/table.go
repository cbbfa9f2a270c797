package fs

import (
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
// Because counts only add and subtract, a FORGET racing a LOOKUP of the
// same node gives the same result in either order: each shard's mutex
// makes each change atomic, and the reply carrying a new count is written
// only after the count was added.
type nodeTable struct {
	root   *dcache.Node // immutable
	shards [tableShards]tableShard
	known  atomic.Int64 // ids in the table (the root excluded)
}

const tableShards = 32 // a power of two

type tableShard struct {
	mu sync.Mutex // a leaf: nothing is called with it held
	// Guarded by mu:
	m map[uint64]tableEntry
	_ [40]byte // keep neighbouring shards' mutexes off one cache line
}

type tableEntry struct {
	node    *dcache.Node
	nlookup uint64
}

func newNodeTable(root *dcache.Node) *nodeTable {
	t := &nodeTable{root: root}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]tableEntry)
	}
	return t
}

func (t *nodeTable) shard(id uint64) *tableShard {
	return &t.shards[id&(tableShards-1)]
}

// get returns the node the kernel calls id, or nil if the kernel holds no
// such id (a protocol error: the caller answers ESTALE).
func (t *nodeTable) get(id uint64) *dcache.Node {
	if id == fuseRootID {
		return t.root
	}
	s := t.shard(id)
	s.mu.Lock()
	e := s.m[id]
	s.mu.Unlock()
	return e.node
}

// ref counts one more kernel lookup of n and returns its node id.
func (t *nodeTable) ref(n *dcache.Node) uint64 {
	id := n.Ino()
	if id == fuseRootID {
		return id
	}
	s := t.shard(id)
	s.mu.Lock()
	e, ok := s.m[id]
	if !ok {
		e.node = n
		t.known.Add(1)
	}
	e.nlookup++
	s.m[id] = e
	s.mu.Unlock()
	return id
}

// forget subtracts n kernel lookups of id. It reports whether the id left
// the table. Forgetting more than was counted (a kernel or table bug) drops
// the id rather than wrapping the count.
func (t *nodeTable) forget(id, n uint64) bool {
	if id == fuseRootID {
		return false
	}
	s := t.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[id]
	if !ok {
		return false
	}
	if n >= e.nlookup {
		delete(s.m, id)
		t.known.Add(-1)
		return true
	}
	e.nlookup -= n
	s.m[id] = e
	return false
}

// lookups returns the kernel's lookup count of id (0 if unknown); tests
// and stats use it.
func (t *nodeTable) lookups(id uint64) uint64 {
	s := t.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id].nlookup
}

// len returns the number of ids in the table, the root excluded.
func (t *nodeTable) len() int64 { return t.known.Load() }
