package lookup

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/sync/waitq"
)

// Lookup returns the node named name in dir, asking the loader if it is
// missing (the miss protocol of the package doc). It returns ENOENT if the
// name is not there afterwards, EINTR if ctx ends while it waits, ENOTDIR
// if dir is not a directory. The loader's own lookups see the namespace as
// it is and never wait; whether the caller is the loader is asked only
// when the answer matters: on a miss, or when sem cannot be had at once.
// Model: proctype Lookup in test/model/lookup.pml.
func (r *Resolver) Lookup(ctx context.Context, dir *dcache.Node, name string, c dcache.Caller) (*dcache.Node, error) {
	if !dir.IsDir() {
		return nil, pathErr("lookup", name, syscall.ENOTDIR)
	}
	if err := dcache.CheckName(name); err != nil {
		return nil, err
	}
	if c.Origin == dcache.OriginLoader {
		return dir.Lookup(name)
	}
	id := r.whoIs(c)
	// dirPath is built once per miss: before Declines, or in miss.
	dirPath, mayDecline, counted := "", true, false
	for {
		// Step 1: holding sem shared, and then mu, find the child, a
		// fresh negative entry, or a load of the name in flight. A
		// writer holding sem (or queued for it) may be waiting, holding
		// it, for the very load the loader is serving: the loader does
		// not queue behind it, and looks under mu alone.
		if !dir.Sem().TryDownRead() {
			if id.loader() {
				return dir.Lookup(name)
			}
			if err := r.downShared(ctx, dir, name); err != nil {
				return nil, err
			}
		}
		dir.LockMu()
		e := dir.EntryLocked(name)
		if e.Node != nil || e.Negative || e.DirRemoved {
			if !counted {
				r.countLook(e)
			}
			r.unlockShared(dir)
			return answer(e.Node, name)
		}
		// A miss: the loader sees it as it is, starting no load and
		// joining none. Who the caller is is asked with no lock held;
		// then the look starts over, the namespace may have changed.
		if !id.known {
			r.unlockShared(dir)
			id.loader()
			continue
		}
		if id.is {
			r.unlockShared(dir)
			return answer(nil, name)
		}
		if !counted {
			r.countLook(e)
			counted = true
		}
		loader := r.currentLoader()
		if loader == nil { // nobody to ask: a plain miss, cached
			dir.AddNegativeLocked(name)
			r.unlockShared(dir)
			return answer(nil, name)
		}
		if cl, ok := e.Inflight.(*call); ok {
			return r.waitOn(ctx, dir, cl)
		}
		d, ok := loader.(Decliner)
		if !ok || !mayDecline {
			return r.miss(ctx, dir, dirPath, name, c, loader)
		}
		// Ask the Decliner with no lock held. If it does not decline,
		// start over at step 1: the namespace may have changed meanwhile.
		r.unlockShared(dir)
		start := time.Now()
		dirPath = dir.Path()
		if d.Declines(dirPath, name) {
			return r.declined(dir, dirPath, name, c, loader, start)
		}
		mayDecline = false
	}
}

// miss is steps 2 to 5 of the miss protocol, run by the owner of a new
// load of name in dir, which asks loader. dirPath is dir's path if the
// caller built it already, else "" (the root's own path, as cheap to
// build again).
// Preconditions: dir's sem held shared and its mu held; step 1 found no
// child, no fresh negative entry and no record in a directory that was not
// removed.
// Model: the owner branch of proctype Lookup in test/model/lookup.pml.
func (r *Resolver) miss(ctx context.Context, dir *dcache.Node, dirPath, name string, c dcache.Caller, loader Loader) (*dcache.Node, error) {
	// Step 2: under mu, publish a new record (one reference: the owner's).
	cl := r.newCall(dir, name, c)
	dir.PublishLocked(name, cl)
	r.published.Add(1)

	// Step 3: release sem; send LOOKUP; wait for the loader's answer, the
	// deadline or ctx.
	r.unlockShared(dir)
	if h := r.hooks.published; h != nil {
		h(dir, name)
	}
	if dirPath == "" {
		dirPath = dir.Path()
	}
	cl.dirPath = dirPath
	r.ns.EmitLookup(dir, dirPath, name, c)
	if !r.load(ctx, cl, loader) {
		return nil, interrupted("lookup", name) // load handed step 4 off
	}
	if h := r.hooks.loaded; h != nil {
		h(name)
	}
	loadErr := cl.err // read now: step 4 drops the owner's reference

	// Step 4 comes before step 5: a waiter may sleep on cl holding sem
	// exclusive (an unlink of the name), so the owner must wake it before
	// asking for sem again, or each waits for the other (race R4).
	// r4RetakeFirst is false except in the mutant_r4 build, which restores
	// that 2003 order for TestR4LsAndRmOfLoadingName to catch.
	var semErr error
	if r4RetakeFirst {
		semErr = r.downShared(ctx, dir, name)
	}
	// Step 4: under mu, unpublish cl, cache the miss if the name is still
	// absent, wake every waiter; drop the owner's reference.
	r.complete(cl)
	// Step 5: only then take sem shared again, look at the children once
	// more, and answer.
	if !r4RetakeFirst {
		semErr = r.downShared(ctx, dir, name)
	}
	if semErr != nil {
		return nil, semErr
	}
	dir.LockMu()
	child, _ := dir.ChildLocked(name)
	r.unlockShared(dir)
	return answerLoad(child, name, loadErr)
}

