package lookup

import (
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/sync/waitq"
)

// call is one in-flight load of one name in one directory, shared by
// every lookup of that name that misses while it runs; modelled on x/sync
// singleflight's call. Its fields are grouped by how they are published.
type call struct {
	// Set by newCall, before the call is published; read-only afterwards:
	r      *Resolver
	dir    *dcache.Node
	name   string
	caller dcache.Caller // who missed first: the owner

	// refs counts the references: the owner's and one per waiter. It is
	// raised only under dir's mu while the call is published (join), so
	// never from zero, and dropped anywhere (put); the call's life ends
	// at zero.
	refs atomic.Int32

	// wq holds the waiters. A waiter prepares its wait under dir's mu
	// while the call is published (join); step 4 unpublishes it and wakes
	// them all under the same mu, so no wakeup is lost. wq's own lock is
	// a leaf.
	wq waitq.Queue

	// Written by the owner before the load starts; read by whoever runs
	// step 4 (the owner, or the goroutine it handed step 4 to, started
	// after the writes):
	dirPath string    // dir's path, built once for the whole miss
	loader  string    // Namer's answer, or ""
	start   time.Time // when the load started

	// Written by whoever waits for the load (the owner, or the goroutine
	// it handed step 4 to), before that goroutine runs step 4, which
	// reads them (info); the owner also reads err, if it wrote it, before
	// step 4. Waiters never read them:
	err     error // the load's outcome
	timeout bool  // the deadline passed first

	waiters atomic.Int32 // references taken by waiters, for MissInfo.Waiters
}

// newCall returns a call for a miss of name in dir by c, holding one
// reference, the owner's, and counts it live. It is not published yet.
func (r *Resolver) newCall(dir *dcache.Node, name string, c dcache.Caller) *call {
	cl := &call{r: r, dir: dir, name: name, caller: c}
	cl.refs.Store(1)
	r.live.Add(1)
	return cl
}

// join takes a reference on cl for a waiter and prepares its wait.
// Preconditions: cl.dir's mu held and cl published in its slot table.
func (cl *call) join() *waitq.Waiter {
	if cl.refs.Add(1) <= 1 {
		panic("lookup: reference taken on a finished lookup record")
	}
	cl.waiters.Add(1)
	return cl.wq.Prepare(false)
}

// put drops a reference; the last one ends the record's life. A goroutine
// must not touch cl after its put.
func (cl *call) put() {
	switch n := cl.refs.Add(-1); {
	case n == 0:
		cl.r.live.Add(-1)
	case n < 0:
		panic("lookup: lookup record released more often than taken")
	}
}

// info describes cl's load for Options.Observe. Preconditions: the load's
// outcome (err, timeout) is written.
func (cl *call) info(found bool) MissInfo {
	mi := MissInfo{Dir: cl.dirPath, Name: cl.name, Caller: cl.caller, Loader: cl.loader,
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
