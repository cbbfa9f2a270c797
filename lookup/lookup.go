package lookup

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/sync/refcount"
	"github.com/devfsd/devfsd/sync/rwsem"
	"github.com/devfsd/devfsd/sync/waitq"
)

// Caller identifies who made a request; see dcache.Caller.
type Caller = dcache.Caller

// Loader loads what provides name in directory dir (a path relative to the
// namespace root, "" for the root), registering nodes through
// dcache.Namespace.Register while it runs. It returns when done: nil or an
// error, the lookup then looks at the namespace again either way. Load
// must honour ctx (it ends at the deadline), be safe for concurrent use,
// and must not look names up through the mount unless its lookups are
// recognised as the loader's (see Options.IsLoader).
type Loader interface {
	Load(ctx context.Context, dir, name string, caller Caller) error
}

// LoaderFunc adapts a function to a Loader.
type LoaderFunc func(ctx context.Context, dir, name string, caller Caller) error

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, dir, name string, caller Caller) error {
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
	// every wait. A Caller with Origin dcache.OriginLoader bypasses
	// whatever IsLoader says. Nil: only that origin.
	IsLoader func(Caller) bool
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
	Dir, Name string // the directory's path ("" for the root) and the name
	Caller    Caller // who missed first (the record's owner)
	Loader    string // Namer's answer when the load started, or ""
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
	isLoader func(Caller) bool
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

	// Lookup outcomes at step 1, for metrics; each on its own cache
	// line, since every lookup adds to one of them.
	// firstLooks counts what each lookup's first look found, per P
	// (refcount.ProcHint): every lookup counts one, so a single counter
	// would move between the CPUs serving lookups on every one.
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
	// published runs in the owner after step 2, holding sem shared.
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

	// What step 1 of each lookup (not the loader's own) found: the name
	// (Hits), a fresh negative entry (NegativeHits), or neither (Misses:
	// the lookup started or joined a load, or, with no loader, answered
	// ENOENT at once). Loads <= Misses always.
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

// bypass reports whether c is the loader itself.
func (r *Resolver) bypass(c Caller) bool {
	return c.Origin == dcache.OriginLoader || (r.isLoader != nil && r.isLoader(c))
}

func pathErr(op, path string, e syscall.Errno) error {
	return &iofs.PathError{Op: op, Path: path, Err: e}
}

// interrupted is the error for a wait cut short by the caller's context.
func interrupted(op, name string) error { return pathErr(op, name, syscall.EINTR) }

// call is one in-flight load of one name in one directory, shared by
// every lookup of that name that misses while it runs; modelled on x/sync
// singleflight's call.
type call struct {
	// Set before the call is published, read-only afterwards:
	r    *Resolver
	dir  *dcache.Node
	name string

	// refs counts the references: the owner's and one per waiter. It is
	// raised only under dir's mu while the call is published (so never
	// from zero) and dropped anywhere; the call's life ends at zero.
	refs atomic.Int32

	// Guarded by dir's mu:
	done bool // unpublished and its waiters woken (step 4 ran)

	// wq holds the waiters. A waiter prepares its wait under dir's mu
	// while !done; step 4 wakes them all under the same mu, so no wakeup
	// is lost. wq's own lock is a leaf.
	wq waitq.Queue

	// Written by the owner before step 4, read by waiters after their
	// wakeup (which the wakeup orders after the write):
	err error // the load's outcome, for errors and logs

	// For Options.Observe; set by the owner before the load starts, read
	// in step 4:
	caller  Caller
	loader  string
	start   time.Time
	timeout bool         // the deadline passed first (written with err)
	waiters atomic.Int32 // references taken by waiters
}

// get takes a reference. Preconditions: c.dir's mu held, c published.
func (c *call) get() {
	if c.refs.Add(1) <= 1 {
		panic("lookup: reference taken on a finished lookup record")
	}
}

// put drops a reference; the last one ends the record's life.
func (c *call) put() {
	switch n := c.refs.Add(-1); {
	case n == 0:
		c.r.live.Add(-1)
	case n < 0:
		panic("lookup: lookup record released more often than taken")
	}
}

// Lookup returns the node named name in dir, asking the loader if it is
// missing (see the package doc). ENOENT if it is not there afterwards,
// EINTR if ctx ends while waiting, ENOTDIR if dir is not a directory.
// Model: proctype Lookup in test/model/lookup.pml.
func (r *Resolver) Lookup(ctx context.Context, dir *dcache.Node, name string, c Caller) (*dcache.Node, error) {
	if !dir.IsDir() {
		return nil, pathErr("lookup", name, syscall.ENOTDIR)
	}
	if err := dcache.CheckName(name); err != nil {
		return nil, err
	}
	if r.bypass(c) {
		return dir.Lookup(name)
	}
	sem := dir.Sem()
	n, again, err := r.lookupPass(ctx, sem, dir, name, c, true)
	if again {
		n, _, err = r.lookupPass(ctx, sem, dir, name, c, false)
	}
	return n, err
}

// lookupPass is one pass of Lookup from step 1. The first pass of a miss
// whose loader is a Decliner asks it, with no lock held, whether it has
// anything for the name; if it declines, the miss ends there (declined),
// and if not, again is true and the second pass (first false) runs the
// miss protocol from step 1 (the namespace may have changed meanwhile)
// without asking again. Only the first pass counts step 1's outcome.
func (r *Resolver) lookupPass(ctx context.Context, sem *rwsem.Sem, dir *dcache.Node, name string, c Caller, first bool) (_ *dcache.Node, again bool, _ error) {
	if sem.DownReadCtx(ctx) != nil {
		return nil, false, interrupted("lookup", name)
	}
	// Step 1.
	dir.LockMu()
	child, negative := dir.ChildLocked(name)
	var loader Loader // read on a miss only: the hit path stays short
	switch {
	case child != nil:
		if first {
			r.looks().hits.Add(1)
		}
	case negative:
		if first {
			r.looks().negHits.Add(1)
		}
	default:
		if first {
			r.looks().misses.Add(1)
		}
		loader = r.currentLoader()
	}
	if child != nil || negative || dir.DeadLocked() || loader == nil {
		if child == nil && !negative && loader == nil {
			dir.AddNegativeLocked(name)
		}
		dir.UnlockMu()
		sem.UpRead()
		r.ns.Flush()
		n, err := answer(child, name)
		return n, false, err
	}
	if cl, ok := dir.InflightLocked(name).(*call); ok {
		// A load is in flight: wait on it like devfs_d_revalidate_wait,
		// but without sem (a lookup need not keep it).
		cl.get()
		cl.waiters.Add(1)
		w := cl.wq.Prepare(false)
		dir.UnlockMu()
		sem.UpRead()
		r.ns.Flush()
		err := r.wait(ctx, cl, w, false)
		cl.put()
		if err != nil {
			return nil, false, err
		}
		n, err := r.lookAgain(ctx, dir, name)
		return n, false, err
	}
	if d, ok := loader.(Decliner); ok && first {
		dir.UnlockMu()
		sem.UpRead()
		r.ns.Flush()
		start := time.Now()
		dirPath := dir.Path()
		if !d.Declines(dirPath, name) {
			return nil, true, nil
		}
		n, err := r.declined(dir, dirPath, name, c, loader, start)
		return n, false, err
	}
	// Step 2.
	cl := &call{r: r, dir: dir, name: name, caller: c}
	cl.refs.Store(1)
	r.live.Add(1)
	dir.SetInflightLocked(name, cl)
	r.published.Add(1)
	dir.UnlockMu()
	if h := r.hooks.published; h != nil {
		h(dir, name)
	}
	// Step 3.
	sem.UpRead()
	r.ns.Flush()
	r.ns.EmitLookup(dir, name, c)
	if !r.load(ctx, cl, c, loader) {
		return nil, false, interrupted("lookup", name) // step 4 handed off
	}
	if h := r.hooks.loaded; h != nil {
		h(name)
	}
	// Steps 4 and 5, in the order of finish_r4.go. The load's error is
	// read first: step 4 drops the owner's reference to cl.
	loadErr := cl.err
	if err := r.finishMiss(ctx, cl); err != nil {
		return nil, false, err
	}
	n, err := answerLoad(r.lookAndRelease(dir, name), name, loadErr)
	return n, false, err
}

// declined ends a miss the loader declined (Decliner) at once, on the
// caller's goroutine and without a record: nothing can wait on a load
// that is not there. It is the outcome of a load that returned ENOENT at
// once, minus steps 2 to 5: LOOKUP is emitted, the decision counted (a
// load started and finished) and observed (absent, ErrDeclined), and the
// miss cached negatively under mu — as step 4 does, without sem — unless
// the name appeared meanwhile (a registration takes only mu: the lookup
// then answers with it) or a load of it started (a loader that stopped
// declining: that load will cache its own outcome).
// Preconditions: no dcache lock held.
func (r *Resolver) declined(dir *dcache.Node, dirPath, name string, c Caller, loader Loader, start time.Time) (*dcache.Node, error) {
	r.loads.Add(1)
	r.ns.EmitLookup(dir, name, c)
	dir.LockMu()
	child, negative := dir.ChildLocked(name)
	if child == nil && !negative && dir.InflightLocked(name) == nil {
		dir.AddNegativeLocked(name)
	}
	dir.UnlockMu()
	r.finished.Add(1)
	if r.observe != nil {
		mi := MissInfo{Dir: dirPath, Name: name, Caller: c, Err: ErrDeclined,
			Duration: time.Since(start), Result: ResultAbsent}
		if nm, ok := loader.(Namer); ok {
			mi.Loader = nm.LoaderName()
		}
		if child != nil {
			mi.Result = ResultFound
		}
		r.observe(mi)
	}
	return answer(child, name)
}

func answer(child *dcache.Node, name string) (*dcache.Node, error) {
	if child == nil {
		return nil, pathErr("lookup", name, syscall.ENOENT)
	}
	return child, nil
}

// answerLoad answers after a load: ENOENT, wrapping the load's error if
// it failed so that logs can say why.
func answerLoad(child *dcache.Node, name string, loadErr error) (*dcache.Node, error) {
	if child != nil {
		return child, nil
	}
	if loadErr != nil && !errors.Is(loadErr, syscall.ENOENT) {
		return nil, &iofs.PathError{Op: "lookup", Path: name,
			Err: fmt.Errorf("%w (load: %v)", syscall.ENOENT, loadErr)}
	}
	return nil, pathErr("lookup", name, syscall.ENOENT)
}

// lookAgain is step 5 for a waiter: take sem shared, look once more.
func (r *Resolver) lookAgain(ctx context.Context, dir *dcache.Node, name string) (*dcache.Node, error) {
	if err := r.retake(ctx, dir, name); err != nil {
		return nil, err
	}
	return answer(r.lookAndRelease(dir, name), name)
}

// lookAndRelease is the look of step 5: the child named name under mu,
// then sem released and queued events delivered. Preconditions: dir's sem
// held shared (by retake), no mu held.
func (r *Resolver) lookAndRelease(dir *dcache.Node, name string) *dcache.Node {
	dir.LockMu()
	child, _ := dir.ChildLocked(name)
	dir.UnlockMu()
	dir.Sem().UpRead()
	r.ns.Flush()
	return child
}

// errDeadline is a load's outcome when the deadline passed first.
var errDeadline = errors.New("loader did not finish before the deadline")

// load runs step 3's wait: it starts the Load and waits for it, the
// deadline, or ctx. It returns true when the owner should go on with steps
// 4 and 5, and false when ctx ended first; step 4 is then done by a
// goroutine that waits for the load or the deadline in the owner's place,
// with the owner's reference.
// Model: the select in proctype Lookup and proctype LoadFinisher
// (load.func2) in test/model/lookup.pml.
func (r *Resolver) load(ctx context.Context, cl *call, c Caller, loader Loader) bool {
	dirPath := cl.dir.Path()
	if nm, ok := loader.(Namer); ok {
		cl.loader = nm.LoaderName()
	}
	cl.start = time.Now()
	r.loads.Add(1)
	loadCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout())
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("lookup: loader panicked: %v", p)
			}
		}()
		done <- loader.Load(loadCtx, dirPath, cl.name, c)
	}()
	select {
	case err := <-done:
		cl.err = err
		cancel()
		return true
	case <-loadCtx.Done():
		cl.err, cl.timeout = errDeadline, true
		cancel()
		return true
	case <-ctx.Done():
		go func() {
			select {
			case err := <-done:
				cl.err = err
			case <-loadCtx.Done():
				cl.err, cl.timeout = errDeadline, true
			}
			cancel()
			r.complete(cl)
			r.ns.Flush()
		}()
		return false
	}
}

