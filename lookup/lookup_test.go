package lookup

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/test/harness"
)

var hammerFor = flag.Duration("hammer", 10*time.Second, "duration of each TestHammer* test")

var (
	user   = dcache.Caller{Pid: 100, Uid: 1000, Gid: 1000, Origin: dcache.OriginFUSE}
	helper = dcache.Caller{Pid: 7, Origin: dcache.OriginLoader}
)

// fixedClock never moves unless told, so negative entries expire only when
// a test says so.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fixedClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newNS() (*dcache.Namespace, *fixedClock) {
	clk := &fixedClock{t: time.Date(2003, 7, 7, 0, 0, 0, 0, time.UTC)}
	return dcache.New(dcache.Options{Now: clk.Now, NegativeTTL: time.Second}), clk
}

// waitChan waits for ch to close, or fails the test at a deadline.
func waitChan(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// eventually waits for cond, polling, or fails the test at a deadline.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	harness.Until(t, d, what, cond)
}

// settled checks that no record is published or referenced.
func settled(t *testing.T, r *Resolver) {
	t.Helper()
	eventually(t, 5*time.Second, "every lookup record to be released", func() bool {
		s := r.Stats()
		return s.InFlight == 0 && s.Live == 0
	})
	var walk func(d *dcache.Node)
	walk = func(d *dcache.Node) {
		d.LockMu()
		n := d.InflightLenLocked()
		d.UnlockMu()
		if n != 0 {
			t.Errorf("%q: %d in-flight records left", d.Path(), n)
		}
		ents, _ := d.ReadDir(2, 0)
		for _, e := range ents {
			if c, err := d.Lookup(e.Name); err == nil && c.IsDir() {
				walk(c)
			}
		}
	}
	walk(r.Namespace().Root())
}

func registerLoader(ns *dcache.Namespace) LoaderFunc {
	return func(ctx context.Context, dir, name string, c dcache.Caller) error {
		p := name
		if dir != "" {
			p = dir + "/" + name
		}
		_, err := ns.Register(p, dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 1, Minor: 3}, helper)
		return err
	}
}

func TestLookup(t *testing.T) {
	errBroken := errors.New("helper died")
	for _, tc := range []struct {
		name      string
		loader    func(ns *dcache.Namespace) Loader
		lookup    string
		want      syscall.Errno
		wantLoads int64
	}{
		{"registered name", func(*dcache.Namespace) Loader { return nil }, "null", 0, 0},
		{"miss, no loader", func(*dcache.Namespace) Loader { return nil }, "foo", syscall.ENOENT, 0},
		{"miss, loader registers", func(ns *dcache.Namespace) Loader { return registerLoader(ns) }, "foo", 0, 1},
		{"miss, loader has nothing", func(*dcache.Namespace) Loader {
			return LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return syscall.ENOENT })
		}, "foo", syscall.ENOENT, 1},
		{"miss, loader fails", func(*dcache.Namespace) Loader {
			return LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return errBroken })
		}, "foo", syscall.ENOENT, 1},
		{"miss, loader panics", func(*dcache.Namespace) Loader {
			return LoaderFunc(func(context.Context, string, string, dcache.Caller) error { panic("boom") })
		}, "foo", syscall.ENOENT, 1},
		{"name too long", func(*dcache.Namespace) Loader { return nil }, string(make([]byte, 256)), syscall.ENAMETOOLONG, 0},
		{"bad name", func(*dcache.Namespace) Loader { return nil }, "a/b", syscall.EINVAL, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, _ := newNS()
			null, _ := ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}, helper)
			r := New(ns, tc.loader(ns), Options{})
			for i := 0; i < 2; i++ { // the second time from the cache
				n, err := r.Lookup(context.Background(), ns.Root(), tc.lookup, user)
				if tc.want != 0 {
					if !errors.Is(err, tc.want) {
						t.Fatalf("lookup %d: %v, want %v", i, err, tc.want)
					}
					continue
				}
				if err != nil || n == nil || (tc.lookup == "null" && n != null) {
					t.Fatalf("lookup %d: %v, %v", i, n, err)
				}
			}
			if got := r.Stats().Loads; got != tc.wantLoads {
				t.Errorf("%d loads, want %d", got, tc.wantLoads)
			}
			settled(t, r)
		})
	}
	t.Run("not a directory", func(t *testing.T) {
		ns, _ := newNS()
		f, _ := ns.Register("null", dcache.Spec{Type: dcache.TypeChar}, helper)
		r := New(ns, nil, Options{})
		if _, err := r.Lookup(context.Background(), f, "x", user); !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("lookup in a device: %v", err)
		}
	})
	t.Run("negative entry expires", func(t *testing.T) {
		ns, clk := newNS()
		var loads atomic.Int32
		r := New(ns, LoaderFunc(func(context.Context, string, string, dcache.Caller) error {
			loads.Add(1)
			return nil
		}), Options{})
		for _, step := range []struct {
			advance time.Duration
			loads   int32
		}{{0, 1}, {500 * time.Millisecond, 1}, {600 * time.Millisecond, 2}} {
			clk.Advance(step.advance)
			r.Lookup(context.Background(), ns.Root(), "foo", user)
			if loads.Load() != step.loads {
				t.Errorf("after %v: %d loads, want %d", step.advance, loads.Load(), step.loads)
			}
		}
	})
}

