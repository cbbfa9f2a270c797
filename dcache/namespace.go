package dcache

import (
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options configures a Namespace. Zero fields take the defaults.
type Options struct {
	// Generation is the generation number of every inode number; by
	// default the namespace's creation time in nanoseconds, so that two
	// daemon runs never hand out the same (ino, gen) pair.
	Generation uint64
	// MaxNodes bounds the linked nodes, the root included (ENOSPC).
	// Default 65536.
	MaxNodes int64
	// MaxDepth bounds the number of path components of any node (ENOSPC).
	// Default 64.
	MaxDepth int
	// MaxFileSize bounds a regular file's size (EFBIG). Default
	// MaxFileSizeLimit, the kernel's own limit: files are sparse, so a
	// size costs nothing until it is written (file.go).
	MaxFileSize int64
	// MaxBytes bounds the content stored by all regular files that are
	// linked or open (ENOSPC): what their pages hold, holes excluded.
	// Default 64 MiB.
	MaxBytes int64
	// NegativeTTL is how long a miss stays cached. Default 1 s; negative
	// means no negative caching.
	NegativeTTL time.Duration
	// Now is the clock. Default time.Now. Tests inject one.
	Now func() time.Time
	// Sink receives events; nil drops them.
	Sink Sink
	// RegisterHook, if not nil, may change the Spec of every node that
	// Register creates (the node and each missing parent, which are given
	// as a directory of mode 0755 owned by root) before it is created; path
	// is the node's clean path. Package state uses it to re-apply the
	// attributes a user gave a registered device before a restart, so that
	// nobody ever sees the device with other ones, and to give a node (a
	// parent made on the way too) the inode number it had before a
	// crash (Spec.Ino). It is called with a
	// directory mu held: it must not block, and must not call into dcache
	// or lookup; a map lookup under a leaf mutex of its own is what it is
	// for.
	RegisterHook func(path string, spec Spec) Spec
	// RootMode, RootUid, RootGid: the root directory's attributes.
	// RootMode defaults to 0755 (set RootModeSet for an explicit 0).
	RootMode    uint32
	RootModeSet bool
	RootUid     uint32
	RootGid     uint32
}

// Namespace is one in-memory tree. Its methods are safe for concurrent use.
type Namespace struct {
	// Immutable after New:
	opts     Options
	gen      uint64
	maxDepth int
	root     *Node
	now      func() time.Time

	inos   atomic.Uint64                 // last inode number handed out
	nodes  atomic.Int64                  // linked nodes
	bytes  atomic.Int64                  // content bytes stored by linked or open regular files
	byType [TypeRegular + 1]atomic.Int64 // linked nodes by type, for metrics
	// negTTL is how long a miss stays cached, in nanoseconds (<= 0: not
	// at all); SetNegativeTTL changes it while the namespace is in use.
	negTTL atomic.Int64

	// renameMu serialises cross-directory renames, so that the tree's shape
	// is stable while one checks ancestry and locks two unrelated dirs.
	// After every sem, before every dir mu.
	renameMu sync.Mutex

	events eventQueue

	// imported is Import's nodes by inode number; immutable after
	// Import, nil for a namespace made by New.
	imported map[uint64]*Node
}

// New returns a namespace holding only its root directory (inode 1).
func New(opts Options) *Namespace {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Generation == 0 {
		opts.Generation = uint64(time.Now().UnixNano())
	}
	if opts.MaxNodes <= 0 {
		opts.MaxNodes = 65536
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = 64
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = MaxFileSizeLimit
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 64 << 20
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = time.Second
	}
	if !opts.RootModeSet && opts.RootMode == 0 {
		opts.RootMode = 0755
	}
	ns := &Namespace{opts: opts, gen: opts.Generation, maxDepth: opts.MaxDepth, now: opts.Now}
	ns.events.sink = opts.Sink
	ns.negTTL.Store(int64(opts.NegativeTTL))
	ns.nodes.Store(1)
	ns.root = ns.newNode(TypeDir, opts.RootMode, opts.RootUid, opts.RootGid, ns.now())
	ns.root.nlink = 2
	ns.byType[TypeDir].Store(1)
	return ns
}

// RaiseLastIno raises the inode counter to last if it is below: inode
// numbers up to last are never handed out by this namespace. A restart
// without an export calls it with the highest number the previous process
// may have handed out (package state), so that no node id the kernel may
// still hold names a new node.
func (ns *Namespace) RaiseLastIno(last uint64) {
	for c := ns.inos.Load(); c < last; c = ns.inos.Load() {
		if ns.inos.CompareAndSwap(c, last) {
			return
		}
	}
}

// Root returns the root directory.
func (ns *Namespace) Root() *Node { return ns.root }

// LastIno returns the last inode number handed out: every node made so far
// has an inode number at most this, and every node made later a larger one.
func (ns *Namespace) LastIno() uint64 { return ns.inos.Load() }

// NegativeTTL returns how long a miss stays cached (0: not at all), for
// the entry timeout of a negative FUSE reply.
func (ns *Namespace) NegativeTTL() time.Duration {
	return max(time.Duration(ns.negTTL.Load()), 0)
}

// SetNegativeTTL changes how long a miss stays cached (<= 0: not at all)
// for the misses cached from now on, and drops every cached miss that
// would outlive the new time (all of them when caching is turned off),
// queueing an EXPIRE event for each so that the kernel forgets it too. It
// returns how many it dropped. A daemon calls it when its configuration is
// reloaded. Preconditions: no dcache mutex held.
func (ns *Namespace) SetNegativeTTL(ttl time.Duration) int {
	if ttl == 0 {
		ttl = -1
	}
	ns.negTTL.Store(int64(ttl))
	limit := time.Time{} // drop all
	if ttl > 0 {
		limit = ns.now().Add(ttl)
	}
	return ns.DropNegatives(limit)
}

// DropNegatives drops every cached miss that expires after limit (the
// zero time: every one), queueing an EXPIRE event for each (the kernel is
// told to forget its negative entry), and returns how many. A daemon
// whose loader changed calls it with the zero time: a name the old loader
// could not provide may be one the new loader can. Positive entries are
// untouched. Preconditions: no dcache mutex held.
func (ns *Namespace) DropNegatives(limit time.Time) int {
	dropped := 0
	stack := []*Node{ns.root}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d.dir.mu.Lock()
		for name, exp := range d.dir.negative {
			if limit.IsZero() || exp.After(limit) {
				d.expireLocked(name)
				dropped++
			}
		}
		for _, de := range d.dir.children {
			if de.node.dir != nil {
				stack = append(stack, de.node)
			}
		}
		d.dir.mu.Unlock()
	}
	ns.events.flush()
	return dropped
}

