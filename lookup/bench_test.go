package lookup

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// BenchmarkLookup measures Resolver.Lookup of one name in the root, from
// b.RunParallel: positive (the name is registered), negative (a cached
// miss), miss (no negative caching, a loader that returns at once: every
// call publishes a record, runs a load goroutine, finishes the record; at
// -cpu 2 concurrent misses share records). baseline is a map read under a
// sync.RWMutex, the least a lookup could cost.
func BenchmarkLookup(b *testing.B) {
	clk := &fixedClock{t: time.Now()}
	instant := LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return nil })
	benchWith := func(b *testing.B, ttl time.Duration, name string, sink dcache.Sink, loader Loader) {
		ns := dcache.New(dcache.Options{Now: clk.Now, NegativeTTL: ttl, Sink: sink})
		ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}, helper)
		r := New(ns, loader, Options{})
		root := ns.Root()
		ctx := context.Background()
		r.Lookup(ctx, root, name, user) // cache the miss, if any
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Lookup(ctx, root, name, user)
			}
		})
	}
	bench := func(b *testing.B, ttl time.Duration, name string, sink dcache.Sink) {
		benchWith(b, ttl, name, sink, instant)
	}
	b.Run("kind=baseline", func(b *testing.B) {
		var mu sync.RWMutex
		m := map[string]*dcache.Node{"null": {}}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.RLock()
				_ = m["null"]
				mu.RUnlock()
			}
		})
	})
	b.Run("kind=positive", func(b *testing.B) { bench(b, time.Hour, "null", nil) })
	b.Run("kind=negative", func(b *testing.B) { bench(b, time.Hour, "nothing", nil) })
	b.Run("kind=miss", func(b *testing.B) { bench(b, -1, "nothing", nil) })
	// A miss the loader declines at once (Decliner: the built-in
	// catalogue's index): no load goroutine, timer or channel.
	b.Run("kind=miss-declined", func(b *testing.B) {
		benchWith(b, -1, "nothing", nil, &decliner{no: map[string]bool{"nothing": true}})
	})
	// With an event sink, as in the daemon (whose namespace always has
	// one): every lookup flushes the event queue.
	b.Run("kind=positive-sink", func(b *testing.B) { bench(b, time.Hour, "null", discard{}) })
	b.Run("kind=negative-sink", func(b *testing.B) { bench(b, time.Hour, "nothing", discard{}) })
}

// discard is a dcache.Sink that drops every event.
type discard struct{}

func (discard) Event(dcache.Event) {}