// complete is step 4: under mu, unpublish cl, cache the miss if the name is
// still absent, wake every waiter; then drop the owner's reference.
// Preconditions: no dcache lock held; cl published; called once per call.
// Model: complete in test/model/lookup.pml.
func (r *Resolver) complete(cl *call) {
	dir := cl.dir
	dir.LockMu()
	dir.ClearInflightLocked(cl.name, cl)
	r.published.Add(-1)
	cl.done = true
	child, _ := dir.ChildLocked(cl.name)
	if child == nil {
		dir.AddNegativeLocked(cl.name)
	}
	cl.wq.WakeAll()
	dir.UnlockMu()
	r.finished.Add(1)
	if r.observe != nil {
		r.observe(cl.info(child != nil))
	}
	cl.put()
}

// info describes cl's load for Options.Observe. Preconditions: step 4 ran
// (cl.err and cl.timeout are written).
func (cl *call) info(found bool) MissInfo {
	mi := MissInfo{Dir: cl.dir.Path(), Name: cl.name, Caller: cl.caller, Loader: cl.loader,
		Err: cl.err, Duration: time.Since(cl.start), Waiters: int(cl.waiters.Load())}
	switch {
	case found:
		mi.Result = ResultFound
	case cl.timeout:
		mi.Result = ResultTimeout
	case cl.err != nil && !errors.Is(cl.err, syscall.ENOENT):
		mi.Result = ResultError
	default:
		mi.Result = ResultAbsent
	}
	return mi
}

