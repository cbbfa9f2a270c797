package lookup

import (
	"context"
	"fmt"
	iofs "io/fs"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/sync/refcount"
)

// Loader loads what provides name in directory dir (a path relative to the
// namespace root, "" for the root), registering nodes through
// dcache.Namespace.Register while it runs. It returns when done: nil or an
// error, the lookup then looks at the namespace again either way. Load
// must honour ctx (it ends at the deadline), be safe for concurrent use,
// and must not look names up through the mount unless its lookups are
// recognised as the loader's (see Options.IsLoader).
type Loader interface {
	Load(ctx context.Context, dir, name string, caller dcache.Caller) error
}

// LoaderFunc adapts a function to a Loader.
type LoaderFunc func(ctx context.Context, dir, name string, caller dcache.Caller) error

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, dir, name string, caller dcache.Caller) error {
	return f(ctx, dir, name, caller)
}

// Namer may be implemented by a Loader to say which loader a load is about
// to ask ("helper", "builtin", ...), for metrics and the audit log
// (MissInfo.Loader). It is asked once per load, when the load starts.
type Namer interface {
	LoaderName() string
}

// Decliner may be implemented by a Loader that can tell at once, without
// blocking or side effects, that it has nothing for a name (the built-in
// catalogue's index; modload.Decliner is the same method). On a miss with
// no load of the name in flight, the lookup releases its locks and asks
// Declines (no lock is held while calling any part of the loader); a
// declined miss then ends on the caller's goroutine without a record —
// LOOKUP emitted, the decision counted and observed, the miss cached
// negatively — as a load that returned ENOENT at once would end, but with
// no goroutine, timer, channel, record or second look under sem. If the
// loader does not decline, the lookup starts over at step 1 and runs the
// miss protocol in full. A declined miss has nothing to wait on, so it
// cannot take part in the R4 interleaving.
type Decliner interface {
	Declines(dir, name string) bool
}

// ErrDeclined is a load's outcome when the loader declined the name
// (Decliner).
var ErrDeclined = fmt.Errorf("loader has nothing for the name: %w", syscall.ENOENT)

// DefaultTimeout bounds a load and every wait by default.
const DefaultTimeout = 5 * time.Second

// Options configures a Resolver.
type Options struct {
	// Timeout bounds each load and each wait on one. Default 5 s.
	Timeout time.Duration
	// IsLoader recognises the loader's own requests (by pid and
	// descendants, or by the peer credential of its socket), which bypass
	// every wait. A dcache.Caller with Origin dcache.OriginLoader bypasses
	// whatever IsLoader says. Nil: only that origin. It is called with
	// no directory mu held (a change may hold its directory sems), at
	// most once per request, and only where its answer
	// changes what the request does: a miss, a lookup, listing or change
	// that cannot take its directory's sem at once, a change of a name
	// whose load is in flight (see the package doc); never on a hit.
	IsLoader func(dcache.Caller) bool
	// Observe, if not nil, is told of every load once it has ended (the
	// miss decision: what was asked, of whom, with what result, how
	// long), after the record was finished, with no lock held, from the
	// goroutine that finished it. It must not block for long: lookups of
	// the name wait for nothing, but the caller that owned the load does
	// not answer until it returns.
	Observe func(MissInfo)
}

// MissInfo describes one load: a lookup that missed and asked the loader.
type MissInfo struct {
	Dir, Name string        // the directory's path ("" for the root) and the name
	Caller    dcache.Caller // who missed first (the record's owner)
	Loader    string        // Namer's answer when the load started, or ""
	// Result is ResultFound (the name exists afterwards), ResultAbsent
	// (the loader finished without providing it), ResultTimeout (the
	// deadline passed first) or ResultError (the loader failed and the
	// name is absent).
	Result   string
	Err      error         // the loader's error, if any
	Duration time.Duration // from the miss to the end of the load
	Waiters  int           // other lookups and changes that waited on it
}

// The results of a load (MissInfo.Result).
const (
	ResultFound   = "found"
	ResultAbsent  = "absent"
	ResultTimeout = "timeout"
	ResultError   = "error"
)

// Resolver runs the lookup protocol over one namespace. Its methods are
// safe for concurrent use.
type Resolver struct {
	// Immutable after New:
	ns       *dcache.Namespace
	isLoader func(dcache.Caller) bool
	observe  func(MissInfo)
	hooks    hooks // tests only

	// Changed by SetLoader and SetTimeout while lookups run; each load
	// reads them once, when it starts.
	loader  atomic.Pointer[loaderBox] // nil box or nil Loader: misses are plain ENOENT
	timeout atomic.Int64              // time.Duration

	published atomic.Int64 // calls published in some in-flight slot table
	live      atomic.Int64 // calls with a reference left
	loads     atomic.Int64 // Load calls made
	finished  atomic.Int64 // loads whose record was finished (step 4)
	waiting   atomic.Int64 // waiters sleeping on a call now

	// firstLooks counts what the first look (step 1) of each lookup
	// found, for metrics, one lookCounts per P (refcount.ProcHint): every
	// lookup adds to one, so a single counter would move between the CPUs
	// serving lookups on every one. Allocated by New.
	firstLooks []lookCounts
}

