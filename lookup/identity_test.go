package lookup

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// loaderPid is the pid countingIsLoader takes for the loader's.
const loaderPid = 4242

// countingIsLoader is an Options.IsLoader that recognises loaderPid and
// counts its calls.
func countingIsLoader(calls *atomic.Int64) func(dcache.Caller) bool {
	return func(c dcache.Caller) bool {
		calls.Add(1)
		return c.Pid == loaderPid
	}
}

// TestIdentityNotAskedWhereItDoesNotMatter: with an IsLoader predicate
// wired (an attached helper), a hit, a negative hit, a listing and an
// uncontended change of a name with no load in flight never call it; a
// miss calls it exactly once, and the loader's miss is answered as the
// namespace is, without a load.
func TestIdentityNotAskedWhereItDoesNotMatter(t *testing.T) {
	ns, _ := newNS()
	if _, err := ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}, helper); err != nil {
		t.Fatal(err)
	}
	var calls, loads atomic.Int64
	r := New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		loads.Add(1)
		return nil
	}), Options{IsLoader: countingIsLoader(&calls), Timeout: time.Minute})
	ctx, root := context.Background(), ns.Root()
	if _, err := r.Lookup(ctx, root, "nothing", user); !errors.Is(err, syscall.ENOENT) { // cached negatively
		t.Fatalf("miss: %v", err)
	}
	calls.Store(0)
	stranger := dcache.Caller{Pid: 100, Origin: dcache.OriginFUSE}
	asLoader := dcache.Caller{Pid: loaderPid, Origin: dcache.OriginFUSE}
	for _, tc := range []struct {
		name string
		op   func() error
		want int64 // IsLoader calls
	}{
		{"hit", func() error { _, err := r.Lookup(ctx, root, "null", stranger); return err }, 0},
		{"hit by the loader", func() error { _, err := r.Lookup(ctx, root, "null", asLoader); return err }, 0},
		{"negative hit", func() error {
			if _, err := r.Lookup(ctx, root, "nothing", stranger); !errors.Is(err, syscall.ENOENT) {
				return err
			}
			return nil
		}, 0},
		{"readdir", func() error { _, err := r.ReadDir(ctx, root, 0, 0, stranger); return err }, 0},
		{"mknod", func() error {
			_, err := r.Mknod(ctx, root, "made", syscall.S_IFCHR|0o600, 1, 5, stranger)
			return err
		}, 0},
		{"unlink", func() error { return r.Unlink(ctx, root, "made", stranger) }, 0},
		{"rename across directories", func() error {
			if _, err := ns.Register("d1/x", dcache.Spec{Type: dcache.TypeChar}, helper); err != nil {
				return err
			}
			if _, err := ns.Register("d2", dcache.Spec{Type: dcache.TypeDir}, helper); err != nil {
				return err
			}
			d1, _ := ns.Resolve("d1")
			d2, _ := ns.Resolve("d2")
			return r.Rename(ctx, d1, "x", d2, "y", 0, stranger)
		}, 0},
		{"miss", func() error {
			if _, err := r.Lookup(ctx, root, "absent1", stranger); !errors.Is(err, syscall.ENOENT) {
				return err
			}
			return nil
		}, 1},
		{"miss by the loader", func() error {
			before := loads.Load()
			if _, err := r.Lookup(ctx, root, "absent2", asLoader); !errors.Is(err, syscall.ENOENT) {
				return err
			}
			if loads.Load() != before {
				return errors.New("the loader's miss started a load")
			}
			return nil
		}, 1},
	} {
		calls.Store(0)
		if err := tc.op(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := calls.Load(); got != tc.want {
			t.Errorf("%s: IsLoader called %d times, want %d", tc.name, got, tc.want)
		}
	}
	settled(t, r)
}

// TestIdentityAskedWhenSemIsBusy: a lookup that cannot take the directory
// sem at once (a writer holds it) asks who it is; the loader then looks
// under mu alone and does not wait for the writer.
func TestIdentityAskedWhenSemIsBusy(t *testing.T) {
	ns, _ := newNS()
	if _, err := ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}, helper); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	r := New(ns, nil, Options{IsLoader: countingIsLoader(&calls)})
	root := ns.Root()
	root.Sem().DownWrite()
	defer root.Sem().UpWrite()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.Lookup(ctx, root, "null", dcache.Caller{Pid: loaderPid, Origin: dcache.OriginFUSE}); err != nil {
		t.Fatalf("the loader's lookup under a held sem: %v", err)
	}
	if _, err := r.ReadDir(ctx, root, 0, 0, dcache.Caller{Pid: loaderPid, Origin: dcache.OriginFUSE}); err != nil {
		t.Fatalf("the loader's readdir under a held sem: %v", err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("IsLoader called %d times, want 2 (once per request)", got)
	}
}

