package fs

import (
	"sync"

	"github.com/devfsd/devfsd/dcache"
)

// handleTable holds the open regular files: a file handle (OPEN, CREATE)
// names the *dcache.Node it was opened on, so reads and writes through it
// keep working after the node is unlinked — the node stays a valid Go
// object with its content for as long as a handle holds it. Directories
// get no handle (their listing position is the readdir cookie the kernel
// passes back), and device nodes, fifos and sockets are opened by the
// kernel itself and never reach the server.
type handleTable struct {
	mu sync.Mutex // a leaf
	// Guarded by mu:
	next uint64
	m    map[uint64]*dcache.Node
}

func newHandleTable() *handleTable {
	return &handleTable{m: make(map[uint64]*dcache.Node)}
}

// open returns a new handle for n, counted open on n (dcache.Node.Open:
// an unlinked file's content lives until its last handle goes). Handles
// start at 1 and are never reused within a server.
func (h *handleTable) open(n *dcache.Node) uint64 {
	n.Open()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	h.m[h.next] = n
	return h.next
}

// get returns the node of handle fh, or nil.
func (h *handleTable) get(fh uint64) *dcache.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[fh]
}

// release drops handle fh, and closes its node (after h.mu: the node's
// lock is not under it).
func (h *handleTable) release(fh uint64) {
	h.mu.Lock()
	n, ok := h.m[fh]
	delete(h.m, fh)
	h.mu.Unlock()
	if ok {
		n.Close()
	}
}

// len returns the number of open handles.
func (h *handleTable) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}
