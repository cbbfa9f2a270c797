package lookup

import (
	"context"
	"errors"
	"path"
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

func (d *decliner) Load(ctx context.Context, dir, name string, c dcache.Caller) error {
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

// A declined miss publishes no record, so nothing can wait on it:
// concurrent lookups of the name each ask Declines (no lock held) and
// each answer ENOENT without sleeping; the published hook never runs.
func TestDeclinedMissPublishesNoRecord(t *testing.T) {
	ns, _ := newNS()
	d := &decliner{ns: ns, no: map[string]bool{"absent": true}}
	r := New(ns, d, Options{})
	r.hooks.published = func(dir *dcache.Node, name string) {
		t.Errorf("a declined miss of %q published a record", name)
	}
	r.hooks.waiting = func(name string, writer bool) {
		t.Errorf("a lookup of %q waited on a declined miss", name)
	}
	root := ns.Root()
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Lookup(ctx, root, "absent", user); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("lookup: %v, want ENOENT", err)
			}
		}()
	}
	wg.Wait()
	if got := d.declines.Load(); got < 1 || got > n {
		t.Errorf("Declines called %d times for %d lookups, want 1..%d", got, n, n)
	}
	if s := r.Stats(); s.Loads != s.Finished || s.Loads != d.declines.Load() {
		t.Errorf("stats %+v: want loads == finished == Declines calls (%d)", s, d.declines.Load())
	}
	settled(t, r)
}

// A name the loader does not decline, and that appears between the
// Declines answer and the second pass, is found by the second pass's look
// at step 1 without a load.
func TestNotDeclinedNameRegisteredMeanwhileIsFound(t *testing.T) {
	ns, _ := newNS()
	d := &registeringDecliner{ns: ns}
	r := New(ns, d, Options{})
	n, err := r.Lookup(context.Background(), ns.Root(), "late", user)
	if err != nil || n == nil {
		t.Fatalf("lookup: %v, %v; want the node registered during Declines", n, err)
	}
	if d.loads.Load() != 0 {
		t.Errorf("Load called %d times, want 0 (the second pass found the name)", d.loads.Load())
	}
	settled(t, r)
}

// registeringDecliner does not decline, and registers the name from
// Declines, as a registration through the control socket could at that
// moment.
type registeringDecliner struct {
	ns    *dcache.Namespace
	loads atomic.Int64
}

func (d *registeringDecliner) Declines(dir, name string) bool {
	if _, err := d.ns.Register(path.Join(dir, name), dcache.Spec{Type: dcache.TypeChar, Mode: 0o600}, dcache.Caller{Origin: dcache.OriginLoader}); err != nil {
		panic(err)
	}
	return false
}

func (d *registeringDecliner) Load(ctx context.Context, dir, name string, c dcache.Caller) error {
	d.loads.Add(1)
	return nil
}