// TestLookupSharesOneLoad: 1,000 goroutines look up one missing name; the
// loader is called once, and waits until all the others wait on its
// record, so that none of them comes late.
func TestLookupSharesOneLoad(t *testing.T) {
	const n = 1000
	for _, registers := range []bool{true, false} {
		t.Run(fmt.Sprintf("registers=%v", registers), func(t *testing.T) {
			ns, _ := newNS()
			var waiting atomic.Int32
			allWaiting := make(chan struct{})
			var loads atomic.Int32
			r := New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
				loads.Add(1)
				select {
				case <-allWaiting:
				case <-ctx.Done():
					return ctx.Err()
				}
				if registers {
					_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Major: 10, Minor: 200}, helper)
					return err
				}
				return syscall.ENOENT
			}), Options{Timeout: time.Minute})
			r.hooks.waiting = func(string, bool) {
				if waiting.Add(1) == n-1 {
					close(allWaiting)
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, n)
			nodes := make([]*dcache.Node, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					nodes[i], errs[i] = r.Lookup(context.Background(), ns.Root(), "tun", user)
				}(i)
			}
			wg.Wait()
			if loads.Load() != 1 {
				t.Errorf("%d loads, want exactly 1", loads.Load())
			}
			want, _ := ns.Resolve("tun")
			for i := range errs {
				switch {
				case registers && (errs[i] != nil || nodes[i] != want):
					t.Fatalf("lookup %d: %v, %v", i, nodes[i], errs[i])
				case !registers && !errors.Is(errs[i], syscall.ENOENT):
					t.Fatalf("lookup %d: %v, want ENOENT", i, errs[i])
				}
			}
			settled(t, r)
		})
	}
}

// TestR4LsAndRmOfLoadingName is the devfs deadlock of 2003, `ls /dev/foo &
// rm -f /dev/foo` with a slow loader, with the interleaving forced: the
// lookup (ls) publishes its record and calls the loader; the unlink (rm)
// takes the directory sem exclusive and waits on the record; then the
// loader finishes. The owner must wake rm before it retakes sem (DESIGN.md
// section 3, step 4 before step 5); the mutant mutant_r4 retakes first, and
// both wait for each other until this test's deadline fails it.
func TestR4LsAndRmOfLoadingName(t *testing.T) {
	for _, tc := range []struct {
		name      string
		registers bool
		wantRm    syscall.Errno
	}{
		{"loader registers foo", true, 0},
		{"loader has no foo", false, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, _ := newNS()
			loading, release := make(chan struct{}), make(chan struct{})
			r := New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
				close(loading)
				<-release
				if tc.registers {
					_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar}, helper)
					return err
				}
				return syscall.ENOENT
			}), Options{Timeout: time.Hour}) // the bound must not be what ends the deadlock
			rmWaiting := make(chan struct{})
			r.hooks.waiting = func(name string, writer bool) {
				if writer {
					close(rmWaiting)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			lsDone, rmDone := make(chan error, 1), make(chan error, 1)
			go func() {
				_, err := r.Lookup(ctx, ns.Root(), "foo", user)
				lsDone <- err
			}()
			waitChan(t, loading, 5*time.Second, "ls to call the loader")
			go func() { rmDone <- r.Unlink(ctx, ns.Root(), "foo", user) }()
			waitChan(t, rmWaiting, 5*time.Second, "rm to wait on the lookup record, holding the directory sem")
			close(release)

			var lsErr, rmErr error
			var lsOK, rmOK bool
			deadline := time.After(3 * time.Second)
			for !lsOK || !rmOK {
				select {
				case lsErr = <-lsDone:
					lsOK = true
				case rmErr = <-rmDone:
					rmOK = true
				case <-deadline:
					cancel() // unwind both: every wait here honours ctx
					if !lsOK {
						<-lsDone
					}
					if !rmOK {
						<-rmDone
					}
					t.Fatalf("deadlock: after the load finished, ls done=%v, rm done=%v within 3s; "+
						"the lookup owner retook the directory sem before waking rm, which sleeps on "+
						"its record holding that sem (race R4)", lsOK, rmOK)
				}
			}
			if !errors.Is(lsErr, syscall.ENOENT) { // rm ran first, holding sem
				t.Errorf("ls: %v, want ENOENT", lsErr)
			}
			if tc.wantRm == 0 && rmErr != nil || tc.wantRm != 0 && !errors.Is(rmErr, tc.wantRm) {
				t.Errorf("rm: %v, want %v", rmErr, tc.wantRm)
			}
			settled(t, r)
		})
	}
}

