package metrics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/sync/refcount"
)

// histo is one gathered histogram series, reduced to what the text format
// shows.
type histo struct {
	help    string
	created bool // has a created timestamp
	count   uint64
	sum     float64
	bounds  []float64
	cum     []uint64 // cumulative counts, one per bound
}

// gatherHistos returns the series of the histogram family name in reg, by
// the value of their one label.
func gatherHistos(t *testing.T, g prometheus.Gatherer, name string) map[string]histo {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]histo{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if got := mf.GetType().String(); got != "HISTOGRAM" {
			t.Fatalf("%s is a %s", name, got)
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 {
				t.Fatalf("%s has labels %v", name, m.GetLabel())
			}
			h := m.GetHistogram()
			x := histo{help: mf.GetHelp(), created: h.GetCreatedTimestamp() != nil, count: h.GetSampleCount(), sum: h.GetSampleSum()}
			for _, b := range h.GetBucket() {
				x.bounds = append(x.bounds, b.GetUpperBound())
				x.cum = append(x.cum, b.GetCumulativeCount())
			}
			out[m.GetLabel()[0].GetName()+"="+m.GetLabel()[0].GetValue()] = x
		}
	}
	return out
}

// oldOpHist is the HistogramVec that ObserveOp used before the sharded
// histogram, with its children resolved the way New resolved them.
func oldOpHist(reg prometheus.Registerer) (obs [fs.NumOps]prometheus.Observer) {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "devfsd_fuse_request_duration_seconds", Help: "FUSE requests answered, by opcode, with their latency.", Buckets: opBuckets,
	}, []string{"op"})
	for op := fs.Op(0); op < fs.NumOps; op++ {
		obs[op] = v.WithLabelValues(op.String())
	}
	reg.MustRegister(v)
	return obs
}

// sumClose reports whether two sums of seconds agree within rounding.
func sumClose(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// The sharded histogram's scrape equals the HistogramVec's for the same
// observations: the same series (every op, observed or not), help, bucket
// bounds and cumulative counts, and counts; sums within rounding.
func TestOpHistMatchesHistogramVec(t *testing.T) {
	newReg, oldReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	m := New(newReg, Sources{})
	old := oldOpHist(oldReg)

	// Every bound, one nanosecond either side, and the edges.
	durs := []time.Duration{0, 1, -1, time.Microsecond, 10 * time.Second, math.MaxInt64 / 4}
	for i := range m.ops.boundsNs {
		b := time.Duration(m.ops.boundsNs[i])
		durs = append(durs, b-1, b, b+1)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		// Log-uniform from 1ns to about 10s.
		durs = append(durs, time.Duration(math.Exp(rng.Float64()*math.Log(1e10))))
	}
	// Leave some ops unobserved: they must still be there, at zero.
	for i, d := range durs {
		op := fs.Op(i % int(fs.NumOps-3))
		m.ObserveOp(op, d)
		old[op].Observe(d.Seconds())
	}
	m.ObserveOp(fs.NumOps, time.Second) // ignored by both
	m.ObserveOp(fs.NumOps+7, time.Second)

	got := gatherHistos(t, newReg, "devfsd_fuse_request_duration_seconds")
	want := gatherHistos(t, oldReg, "devfsd_fuse_request_duration_seconds")
	if len(got) != int(fs.NumOps) || len(want) != int(fs.NumOps) {
		t.Fatalf("%d series, want %d (the HistogramVec has %d)", len(got), fs.NumOps, len(want))
	}
	var total uint64
	for op := fs.Op(0); op < fs.NumOps; op++ {
		k := "op=" + op.String()
		g, w := got[k], want[k]
		if g.help != w.help || g.created != w.created || g.count != w.count || fmt.Sprint(g.bounds) != fmt.Sprint(w.bounds) || fmt.Sprint(g.cum) != fmt.Sprint(w.cum) {
			t.Errorf("%s: got %+v, want %+v", k, g, w)
		}
		if !sumClose(g.sum, w.sum) {
			t.Errorf("%s: sum %v, want %v", k, g.sum, w.sum)
		}
		if op >= fs.NumOps-3 && g.count != 0 {
			t.Errorf("%s: count %d for an op never observed", k, g.count)
		}
		total += g.count
	}
	if total != uint64(len(durs)) {
		t.Errorf("%d observations counted, want %d", total, len(durs))
	}
}

// boundNs agrees with the float comparison prometheus makes, on every
// bound: d <= boundNs(b) exactly when d.Seconds() <= b.
func TestBoundNs(t *testing.T) {
	for _, b := range append(append([]float64{}, opBuckets...), loadBuckets...) {
		n := boundNs(b)
		if time.Duration(n).Seconds() > b || time.Duration(n+1).Seconds() <= b {
			t.Errorf("boundNs(%v) = %d: %v, %v", b, n, time.Duration(n).Seconds(), time.Duration(n+1).Seconds())
		}
	}
}

// Concurrent observations from many goroutines all count, exactly: on the
// shards GOMAXPROCS gives, on one shard everybody shares, and on more
// shards than Ps.
func TestOpHistConcurrent(t *testing.T) {
	for _, shards := range []int{0, 1, refcount.ShardCount(1 << 20)} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			h := newOpHist()
			if shards > 0 {
				h = newOpHistN(shards)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(h)

			const goroutines, per = 16, 2000
			durs := []time.Duration{3 * time.Microsecond, 25 * time.Microsecond, time.Millisecond, 3 * time.Second}
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range per {
						h.observe(fs.Op((g+i)%int(fs.NumOps)), durs[i%len(durs)])
					}
				})
			}
			wg.Wait()

			// Expected per op, computed the same way.
			var count [fs.NumOps]uint64
			var sumNs [fs.NumOps]int64
			for g := range goroutines {
				for i := range per {
					op := (g + i) % int(fs.NumOps)
					count[op]++
					sumNs[op] += int64(durs[i%len(durs)])
				}
			}
			got := gatherHistos(t, reg, "devfsd_fuse_request_duration_seconds")
			for op := fs.Op(0); op < fs.NumOps; op++ {
				x := got["op="+op.String()]
				if x.count != count[op] || x.cum[len(x.cum)-1] > x.count {
					t.Errorf("%v: count %d (last bucket %d), want %d", op, x.count, x.cum[len(x.cum)-1], count[op])
				}
				if want := time.Duration(sumNs[op]).Seconds(); x.sum != want {
					t.Errorf("%v: sum %v, want %v", op, x.sum, want)
				}
			}
		})
	}
}

