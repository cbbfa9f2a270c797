package lookup

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

type namedLoader struct {
	name string
	fn   LoaderFunc
}

func (n namedLoader) Load(ctx context.Context, dir, name string, c dcache.Caller) error {
	return n.fn(ctx, dir, name, c)
}
func (n namedLoader) LoaderName() string { return n.name }

// Every load is observed once, with the loader asked and the result; the
// counters tell hits, negative hits and misses apart, and loads never
// outnumber misses.
func TestObserveAndCounters(t *testing.T) {
	ns, clk := newNS()
	var mu sync.Mutex
	var seen []MissInfo
	reg := namedLoader{"cat", func(ctx context.Context, dir, name string, c dcache.Caller) error {
		switch name {
		case "dev":
			_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 1}, helper)
			return err
		case "broken":
			return errors.New("exploded")
		case "slow":
			<-ctx.Done()
			return ctx.Err()
		}
		return syscall.ENOENT
	}}
	r := New(ns, reg, Options{Timeout: 50 * time.Millisecond, Observe: func(mi MissInfo) {
		mu.Lock()
		seen = append(seen, mi)
		mu.Unlock()
	}})
	root := ns.Root()
	ctx := context.Background()
	for i, tc := range []struct{ name, result string }{
		{"dev", ResultFound}, {"nothing", ResultAbsent}, {"broken", ResultError}, {"slow", ResultTimeout},
	} {
		r.Lookup(ctx, root, tc.name, user)
		mu.Lock()
		n := len(seen)
		var got MissInfo
		if n > 0 {
			got = seen[n-1]
		}
		mu.Unlock()
		if n != i+1 {
			t.Fatalf("%s: %d loads observed after %d lookups that missed, want one each", tc.name, n, i+1)
		}
		if got.Name != tc.name || got.Result != tc.result || got.Loader != "cat" || got.Caller != user {
			t.Errorf("%s: observed %+v, want result %s from cat", tc.name, got, tc.result)
		}
	}
	r.Lookup(ctx, root, "dev", user)     // hit
	r.Lookup(ctx, root, "nothing", user) // negative hit
	st := r.Stats()
	if st.Hits != 1 || st.NegativeHits != 1 || st.Misses != 4 || st.Loads != 4 || st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v", st)
	}
	// A new loader and timeout apply to the next load.
	clk.Advance(time.Hour)
	r.SetLoader(namedLoader{"other", func(context.Context, string, string, dcache.Caller) error {
		_, err := ns.Register("nothing", dcache.Spec{Type: dcache.TypeFifo}, helper)
		return err
	}})
	r.SetTimeout(time.Second)
	if n, err := r.Lookup(ctx, root, "nothing", user); err != nil || n == nil {
		t.Fatalf("after SetLoader: %v", err)
	}
	if r.Timeout() != time.Second {
		t.Errorf("Timeout %v", r.Timeout())
	}
	mu.Lock()
	if got := seen[len(seen)-1]; len(seen) != 5 || got.Loader != "other" || got.Result != ResultFound {
		t.Errorf("after SetLoader observed %d loads, the last %+v; want 5, found by other", len(seen), got)
	}
	mu.Unlock()
	r.SetLoader(nil)
	if _, err := r.Lookup(ctx, root, "gone", user); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("no loader: %v", err)
	}
}

// The first-look counts are kept per P: lookups from many goroutines at
// once, hits and misses of names a loader answers ENOENT for (so negative
// hits after the first), add up exactly, and no snapshot taken meanwhile
// shows more loads than misses.
func TestFirstLookCountsExactAcrossGoroutines(t *testing.T) {
	ns, _ := newNS()
	r := New(ns, LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return syscall.ENOENT }), Options{})
	root := ns.Root()
	if _, err := ns.Register("here", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}, helper); err != nil {
		t.Fatal(err)
	}
	const goroutines, per = 8, 2000
	var wg sync.WaitGroup
	var badMu sync.Mutex
	var bad []Stats
	for g := range goroutines {
		wg.Go(func() {
			for i := range per {
				name := "here"
				if i%2 == 1 {
					name = "gone" + string(rune('a'+g))
				}
				r.Lookup(context.Background(), root, name, user)
				if i%64 == 0 { // the workers take the snapshots: no P is left to one spinning reader
					if st := r.Stats(); uint64(st.Loads) > st.Misses {
						badMu.Lock()
						bad = append(bad, st)
						badMu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d snapshots showed more loads than misses, the first %+v", len(bad), bad[0])
	}
	st := r.Stats()
	if total := st.Hits + st.NegativeHits + st.Misses; total != goroutines*per || st.Hits != goroutines*per/2 {
		t.Fatalf("counts %+v: %d first looks, want %d, half of them hits", st, total, goroutines*per)
	}
	if uint64(st.Loads) > st.Misses || st.Loads == 0 {
		t.Fatalf("loads %d, misses %d: want some loads, no more than misses", st.Loads, st.Misses)
	}
}