// TestLivenessHungLoaderReleasesWaitersAtDeadline: a loader that never
// returns (and ignores its context) delays the owner and every waiter only
// until the deadline; all get ENOENT and the record is gone.
func TestLivenessHungLoaderReleasesWaitersAtDeadline(t *testing.T) {
	ns, _ := newNS()
	hang := make(chan struct{})
	defer close(hang)
	const timeout = 100 * time.Millisecond
	r := New(ns, LoaderFunc(func(context.Context, string, string, dcache.Caller) error {
		<-hang
		return nil
	}), Options{Timeout: timeout})
	const n = 20
	var waiting atomic.Int32
	allWaiting := make(chan struct{})
	r.hooks.waiting = func(string, bool) {
		if waiting.Add(1) == n-1 {
			close(allWaiting)
		}
	}
	// The owner starts the load only once every other lookup waits on its
	// record, so that all of them are released by the deadline, not
	// answered from the miss it caches.
	r.hooks.published = func(*dcache.Node, string) {
		select {
		case <-allWaiting:
		case <-time.After(10 * time.Second):
			t.Errorf("only %d of %d lookups waited on the hung load", waiting.Load(), n-1)
		}
	}
	start := time.Now()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := r.Lookup(context.Background(), ns.Root(), "hung", user)
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, syscall.ENOENT) {
				t.Errorf("lookup: %v, want ENOENT", err)
			}
		case <-time.After(10 * timeout):
			t.Fatalf("only %d of %d lookups returned within %v", i, n, 10*timeout)
		}
	}
	if d := time.Since(start); d < timeout {
		t.Errorf("returned after %v, before the deadline %v", d, timeout)
	}
	settled(t, r)
}

// TestLivenessCancelledWaitersGetEINTR: a waiter whose context ends gets
// EINTR at once; a cancelled owner gets EINTR and hands the load over, so
// the other waiters still get the node.
func TestLivenessCancelledWaitersGetEINTR(t *testing.T) {
	for _, cancelOwner := range []bool{false, true} {
		t.Run(fmt.Sprintf("owner=%v", cancelOwner), func(t *testing.T) {
			ns, _ := newNS()
			loading, release := make(chan struct{}), make(chan struct{})
			r := New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
				close(loading)
				<-release
				_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar}, helper)
				return err
			}), Options{Timeout: time.Minute})
			waiters := make(chan struct{}, 2)
			r.hooks.waiting = func(string, bool) { waiters <- struct{}{} }
			ownerCtx, cancelOwnerCtx := context.WithCancel(context.Background())
			waiterCtx, cancelWaiter := context.WithCancel(context.Background())
			ownerDone := make(chan error, 1)
			go func() {
				_, err := r.Lookup(ownerCtx, ns.Root(), "kvm", user)
				ownerDone <- err
			}()
			waitChan(t, loading, 5*time.Second, "the load")
			cancelledDone, patientDone := make(chan error, 1), make(chan error, 1)
			go func() {
				_, err := r.Lookup(waiterCtx, ns.Root(), "kvm", user)
				cancelledDone <- err
			}()
			go func() {
				_, err := r.Lookup(context.Background(), ns.Root(), "kvm", user)
				patientDone <- err
			}()
			for i := 0; i < 2; i++ {
				select {
				case <-waiters:
				case <-time.After(5 * time.Second):
					t.Fatal("waiters did not wait")
				}
			}
			var interrupted chan error
			if cancelOwner {
				cancelOwnerCtx()
				interrupted = ownerDone
			} else {
				cancelWaiter()
				interrupted = cancelledDone
			}
			select {
			case err := <-interrupted:
				if !errors.Is(err, syscall.EINTR) {
					t.Errorf("cancelled: %v, want EINTR", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a cancelled lookup still waits")
			}
			close(release)
			select {
			case err := <-patientDone:
				if err != nil {
					t.Errorf("patient waiter: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the patient waiter was not released")
			}
			cancelOwnerCtx()
			cancelWaiter()
			if cancelOwner {
				<-cancelledDone
			} else {
				<-ownerDone
			}
			settled(t, r)
		})
	}
}