// LastSeq returns the sequence number of the last event queued: every
// change that returned before the call has an event numbered at most
// this. A consumer that must know a change was handled (package state,
// before a FUSE reply) waits until its sink has seen this number.
func (ns *Namespace) LastSeq() uint64 { return ns.events.lastSeq() }

// NodesByType returns the number of linked nodes of each type, indexed by
// Type (index 0 is unused).
func (ns *Namespace) NodesByType() [TypeRegular + 1]int64 {
	var out [TypeRegular + 1]int64
	for i := range ns.byType {
		out[i] = ns.byType[i].Load()
	}
	return out
}

// Now returns the namespace clock's time.
func (ns *Namespace) Now() time.Time { return ns.now() }

// Statfs reports the node count, content bytes and limits.
func (ns *Namespace) Statfs() Statfs {
	return Statfs{
		Nodes: uint64(ns.nodes.Load()), MaxNodes: uint64(ns.opts.MaxNodes),
		Bytes: uint64(ns.bytes.Load()), MaxBytes: uint64(ns.opts.MaxBytes),
		NameMax: NameMax,
	}
}

// Flush delivers queued events to the sink. Preconditions: no dcache mutex
// held. Every dcache method that changes the namespace flushes on return;
// a caller of the ...Locked methods flushes once it released mu (and, in
// package lookup, sem).
func (ns *Namespace) Flush() { ns.events.flush() }

// EmitLookup queues and delivers a LOOKUP event for name in dir, whose path
// the caller read once (dirPath, from dir.Path()) for the whole miss,
// unless the sink wants none now (LookupSink). Preconditions: no dcache
// mutex held.
func (ns *Namespace) EmitLookup(dir *Node, dirPath, name string, c Caller) {
	if !WantsLookups(ns.events.sink) {
		return
	}
	ns.events.push(Event{Kind: KindLookup, Path: joinPath(dirPath, name),
		Parent: dir.ino, Name: name, Caller: c})
	ns.events.flush()
}