// TestMustNotWaitForNotify: while a load of snd is in flight, a change of
// snd or of a name under it must not wait for its notifies, whoever makes
// it; a change elsewhere must, unless the loader makes it; once the load
// is over, only the loader's changes skip the wait.
func TestMustNotWaitForNotify(t *testing.T) {
	ns, _ := newNS()
	var calls atomic.Int64
	loading, release := make(chan struct{}), make(chan struct{})
	r := New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		close(loading)
		<-release
		return nil
	}), Options{IsLoader: countingIsLoader(&calls), Timeout: time.Minute})
	if _, err := ns.Register("other/x", dcache.Spec{Type: dcache.TypeChar}, helper); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Lookup(context.Background(), ns.Root(), "snd", user)
		done <- err
	}()
	waitChan(t, loading, 5*time.Second, "the load of snd to start")
	stranger := dcache.Caller{Pid: 100, Origin: dcache.OriginControl}
	asLoader := dcache.Caller{Pid: loaderPid, Origin: dcache.OriginControl}
	// The loader registers what provides snd while the lookup waits.
	if _, err := ns.Register("snd/controlC0", dcache.Spec{Type: dcache.TypeChar, Major: 116}, asLoader); err != nil {
		t.Fatal(err)
	}
	check := func(when string, cases []struct {
		path string
		c    dcache.Caller
		want bool
	}) {
		t.Helper()
		for _, tc := range cases {
			if got := r.MustNotWaitForNotify(tc.path, tc.c); got != tc.want {
				t.Errorf("%s: MustNotWaitForNotify(%q, pid %d) = %v, want %v", when, tc.path, tc.c.Pid, got, tc.want)
			}
		}
	}
	type cs = []struct {
		path string
		c    dcache.Caller
		want bool
	}
	check("load in flight", cs{
		{"snd", stranger, true},
		{"snd/controlC0", stranger, true},
		{"/snd//controlC0/", stranger, true},
		{"other/x", stranger, false},
		{"other/y", stranger, false},
		{"absent/deeper", stranger, false},
		{"other/x", asLoader, true},
		{"other/x", helper, true}, // Origin loader: the helper's own
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("lookup of snd after the loader registered it: %v", err)
	}
	check("load over", cs{
		{"snd", stranger, false},
		{"snd/controlC0", stranger, false},
		{"snd/controlC0", asLoader, true},
	})
	settled(t, r)
}

// TestHammerLoaderKnownByPredicateNeverWaits: loaders recognised only by
// the IsLoader predicate (FUSE callers, not Origin loader) look up, list,
// make, rename and remove names in the directory they are loading, the
// very name included, while other callers look up, unlink, rename and
// make the same names, for half of -hammer. The loads' deadline is a
// minute: a loader call that waited on a load (its own or another's) or
// queued behind a writer waiting for one would stall the test past its
// bound. No record or reference is left.
func TestHammerLoaderKnownByPredicateNeverWaits(t *testing.T) {
	d := *hammerFor / 2
	if testing.Short() {
		d /= 10
	}
	ns := dcache.New(dcache.Options{NegativeTTL: -1}) // every miss loads
	names := []string{"a", "b", "c"}
	asLoader := dcache.Caller{Pid: loaderPid, Origin: dcache.OriginFUSE}
	var calls atomic.Int64
	var r *Resolver
	var n atomic.Int64
	r = New(ns, LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		root := ns.Root()
		i := int(n.Add(1))
		r.Lookup(ctx, root, name, asLoader)
		r.ReadDir(ctx, root, 0, 0, asLoader)
		switch i % 4 {
		case 0:
			r.Mknod(ctx, root, name, syscall.S_IFCHR|0o600, 1, 3, asLoader)
		case 1:
			r.Mknod(ctx, root, names[i%len(names)], syscall.S_IFCHR|0o600, 1, 3, asLoader)
			r.Rename(ctx, root, names[i%len(names)], root, name, 0, asLoader)
		case 2:
			r.Unlink(ctx, root, names[(i+1)%len(names)], asLoader)
		}
		return nil
	}), Options{IsLoader: countingIsLoader(&calls), Timeout: time.Minute})
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx, root := context.Background(), ns.Root()
			for i := g; time.Now().Before(deadline); i++ {
				name := names[i%len(names)]
				switch (i / 3) % 4 {
				case 0, 1:
					r.Lookup(ctx, root, name, user)
				case 2:
					r.Unlink(ctx, root, name, user)
				case 3:
					r.Rename(ctx, root, name, root, names[(i+1)%len(names)], 0, user)
				}
			}
		}(g)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	waitChan(t, finished, d+30*time.Second, "the hammer's goroutines (a loader call waited?)")
	settled(t, r)
	if n.Load() == 0 {
		t.Fatal("no load ran: the hammer tested nothing")
	}
	t.Logf("%d loads, %d identity questions", n.Load(), calls.Load())
}