// TestLivenessLoaderBypassesTheWait: while a load is in flight and an
// unlink waits for it holding the directory sem, the loader's own lookups,
// listings and changes in that directory neither wait on the record nor
// block on the sem.
func TestLivenessLoaderBypassesTheWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		as   dcache.Caller
	}{
		{"origin loader", Options{}, helper},
		{"IsLoader predicate", Options{IsLoader: func(c dcache.Caller) bool { return c.Pid == 4242 }},
			dcache.Caller{Pid: 4242, Origin: dcache.OriginFUSE}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, _ := newNS()
			var r *Resolver
			rmWaiting := make(chan struct{})
			loaderErr := make(chan error, 1)
			tc.opts.Timeout = time.Minute
			r = New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
				waitChan(t, rmWaiting, 5*time.Second, "rm to wait")
				root := ns.Root()
				if _, err := r.Lookup(ctx, root, name, tc.as); !errors.Is(err, syscall.ENOENT) {
					loaderErr <- fmt.Errorf("loader's lookup of its own name: %v", err)
					return nil
				}
				if _, err := r.ReadDir(ctx, root, 0, 0, tc.as); err != nil {
					loaderErr <- fmt.Errorf("loader's readdir: %v", err)
					return nil
				}
				_, err := r.Mknod(ctx, root, name, syscall.S_IFCHR|0600, 1, 3, tc.as)
				loaderErr <- err
				return err
			}), tc.opts)
			r.hooks.waiting = func(name string, writer bool) {
				if writer {
					close(rmWaiting)
				}
			}
			lsDone := make(chan error, 1)
			go func() {
				_, err := r.Lookup(context.Background(), ns.Root(), "loop0", user)
				lsDone <- err
			}()
			// rm waits for the load holding sem; the loader's calls
			// above must not block on it. The bound ends a regression.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for {
				// rm may come before the lookup published its record;
				// then it finds nothing and we try again.
				err := r.Unlink(ctx, ns.Root(), "loop0", user)
				if ctx.Err() != nil {
					t.Fatal("rm did not finish: the loader's calls blocked")
				}
				if err == nil {
					break
				}
				select {
				case <-rmWaiting:
					t.Fatalf("rm waited and still failed: %v", err)
				default:
				}
			}
			if err := <-loaderErr; err != nil {
				t.Fatal(err)
			}
			if err := <-lsDone; !errors.Is(err, syscall.ENOENT) {
				t.Errorf("ls after rm: %v, want ENOENT", err)
			}
			settled(t, r)
		})
	}
}

// TestLivenessChangesWaitForTheLoad: mknod, rename and unlink of a name
// with a load in flight wait for it and act on its result.
func TestLivenessChangesWaitForTheLoad(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r *Resolver, ctx context.Context) error
		want   syscall.Errno
		after  string // path that must exist afterwards
	}{
		{"mknod sees the loaded node", func(r *Resolver, ctx context.Context) error {
			_, err := r.Mknod(ctx, r.Namespace().Root(), "dsp", syscall.S_IFCHR|0600, 14, 3, user)
			return err
		}, syscall.EEXIST, "dsp"},
		{"rename moves the loaded node", func(r *Resolver, ctx context.Context) error {
			return r.Rename(ctx, r.Namespace().Root(), "dsp", r.Namespace().Root(), "dsp1", 0, user)
		}, 0, "dsp1"},
		{"rename onto the loading name replaces the loaded node", func(r *Resolver, ctx context.Context) error {
			ns := r.Namespace()
			ns.Register("d/other", dcache.Spec{Type: dcache.TypeChar}, helper)
			d, _ := ns.Resolve("d")
			return r.Rename(ctx, d, "other", ns.Root(), "dsp", 0, user)
		}, 0, "dsp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, _ := newNS()
			loading, release := make(chan struct{}), make(chan struct{})
			r := New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
				close(loading)
				<-release
				_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Major: 14, Minor: 3}, helper)
				return err
			}), Options{Timeout: time.Minute})
			changeWaiting := make(chan struct{})
			r.hooks.waiting = func(name string, writer bool) {
				if writer {
					close(changeWaiting)
				}
			}
			lsDone := make(chan error, 1)
			go func() {
				_, err := r.Lookup(context.Background(), ns.Root(), "dsp", user)
				lsDone <- err
			}()
			waitChan(t, loading, 5*time.Second, "the load")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.change(r, ctx) }()
			waitChan(t, changeWaiting, 5*time.Second, "the change to wait on the load")
			close(release)
			err := <-done
			if tc.want == 0 && err != nil || tc.want != 0 && !errors.Is(err, tc.want) {
				t.Errorf("change: %v, want %v", err, tc.want)
			}
			<-lsDone
			if _, err := ns.Resolve(tc.after); err != nil {
				t.Errorf("%s afterwards: %v", tc.after, err)
			}
			settled(t, r)
		})
	}
}