type loaderBox struct{ l Loader }

// lookCounts is one P's counts of first looks, alone on its cache line.
type lookCounts struct {
	hits    atomic.Uint64 // the name was there
	negHits atomic.Uint64 // a fresh negative entry answered
	misses  atomic.Uint64 // neither: a load was started or joined
	_       [40]byte
}

// looks returns the counts of the P the caller runs on.
func (r *Resolver) looks() *lookCounts {
	return &r.firstLooks[refcount.ProcHint()&(len(r.firstLooks)-1)]
}

// hooks let tests force interleavings; nil fields are skipped. Set before
// the Resolver is used.
type hooks struct {
	// published runs in the owner after step 2, once it released mu and
	// sem, before it sends LOOKUP.
	published func(dir *dcache.Node, name string)
	// waiting runs in a waiter that prepared its wait and is about to
	// sleep; writer waiters hold the directory sem exclusive.
	waiting func(name string, writer bool)
	// loaded runs in the owner after the load (or the deadline), before
	// steps 4 and 5.
	loaded func(name string)
}

// New returns a Resolver over ns asking loader (nil: none) on a miss.
func New(ns *dcache.Namespace, loader Loader, opts Options) *Resolver {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	r := &Resolver{ns: ns, isLoader: opts.IsLoader, observe: opts.Observe,
		firstLooks: make([]lookCounts, refcount.ShardCount(runtime.GOMAXPROCS(0)))}
	r.SetLoader(loader)
	r.SetTimeout(opts.Timeout)
	return r
}

// SetLoader makes l (nil: none) the loader of every load that starts from
// now on; loads already running finish with the loader they started with.
// Safe while lookups run (a configuration reload calls it).
func (r *Resolver) SetLoader(l Loader) { r.loader.Store(&loaderBox{l}) }

// SetTimeout changes Options.Timeout (<= 0: DefaultTimeout) for the loads
// and waits that start from now on. Safe while lookups run.
func (r *Resolver) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTimeout
	}
	r.timeout.Store(int64(d))
}

// Timeout returns the current bound of a load and a wait.
func (r *Resolver) Timeout() time.Duration { return time.Duration(r.timeout.Load()) }

func (r *Resolver) currentLoader() Loader { return r.loader.Load().l }

// Namespace returns the namespace r serves.
func (r *Resolver) Namespace() *dcache.Namespace { return r.ns }

// Stats counts in-flight records, loads and lookup outcomes.
type Stats struct {
	InFlight int64 // records published in a directory's slot table
	Live     int64 // records some goroutine still holds a reference to
	Loads    int64 // Load calls made so far
	Finished int64 // loads whose record was finished (<= Loads)
	Waiting  int64 // waiters sleeping on a record now

	// What step 1 of each lookup found: the name (Hits), a fresh
	// negative entry (NegativeHits), or neither (Misses: the lookup
	// started or joined a load, or, with no loader, answered ENOENT at
	// once). The loader's own misses are not counted; its hits are,
	// except those of Origin dcache.OriginLoader: telling the loader's
	// hits apart would cost the identity question on every hit. Loads <=
	// Misses always.
	Hits, NegativeHits, Misses uint64
}

// Stats returns the current counts. Once no lookup is running InFlight,
// Live and Waiting are 0.
func (r *Resolver) Stats() Stats {
	// Finished is read before Loads, and Loads before Misses: each load
	// counts its miss, then its start, then its end, so a snapshot never
	// shows Finished > Loads > Misses.
	finished := r.finished.Load()
	loads := r.loads.Load()
	st := Stats{InFlight: r.published.Load(), Live: r.live.Load(), Loads: loads, Finished: finished,
		Waiting: r.waiting.Load()}
	for i := range r.firstLooks {
		c := &r.firstLooks[i]
		st.Hits += c.hits.Load()
		st.NegativeHits += c.negHits.Load()
		st.Misses += c.misses.Load()
	}
	return st
}

func pathErr(op, path string, e syscall.Errno) error {
	return &iofs.PathError{Op: op, Path: path, Err: e}
}

// interrupted is the error for a wait cut short by the caller's context.
func interrupted(op, name string) error { return pathErr(op, name, syscall.EINTR) }
