package metrics

import (
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/sync/refcount"
)

const (
	// numOpBuckets is len(opBuckets); New checks it.
	numOpBuckets = 10

	// cacheLine is the padding unit between shards: 128, not 64, because
	// amd64's adjacent-line prefetcher pulls lines in pairs (as in
	// sync/refcount and sync.Pool).
	cacheLine = 128
)

// opCell is one op's histogram within a shard: non-cumulative bucket counts
// (buckets[numOpBuckets] is the overflow bucket, +Inf only) and the sum of
// the durations in nanoseconds. The count is the total of the buckets, so
// an observation is two atomic adds on neighbouring words.
type opCell struct {
	buckets [numOpBuckets + 1]atomic.Uint64
	sumNs   atomic.Int64
}

// opCells is one shard's data: a cell per op.
type opCells [fs.NumOps]opCell

// opShard is one P's opCells, with a cache line of padding before it and
// enough after it that no two shards' data share a (pair of) cache line(s).
type opShard struct {
	_ [cacheLine]byte
	opCells
	_ [cacheLine - unsafe.Sizeof(opCells{})%cacheLine]byte
}

// opHist is the histogram devfsd_fuse_request_duration_seconds{op}:
// a sharded replacement for a HistogramVec whose children would be shared
// by every CPU serving requests. Observe adds to the shard of the caller's
// P (refcount.ProcHint), atomically, since the goroutine may have moved to
// another P by then; Collect sums the shards and reports one const
// histogram per op, with the same name, help, label and buckets as the
// HistogramVec it replaces.
type opHist struct {
	desc *prometheus.Desc
	// boundsNs[i] is the largest Duration whose Seconds() is <= opBuckets[i]
	// so that bucketing nanoseconds as integers puts every duration where
	// prometheus's Observe(d.Seconds()) would.
	boundsNs [numOpBuckets]int64
	// shards is made by newOpHist and never changes; every element is
	// updated only by atomic operations. mask is len(shards)-1.
	shards []opShard
	mask   int
	// created is when the histogram was made, reported as the series'
	// created timestamp as the HistogramVec's children reported theirs.
	created time.Time
}

// newOpHist makes an opHist with refcount.ShardCount(GOMAXPROCS) shards
// (about 2 KiB each): a power of two, so that a P id is reduced by a mask,
// capped as Ref's. If GOMAXPROCS grows later, Ps share shards: still
// correct (the adds are atomic), just slower.
func newOpHist() *opHist { return newOpHistN(runtime.GOMAXPROCS(0)) }

// newOpHistN makes an opHist with refcount.ShardCount(n) shards. Tests use
// n = 1 to make every goroutine share one shard.
func newOpHistN(n int) *opHist {
	if len(opBuckets) != numOpBuckets {
		panic("metrics: numOpBuckets does not match opBuckets")
	}
	size := refcount.ShardCount(n)
	h := &opHist{
		desc: prometheus.NewDesc("devfsd_fuse_request_duration_seconds",
			"FUSE requests answered, by opcode, with their latency.", []string{"op"}, nil),
		shards:  make([]opShard, size),
		mask:    size - 1,
		created: time.Now(),
	}
	for i, b := range opBuckets {
		h.boundsNs[i] = boundNs(b)
	}
	return h
}

// boundNs returns the largest n such that time.Duration(n).Seconds() <= b:
// d <= boundNs(b) exactly when d.Seconds() <= b, which is the test
// prometheus's histogram applies to an upper bound b.
func boundNs(b float64) int64 {
	n := int64(b * 1e9)
	for time.Duration(n).Seconds() > b {
		n--
	}
	for time.Duration(n+1).Seconds() <= b {
		n++
	}
	return n
}

// observe records one request of kind op (< fs.NumOps) that took d.
func (h *opHist) observe(op fs.Op, d time.Duration) {
	ns := int64(d)
	i := 0
	for i < numOpBuckets && ns > h.boundsNs[i] {
		i++
	}
	c := &h.shards[refcount.ProcHint()&h.mask].opCells[op]
	c.buckets[i].Add(1)
	c.sumNs.Add(ns)
}

// Describe implements prometheus.Collector.
func (h *opHist) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector: one histogram per op, every op
// present (count 0 until its first request). The shards are read while
// requests keep landing, so a scrape's sum may lag or lead its count by the
// requests in between; the count is always the total of the buckets.
func (h *opHist) Collect(ch chan<- prometheus.Metric) {
	for op := fs.Op(0); op < fs.NumOps; op++ {
		var counts [numOpBuckets + 1]uint64
		var sumNs int64
		for s := range h.shards {
			c := &h.shards[s].opCells[op]
			for i := range counts {
				counts[i] += c.buckets[i].Load()
			}
			sumNs += c.sumNs.Load()
		}
		cum := make(map[float64]uint64, numOpBuckets)
		var n uint64
		for i, b := range opBuckets {
			n += counts[i]
			cum[b] = n
		}
		n += counts[numOpBuckets]
		ch <- prometheus.MustNewConstHistogramWithCreatedTimestamp(h.desc, n, time.Duration(sumNs).Seconds(), cum, h.created, op.String())
	}
}