// errDeadline is a load's outcome when the deadline passed first.
var errDeadline = errors.New("loader did not finish before the deadline")

// load is step 3's wait: it starts loader's Load of cl's name and waits
// for it, the deadline (Resolver.Timeout) or ctx. It returns true when the
// owner goes on with steps 4 and 5, and false when ctx ended first; step 4
// is then run by a goroutine that waits for the load or the deadline in
// the owner's place, with the owner's reference. The load runs in a
// goroutine of its own that holds no reference, so a loader that hangs
// past the deadline delays nobody.
// Model: the select in proctype Lookup, and proctypes Load (load.func1)
// and LoadFinisher (load.func2) in test/model/lookup.pml.
func (r *Resolver) load(ctx context.Context, cl *call, loader Loader) bool {
	if nm, ok := loader.(Namer); ok {
		cl.loader = nm.LoaderName()
	}
	cl.start = time.Now()
	r.loads.Add(1)
	loadCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout())
	done := make(chan error, 1)
	dirPath, name, c := cl.dirPath, cl.name, cl.caller
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("lookup: loader panicked: %v", p)
			}
		}()
		done <- loader.Load(loadCtx, dirPath, name, c)
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
		}()
		return false
	}
}

// complete is step 4: under mu, unpublish cl, cache the miss if the name
// is still absent, wake every waiter; then, with no lock held, deliver the
// events queued meanwhile, tell Options.Observe, and drop the owner's
// reference.
// Preconditions: dir's mu not held; cl published and its load's outcome
// written; called once per call, by its owner or the goroutine the owner
// handed step 4 to.
// Model: complete in test/model/lookup.pml.
func (r *Resolver) complete(cl *call) {
	dir := cl.dir
	dir.LockMu()
	dir.UnpublishLocked(cl.name, cl)
	r.published.Add(-1)
	child := dir.AddNegativeLocked(cl.name)
	cl.wq.WakeAll()
	dir.UnlockMu()
	r.finished.Add(1)
	r.ns.Flush()
	if r.observe != nil {
		r.observe(cl.info(child != nil))
	}
	cl.put()
}

// waitOn is a lookup's revalidate wait: it joins cl, the load in flight of
// its name in dir, releases mu and sem (a lookup need not keep sem while
// it waits), waits for step 4, and answers from step 5, a look of its own.
// Preconditions: dir's sem held shared and its mu held; cl published in
// dir.
// Model: the waiter branch of proctype Lookup in test/model/lookup.pml.
func (r *Resolver) waitOn(ctx context.Context, dir *dcache.Node, cl *call) (*dcache.Node, error) {
	name := cl.name
	w := cl.join()
	r.unlockShared(dir)
	if err := r.wait(ctx, cl, w, false); err != nil {
		return nil, err
	}
	if err := r.downShared(ctx, dir, name); err != nil {
		return nil, err
	}
	dir.LockMu()
	child, _ := dir.ChildLocked(name)
	r.unlockShared(dir)
	return answer(child, name)
}