// Observing requests of any kind and length allocates nothing.
func TestObserveOpAllocsAny(t *testing.T) {
	m := New(prometheus.NewRegistry(), Sources{})
	i := 0
	durs := []time.Duration{0, time.Microsecond, time.Millisecond, time.Hour}
	n := testing.AllocsPerRun(1000, func() {
		m.ObserveOp(fs.Op(i%int(fs.NumOps+1)), durs[i%len(durs)])
		i++
	})
	if n != 0 {
		t.Errorf("ObserveOp allocates %v times", n)
	}
}

// Once a (loader, result) pair has been seen, counting another load of it
// allocates nothing.
func TestObserveLoadAllocs(t *testing.T) {
	m := New(prometheus.NewRegistry(), Sources{})
	mis := []lookup.MissInfo{
		{Loader: "modload", Result: "found", Duration: time.Millisecond},
		{Loader: "modload", Result: "absent", Duration: 2 * time.Millisecond},
		{Result: "timeout", Duration: time.Second},
	}
	for _, mi := range mis {
		m.ObserveLoad(mi)
	}
	i := 0
	n := testing.AllocsPerRun(1000, func() {
		m.ObserveLoad(mis[i%len(mis)])
		i++
	})
	if n != 0 {
		t.Errorf("ObserveLoad allocates %v times in the steady state", n)
	}
}

// Loads counted concurrently, many of them pairs seen for the first time
// at once, all land in the series they did before the cache: by loader and
// result, durations by loader, "unknown" for a nameless loader.
func TestObserveLoadConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Sources{})
	loaders := []string{"", "a", "b", "c", "d"}
	results := []string{"found", "absent", "timeout", "error"}
	const goroutines, per = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range per {
				m.ObserveLoad(lookup.MissInfo{
					Loader:   loaders[(g+i)%len(loaders)],
					Result:   results[i%len(results)],
					Duration: time.Duration(i) * time.Millisecond,
				})
			}
		})
	}
	wg.Wait()

	wantCount := map[[2]string]float64{}
	wantDur := map[string]uint64{}
	for g := range goroutines {
		for i := range per {
			l := loaders[(g+i)%len(loaders)]
			if l == "" {
				l = "unknown"
			}
			wantCount[[2]string{l, results[i%len(results)]}]++
			wantDur[l]++
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gotCount := map[[2]string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "devfsd_loads_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var k [2]string
			for _, lp := range mt.GetLabel() {
				switch lp.GetName() {
				case "loader":
					k[0] = lp.GetValue()
				case "result":
					k[1] = lp.GetValue()
				}
			}
			gotCount[k] = mt.GetCounter().GetValue()
		}
	}
	if fmt.Sprint(gotCount) != fmt.Sprint(wantCount) {
		t.Errorf("devfsd_loads_total: %v, want %v", gotCount, wantCount)
	}
	dur := gatherHistos(t, reg, "devfsd_load_duration_seconds")
	if len(dur) != len(wantDur) {
		t.Errorf("devfsd_load_duration_seconds has %d series, want %d", len(dur), len(wantDur))
	}
	for l, n := range wantDur {
		if got := dur["loader="+l].count; got != n {
			t.Errorf("devfsd_load_duration_seconds_count{loader=%q} = %d, want %d", l, got, n)
		}
	}
}

// BenchmarkObserveOp measures a request's observation from parallel
// handler goroutines, alternating MKNOD and UNLINK as the churn benchmark
// does: the sharded histogram ObserveOp uses against the prometheus
// Histograms (HistogramVec children resolved once) it replaced.
func BenchmarkObserveOp(b *testing.B) {
	durs := [...]time.Duration{18 * time.Microsecond, 45 * time.Microsecond, 9 * time.Microsecond, 130 * time.Microsecond}
	run := func(b *testing.B, observe func(fs.Op, time.Duration)) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				op := fs.OpMknod
				if i&1 != 0 {
					op = fs.OpUnlink
				}
				observe(op, durs[i%len(durs)])
				i++
			}
		})
	}
	b.Run("impl=sharded", func(b *testing.B) {
		run(b, New(prometheus.NewRegistry(), Sources{}).ObserveOp)
	})
	b.Run("impl=prometheus", func(b *testing.B) {
		obs := oldOpHist(prometheus.NewRegistry())
		run(b, func(op fs.Op, d time.Duration) { obs[op].Observe(d.Seconds()) })
	})
}

// BenchmarkObserveLoad counts declined misses of one loader, as a storm of
// misses of names nobody provides does.
func BenchmarkObserveLoad(b *testing.B) {
	m := New(prometheus.NewRegistry(), Sources{})
	mi := lookup.MissInfo{Loader: "builtin", Result: lookup.ResultAbsent, Duration: 3 * time.Microsecond}
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveLoad(mi)
	}
}