// newNode allocates a node with a fresh inode number. It is not linked and
// not counted.
func (ns *Namespace) newNode(t Type, mode, uid, gid uint32, now time.Time) *Node {
	return ns.newNodeIno(0, t, mode, uid, gid, now)
}

// newNodeIno is newNode with inode number ino, if not zero (Spec.Ino),
// which raises the counter to it if below.
func (ns *Namespace) newNodeIno(ino uint64, t Type, mode, uid, gid uint32, now time.Time) *Node {
	if ino == 0 {
		ino = ns.inos.Add(1)
	} else {
		ns.RaiseLastIno(ino)
	}
	n := &Node{ns: ns, ino: ino, typ: t, mode: mode & PermMask,
		uid: uid, gid: gid, nlink: 1}
	for i := range numTimes {
		n.setTimeLocked(i, now)
	}
	if t == TypeDir {
		n.dir = &dirState{children: make(map[string]*dentry), nextCookie: 2}
		n.nlink = 2
	}
	return n
}

// reserveNode counts one more linked node, or fails with ENOSPC.
func (ns *Namespace) reserveNode() bool {
	for {
		c := ns.nodes.Load()
		if c >= ns.opts.MaxNodes {
			return false
		}
		if ns.nodes.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

// chargeBytes counts delta more content bytes, or fails.
func (ns *Namespace) chargeBytes(delta int64) bool {
	for {
		c := ns.bytes.Load()
		if c+delta > ns.opts.MaxBytes {
			return false
		}
		if ns.bytes.CompareAndSwap(c, c+delta) {
			return true
		}
	}
}

// splitPath splits a slash-separated path relative to the root; leading,
// trailing and repeated slashes are ignored. Every component must be a
// valid name.
func splitPath(op, path string) ([]string, error) {
	var parts []string
	for _, p := range strings.Split(path, "/") {
		if p == "" {
			continue
		}
		if err := CheckName(p); err != nil {
			return nil, pathErr(op, path, errnoOf(err))
		}
		parts = append(parts, p)
	}
	return parts, nil
}

func errnoOf(err error) syscall.Errno {
	for {
		switch e := err.(type) {
		case syscall.Errno:
			return e
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		default:
			return syscall.EIO
		}
	}
}

// Resolve walks path from the root without asking the loader and returns
// the node it names ("" is the root). Symlinks are not followed. ENOENT for
// a missing component, ENOTDIR for a non-directory one.
func (ns *Namespace) Resolve(path string) (*Node, error) {
	parts, err := splitPath("resolve", path)
	if err != nil {
		return nil, err
	}
	n := ns.root
	for _, p := range parts {
		if n.dir == nil {
			return nil, pathErr("resolve", path, syscall.ENOTDIR)
		}
		n.dir.mu.Lock()
		de := n.dir.children[p]
		n.dir.mu.Unlock()
		if de == nil {
			return nil, pathErr("resolve", path, syscall.ENOENT)
		}
		n = de.node
	}
	return n, nil
}

// registerRetries bounds how often Register restarts a walk that met a
// directory removed under it.
const registerRetries = 16

// Register creates the node spec describes at path, creating missing parent
// directories (0755, owned by root, as devfs did), the devfs_register
// analogue. It
// is EEXIST if the name is taken, ENOTDIR if a parent is not a directory. It
// queues a REGISTER event for each created directory and for the node, and
// drops any negative entry for the names it creates. It takes only mu, one
// directory at a time.
func (ns *Namespace) Register(path string, spec Spec, c Caller) (*Node, error) {
	n, err := ns.register(path, spec, c)
	ns.events.flush()
	return n, err
}

func (ns *Namespace) register(path string, spec Spec, c Caller) (*Node, error) {
	parts, err := splitPath("register", path)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, pathErr("register", path, syscall.EEXIST)
	}
	if spec.Type < TypeDir || spec.Type > TypeRegular || spec.Ino == 1 {
		return nil, pathErr("register", path, syscall.EINVAL)
	}
	if len(parts) > ns.maxDepth {
		return nil, pathErr("register", path, syscall.ENOSPC)
	}
retry:
	for attempt := 0; ; attempt++ {
		if attempt == registerRetries {
			return nil, pathErr("register", path, syscall.ENOENT)
		}
		dir := ns.root
		for i, p := range parts {
			last := i == len(parts)-1
			ds := dir.dir
			now := ns.now()
			ds.mu.Lock()
			if ds.dead {
				ds.mu.Unlock()
				continue retry
			}
			if de := ds.children[p]; de != nil {
				ds.mu.Unlock()
				if last {
					return nil, pathErr("register", path, syscall.EEXIST)
				}
				if de.node.dir == nil {
					return nil, pathErr("register", path, syscall.ENOTDIR)
				}
				dir = de.node
				continue
			}
			s := Spec{Type: TypeDir, Mode: 0755}
			if last {
				s = spec
			}
			if h := ns.opts.RegisterHook; h != nil {
				s = h(strings.Join(parts[:i+1], "/"), s)
				if s.Type != spec.Type && last || s.Type != TypeDir && !last {
					ds.mu.Unlock() // a recovered panic must leave no lock held
					panic("dcache: RegisterHook changed a node's type")
				}
			}
			// s.Ino: the caller's for the node itself (a parent made on
			// the way has none of its own), or what RegisterHook gave.
			n, err := dir.createLocked(p, s.Ino, s.Type, s.Mode, s.Uid, s.Gid,
				s.Major, s.Minor, s.Target, KindRegister, c, now, s.Atime, s.Mtime)
			ds.mu.Unlock()
			if err != nil {
				return nil, pathErr("register", path, errnoOf(err))
			}
			if last {
				return n, nil
			}
			dir = n
		}
	}
}

// Unregister removes the node at path, a directory with everything under
// it, queueing an UNREGISTER event per node, children before their
// directory. ENOENT if nothing is there.
func (ns *Namespace) Unregister(path string, c Caller) error {
	err := ns.unregister(path, c)
	ns.events.flush()
	return err
}

func (ns *Namespace) unregister(path string, c Caller) error {
	parts, err := splitPath("unregister", path)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return pathErr("unregister", path, syscall.EBUSY)
	}
	parentPath := strings.Join(parts[:len(parts)-1], "/")
	name := parts[len(parts)-1]
	parent, err := ns.Resolve(parentPath)
	if err != nil {
		return pathErr("unregister", path, errnoOf(err))
	}
	if parent.dir == nil {
		return pathErr("unregister", path, syscall.ENOTDIR)
	}
	now := ns.now()
	pd := parent.dir
	pd.mu.Lock()
	de := pd.children[name]
	if de == nil {
		pd.mu.Unlock()
		return pathErr("unregister", path, syscall.ENOENT)
	}
	victim := de.node
	if victim.dir == nil {
		victim.attrMu.Lock()
		ev := victim.eventLocked(KindUnregister, c)
		victim.attrMu.Unlock()
		ev.Parent, ev.Name, ev.Path = parent.ino, name, parent.childPath(name)
		parent.removeLocked(de, now)
		victim.dropLink(now)
		ns.events.push(ev)
		pd.mu.Unlock()
		return nil
	}
	// A directory: detach it, then empty the detached subtree one mu at a
	// time (never two held: see the lock order).
	victim.attrMu.Lock()
	ev := victim.eventLocked(KindUnregister, c)
	victim.attrMu.Unlock()
	ev.Parent, ev.Name, ev.Path = parent.ino, name, parent.childPath(name)
	parent.removeLocked(de, now)
	pd.mu.Unlock()
	ns.unregisterTree(victim, ev.Path, c, now)
	victim.dropLink(now)
	ns.events.push(ev)
	return nil
}

// unregisterTree marks dir dead and removes everything below it, queueing
// UNREGISTER events children first. Preconditions: dir is detached from
// the tree; no mu held.
func (ns *Namespace) unregisterTree(dir *Node, path string, c Caller, now time.Time) {
	ds := dir.dir
	ds.mu.Lock()
	ds.dead = true
	var kids []*dentry
	for _, de := range ds.children {
		kids = append(kids, de)
	}
	for _, de := range kids {
		dir.removeLocked(de, now)
	}
	ds.mu.Unlock()
	for _, de := range kids {
		child := de.node
		child.attrMu.Lock()
		ev := child.eventLocked(KindUnregister, c)
		child.attrMu.Unlock()
		ev.Parent, ev.Name, ev.Path = dir.ino, de.name, path+"/"+de.name
		if child.dir != nil {
			ns.unregisterTree(child, ev.Path, c, now)
		}
		child.dropLink(now)
		ns.events.push(ev)
	}
}