// waitForLoad waits, holding dir's sem exclusive as devfs's revalidate
// did, for a load of name in flight in dir, if any, so that a change of
// the name acts on what the load produced — unless the caller (id) is the
// loader, which must not wait for its own load: only then is id asked.
// It returns EINTR if ctx ended first.
// Preconditions: dir's sem held exclusive, or id is the loader; dir's mu
// not held.
// Model: proctype Unlink in test/model/lookup.pml.
func (r *Resolver) waitForLoad(ctx context.Context, dir *dcache.Node, name string, id *identity) error {
	for {
		dir.LockMu()
		cl, ok := dir.InflightLocked(name).(*call)
		if !ok || (id.known && id.is) {
			dir.UnlockMu()
			return nil
		}
		if !id.known { // ask with no lock held, then look again
			dir.UnlockMu()
			id.loader()
			continue
		}
		w := cl.join()
		dir.UnlockMu()
		return r.wait(ctx, cl, w, true)
	}
}

// wait sleeps on cl with w, prepared by cl.join, bounded by the Timeout
// and ctx, then drops the reference join took. It returns EINTR if ctx
// ended, nil otherwise (woken by step 4, or the bound passed: the caller
// looks at the namespace and answers from it).
// Model: wait in test/model/lookup.pml (the bound is Promela timeout).
func (r *Resolver) wait(ctx context.Context, cl *call, w *waitq.Waiter, writer bool) error {
	if h := r.hooks.waiting; h != nil {
		h(cl.name, writer)
	}
	name := cl.name
	wctx, cancel := context.WithTimeout(ctx, r.Timeout())
	r.waiting.Add(1)
	err := w.Wait(wctx)
	r.waiting.Add(-1)
	cancel()
	cl.put()
	if err != nil && ctx.Err() != nil {
		return interrupted("lookup", name)
	}
	return nil
}

// declined ends, on the caller's goroutine and without a record, a miss
// that the loader declined (Decliner): nothing can wait on a load that is
// not there. It is the outcome of a load that returned ENOENT at once,
// without steps 2 to 5: LOOKUP is emitted, the decision counted (a load
// started and finished) and observed (absent, ErrDeclined), and the miss
// cached negatively under mu — as step 4 does, without sem — unless the
// name appeared meanwhile (a registration takes only mu: the lookup then
// answers with it) or a load of it started (a loader that stopped
// declining: that load caches its own outcome).
// Preconditions: no dcache lock held.
func (r *Resolver) declined(dir *dcache.Node, dirPath, name string, c dcache.Caller, loader Loader, start time.Time) (*dcache.Node, error) {
	r.loads.Add(1)
	r.ns.EmitLookup(dir, dirPath, name, c)
	dir.LockMu()
	e := dir.EntryLocked(name)
	if e.Node == nil && !e.Negative && e.Inflight == nil {
		dir.AddNegativeLocked(name)
	}
	dir.UnlockMu()
	r.ns.Flush()
	r.finished.Add(1)
	if r.observe != nil {
		mi := MissInfo{Dir: dirPath, Name: name, Caller: c, Err: ErrDeclined,
			Duration: time.Since(start), Result: ResultAbsent}
		if nm, ok := loader.(Namer); ok {
			mi.Loader = nm.LoaderName()
		}
		if e.Node != nil {
			mi.Result = ResultFound
		}
		r.observe(mi)
	}
	return answer(e.Node, name)
}

// downShared takes dir's sem shared, or returns EINTR if ctx ends first.
func (r *Resolver) downShared(ctx context.Context, dir *dcache.Node, name string) error {
	if dir.Sem().DownReadCtx(ctx) != nil {
		return interrupted("lookup", name)
	}
	return nil
}

// unlockShared releases what a look holds, dir's mu and then its sem held
// shared, and delivers the events queued meanwhile (the EXPIRE of a
// negative entry the look dropped, ...).
// Preconditions: dir's sem held shared and its mu held.
func (r *Resolver) unlockShared(dir *dcache.Node) {
	dir.UnlockMu()
	dir.Sem().UpRead()
	r.ns.Flush()
}

// countLook counts what the first look of a lookup found (Stats).
func (r *Resolver) countLook(e dcache.Entry) {
	c := r.looks()
	switch {
	case e.Node != nil:
		c.hits.Add(1)
	case e.Negative:
		c.negHits.Add(1)
	default:
		c.misses.Add(1)
	}
}

func answer(child *dcache.Node, name string) (*dcache.Node, error) {
	if child == nil {
		return nil, pathErr("lookup", name, syscall.ENOENT)
	}
	return child, nil
}

// answerLoad answers after a load: the child, or ENOENT wrapping the
// load's error if it failed, so that logs can say why.
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
