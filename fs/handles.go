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
//
// A handle is the node's inode number, so that it means the same to a
// successor process that serves the connection after this one (resume.go):
// the table counts the opens of each node it was given (opens); a handle
// it does not hold is one a predecessor gave, and names the node of that
// number.
type handleTable struct {
	mu sync.Mutex // a leaf
	// Guarded by mu:
	m     map[uint64]*dcache.Node
	opens map[uint64]int
	n     int // sum of opens
}

func newHandleTable() *handleTable {
	return &handleTable{m: make(map[uint64]*dcache.Node), opens: make(map[uint64]int)}
}

// open returns the handle for n, counted open on n (dcache.Node.Open: an
// unlinked file's content lives until its last handle goes).
func (h *handleTable) open(n *dcache.Node) uint64 {
	n.Open()
	fh := n.Ino()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[fh] = n
	h.opens[fh]++
	h.n++
	return fh
}

// get returns the node of handle fh, or nil if this table gave no such
// handle.
func (h *handleTable) get(fh uint64) *dcache.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[fh]
}

// release drops one open of handle fh, and closes its node (after h.mu:
// the node's lock is not under it). It reports false if the table holds
// no open of fh.
func (h *handleTable) release(fh uint64) bool {
	h.mu.Lock()
	n, ok := h.m[fh]
	if ok {
		h.n--
		if h.opens[fh]--; h.opens[fh] == 0 {
			delete(h.opens, fh)
			delete(h.m, fh)
		}
	}
	h.mu.Unlock()
	if ok {
		n.Close()
	}
	return ok
}

// len returns the number of open handles.
func (h *handleTable) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