// retake is step 5's lock: sem shared again.
func (r *Resolver) retake(ctx context.Context, dir *dcache.Node, name string) error {
	if dir.Sem().DownReadCtx(ctx) != nil {
		return interrupted("lookup", name)
	}
	return nil
}

// wait sleeps on cl with the prepared w, bounded by r.timeout and ctx. It
// returns EINTR if ctx ended, nil otherwise (woken, or the bound passed:
// the caller looks at the namespace and answers from it).
// Model: wait in test/model/lookup.pml (the bound is Promela timeout).
func (r *Resolver) wait(ctx context.Context, cl *call, w *waitq.Waiter, writer bool) error {
	if h := r.hooks.waiting; h != nil {
		h(cl.name, writer)
	}
	wctx, cancel := context.WithTimeout(ctx, r.Timeout())
	r.waiting.Add(1)
	err := w.Wait(wctx)
	r.waiting.Add(-1)
	cancel()
	if err != nil && ctx.Err() != nil {
		return interrupted("lookup", cl.name)
	}
	return nil
}

// waitForLoadLocked waits, holding dir's sem exclusive as devfs's
// revalidate did, for a load of name in flight in dir, if any.
// Preconditions: dir's sem held exclusive; no mu held.
// Model: proctype Unlink in test/model/lookup.pml.
func (r *Resolver) waitForLoadLocked(ctx context.Context, dir *dcache.Node, name string) error {
	dir.LockMu()
	cl, ok := dir.InflightLocked(name).(*call)
	if !ok {
		dir.UnlockMu()
		return nil
	}
	cl.get()
	cl.waiters.Add(1)
	w := cl.wq.Prepare(false)
	dir.UnlockMu()
	err := r.wait(ctx, cl, w, true)
	cl.put()
	return err
}