// TestHammerLookup: lookups, registrations, unregistrations, unlinks,
// renames and mknods of overlapping names, with loaders that register,
// fail, say ENOENT or hang until the (short) deadline, for -hammer (10 s
// by default). No deadlock, no record left, no reference left.
func TestHammerLookup(t *testing.T) {
	d := *hammerFor
	if testing.Short() {
		d /= 10
	}
	clk := &fixedClock{t: time.Now()}
	ns := dcache.New(dcache.Options{Now: clk.Now, NegativeTTL: time.Millisecond})
	names := []string{"a", "b", "c", "d"}
	dirs := []string{"", "x", "x/y"}
	var r *Resolver
	r = New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		switch len(name) + int(clk.Now().UnixNano()/int64(time.Millisecond))%4 {
		case 1:
			p := name
			if dir != "" {
				p = dir + "/" + name
			}
			_, err := ns.Register(p, dcache.Spec{Type: dcache.TypeChar}, helper)
			return err
		case 2:
			// The loader looks around while loading.
			if dn, err := ns.Resolve(dir); err == nil {
				r.Lookup(ctx, dn, "a", helper)
			}
			return syscall.ENOENT
		case 3:
			<-ctx.Done() // hang until the deadline
			return ctx.Err()
		}
		return errors.New("load failed")
	}), Options{Timeout: 20 * time.Millisecond})
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	var ops atomic.Int64
	worker := func(g int) {
		defer wg.Done()
		for i := g; time.Now().Before(deadline); i++ {
			ops.Add(1)
			dirPath := dirs[i%len(dirs)]
			name := names[(i/3)%len(names)]
			ctx := context.Background()
			var cancel context.CancelFunc = func() {}
			if i%7 == 0 { // some callers are interrupted
				ctx, cancel = context.WithTimeout(ctx, time.Duration(i%5)*time.Millisecond)
			}
			dir, err := ns.Resolve(dirPath)
			if err != nil || !dir.IsDir() {
				ns.Register(dirPath+"/"+name, dcache.Spec{Type: dcache.TypeChar}, helper)
				cancel()
				continue
			}
			switch (i / 12) % 8 {
			case 0, 1, 2:
				r.Lookup(ctx, dir, name, user)
			case 3:
				r.Unlink(ctx, dir, name, user)
			case 4:
				other, err := ns.Resolve(dirs[(i+1)%len(dirs)])
				if err == nil && other.IsDir() {
					r.Rename(ctx, dir, name, other, names[i%len(names)], uint32(i%3), user)
				}
			case 5:
				r.Mknod(ctx, dir, name, syscall.S_IFCHR|0600, 1, 3, user)
			case 6:
				ns.Unregister(dirPath+"/"+name, helper)
				if i%40 == 0 {
					ns.Unregister("x", helper)
				}
			case 7:
				ns.Register(dirPath+"/"+name, dcache.Spec{Type: dcache.TypeChar}, helper)
				r.ReadDir(ctx, dir, 0, 0, user)
				clk.Advance(time.Millisecond)
			}
			cancel()
		}
	}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go worker(g)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	waitChan(t, finished, d+30*time.Second, "the hammer's goroutines (deadlock?)")
	settled(t, r)
	t.Logf("%d operations, %d loads", ops.Load(), r.Stats().Loads)
}
