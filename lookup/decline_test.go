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

// decliner is a Loader that declines the names in no (Decliner) and
// registers every other name it is asked to load.
type decliner struct {
	ns       *dcache.Namespace
	no       map[string]bool
	declines atomic.Int64 // Declines calls
	loads    atomic.Int64 // Load calls
}

func (d *decliner) Declines(dir, name string) bool {
	d.declines.Add(1)
	return d.no[name]
}

func (d *decliner) Load(ctx context.Context, dir, name string, c Caller) error {
	d.loads.Add(1)
	if d.no[name] {
		return errors.New("decliner: Load called for a declined name")
	}
	return registerLoader(d.ns)(ctx, dir, name, c)
}

// eventLog is a dcache.Sink that keeps the kinds and names it is given.
type eventLog struct {
	mu  sync.Mutex
	evs []dcache.Event
}

func (l *eventLog) Event(ev dcache.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) count(k dcache.Kind, name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.evs {
		if ev.Kind == k && ev.Name == name {
			n++
		}
	}
	return n
}

// A declined miss is answered on the caller's goroutine without a Load,
// and is otherwise a miss like any other: ENOENT, LOOKUP emitted, the
// decision observed (absent), the miss cached negatively, no record left.
// A name the loader does not decline is loaded as before.
func TestDeclinedMissNeverStartsALoad(t *testing.T) {
	clk := &fixedClock{t: time.Unix(1e9, 0)}
	evs := &eventLog{}
	ns := dcache.New(dcache.Options{Now: clk.Now, NegativeTTL: time.Minute, Sink: evs})
	d := &decliner{ns: ns, no: map[string]bool{"absent": true}}
	var observed []MissInfo
	var mu sync.Mutex
	r := New(ns, d, Options{Observe: func(mi MissInfo) {
		mu.Lock()
		observed = append(observed, mi)
		mu.Unlock()
	}})
	root := ns.Root()
	ctx := context.Background()

	if _, err := r.Lookup(ctx, root, "absent", user); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup of a declined name: %v, want ENOENT", err)
	}
	if _, err := r.Lookup(ctx, root, "absent", user); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("second lookup of a declined name: %v, want ENOENT", err)
	}
	if n := d.loads.Load(); n != 0 {
		t.Errorf("Load called %d times for a declined name, want 0", n)
	}
	if n := d.declines.Load(); n != 1 {
		t.Errorf("Declines called %d times, want 1 (the second lookup is a cached miss)", n)
	}
	if n := evs.count(dcache.KindLookup, "absent"); n != 1 {
		t.Errorf("%d LOOKUP events for the declined miss, want 1", n)
	}
	mu.Lock()
	if len(observed) != 1 || observed[0].Result != ResultAbsent || !errors.Is(observed[0].Err, ErrDeclined) {
		t.Errorf("observed %+v, want one absent decision with ErrDeclined", observed)
	}
	mu.Unlock()
	if s := r.Stats(); s.Loads != 1 || s.Finished != 1 || s.NegativeHits != 1 {
		t.Errorf("stats %+v, want 1 load (declined), 1 finished, 1 negative hit", s)
	}

	if _, err := r.Lookup(ctx, root, "present", user); err != nil {
		t.Fatalf("lookup of a name the loader provides: %v", err)
	}
	if n := d.loads.Load(); n != 1 {
		t.Errorf("Load called %d times for a provided name, want 1", n)
	}
	settled(t, r)
}

// Lookups that join a declined miss share it: one Declines, one answer,
// the waiter woken by step 4 like any other.
func TestDeclinedMissIsShared(t *testing.T) {
	ns, _ := newNS()
	d := &decliner{ns: ns, no: map[string]bool{"absent": true}}
	r := New(ns, d, Options{})
	root := ns.Root()
	ctx := context.Background()

	waiting := make(chan struct{})
	r.hooks.waiting = func(name string, writer bool) { close(waiting) }
	r.hooks.published = func(dir *dcache.Node, name string) {
		r.hooks.published = nil // the waiter below must not block here
		go func() {
			if _, err := r.Lookup(ctx, root, "absent", user); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("waiter: %v, want ENOENT", err)
			}
		}()
		waitChan(t, waiting, 5*time.Second, "the second lookup to wait on the record")
	}
	if _, err := r.Lookup(ctx, root, "absent", user); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("owner: %v, want ENOENT", err)
	}
	if n := d.declines.Load(); n != 1 {
		t.Errorf("Declines called %d times for two lookups sharing a miss, want 1", n)
	}
	settled(t, r)
}
