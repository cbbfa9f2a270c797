// Package audit logs every miss decision — a lookup that missed and asked
// the loader: who asked (pid, uid, gid, the process's comm), for what
// name, of which loader, with what result, how long it took — at info
// level through zap, and, if configured, as JSON lines to a file of its
// own (cmd builds both loggers; this package builds none).
//
// # Rate limit
//
// A storm of misses on one name (a program probing /dev/nvidia0 in a
// loop) must not flood the log. Each name has a token bucket
// (golang.org/x/time/rate; default 1 line a second, bursts of 5); a miss
// that finds the bucket empty is not logged but counted, and the next line
// for that name says how many were held back ("suppressed": N). Names
// whose lines are held back when they go quiet are summed up by a line
// "misses suppressed" at most every SummaryEvery, and at Close; so every
// decision is either logged or counted in a later line. At most MaxNames
// names have a bucket of their own; past that, idle buckets are dropped,
// and if none is idle the other names share one bucket (name "*").
// Above the per-name buckets, one bucket for all names (default 100 lines
// a second, bursts of 200) bounds a storm spread over many names — a
// scanner probing sd[a-z][0-9], or mknod churn, each name missing once. A
// line it holds back is counted against its name if the name has a bucket
// already. A name that has none is not given one then (only a line that
// may be written makes a bucket, so a storm over new names costs no memory
// per name): its decision is counted against the shared bucket "*", whose
// "misses suppressed" line thus also sums up the names held back by the
// bucket for all names (every SummaryEvery while such a storm lasts). Only
// a decision that both buckets let through takes a token from each: one
// held back by its name's bucket leaves the bucket for all names as it
// was.
//
// Decisions are the loads of package lookup (its Observe hook): one per
// load, the first caller's; lookups that joined the load are counted in
// the line ("waiters"), and answers from a cached miss are not decisions
// (they are counted in the metrics).
package audit

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/devfsd/devfsd/lookup"
)

// Options configures an Auditor. Zero fields take the defaults.
type Options struct {
	// Log receives the lines at info level (the daemon's logger); nil:
	// none.
	Log *zap.Logger
	// File, if not nil, receives the same lines (a JSON-lines logger on
	// the --audit-log file).
	File *zap.Logger
	// Rate and Burst are each name's bucket: default 1 line a second,
	// bursts of 5.
	Rate  rate.Limit
	Burst int
	// TotalRate and TotalBurst bound the lines of all names together:
	// default 100 lines a second, bursts of 200.
	TotalRate  rate.Limit
	TotalBurst int
	// MaxNames bounds the names with a bucket of their own; default 4096.
	MaxNames int
	// SummaryEvery is how often held-back counts of quiet names are
	// logged; default 10 s.
	SummaryEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Auditor logs miss decisions. Safe for concurrent use.
type Auditor struct {
	opts Options
	logs []*zap.Logger

	mu sync.Mutex // a leaf
	// Lines held back, ever: next to mu, which a storm takes with it.
	suppressed atomic.Uint64
	// Guarded by mu:
	total      *rate.Limiter // all names together (used under mu only)
	totalEmpty time.Time     // total has no token before then
	names      map[string]*bucket
	overflow   *bucket // "*": names past MaxNames, and new names total held back
	nextSweep  time.Time
	key        []byte // scratch: the path of the decision at hand

	logged atomic.Uint64 // lines written (per logger), ever

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type bucket struct {
	name string // the key in names; "*" for the overflow bucket
	lim  *rate.Limiter
	held uint64 // held back since the last line for this name
}

// New returns an auditor; Close stops its summary ticker.
func New(opts Options) *Auditor {
	if opts.Rate == 0 {
		opts.Rate = 1
	}
	if opts.Burst <= 0 {
		opts.Burst = 5
	}
	if opts.TotalRate == 0 {
		opts.TotalRate = 100
	}
	if opts.TotalBurst <= 0 {
		opts.TotalBurst = 200
	}
	if opts.MaxNames <= 0 {
		opts.MaxNames = 4096
	}
	if opts.SummaryEvery <= 0 {
		opts.SummaryEvery = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Auditor{opts: opts, names: make(map[string]*bucket),
		total: rate.NewLimiter(opts.TotalRate, opts.TotalBurst),
		stop:  make(chan struct{}), done: make(chan struct{})}
	a.overflow = a.newBucket("*")
	if opts.Log != nil {
		a.logs = append(a.logs, opts.Log.Named("audit"))
	}
	if opts.File != nil {
		a.logs = append(a.logs, opts.File)
	}
	go a.summaries()
	return a
}

func (a *Auditor) newBucket(name string) *bucket {
	return &bucket{name: name, lim: rate.NewLimiter(a.opts.Rate, a.opts.Burst)}
}

// keyLocked builds the path of mi in a.key and returns it; the caller
// looks it up as a.names[string(key)], which does not allocate.
// Preconditions: a.mu held.
func (a *Auditor) keyLocked(mi *lookup.MissInfo) []byte {
	k := a.key[:0]
	if mi.Dir != "" {
		k = append(k, mi.Dir...)
		k = append(k, '/')
	}
	k = append(k, mi.Name...)
	a.key = k
	return k
}

// path returns the path of mi as a string (allocating if mi.Dir != "").
func path(mi *lookup.MissInfo) string {
	if mi.Dir == "" {
		return mi.Name
	}
	return mi.Dir + "/" + mi.Name
}

// totalLetsLocked reports whether the bucket for all names has a token at
// now, taking none. Preconditions: a.mu held.
func (a *Auditor) totalLetsLocked(now time.Time) bool {
	if now.Before(a.totalEmpty) { // a storm: spare total's lock
		return false
	}
	// TokensAt of an infinite limit is NaN at times; Allow always holds.
	if a.opts.TotalRate == rate.Inf {
		return true
	}
	tokens := a.total.TokensAt(now)
	if tokens >= 1 {
		return true
	}
	// Only Miss takes tokens, under a.mu, and only after this said yes:
	// none is taken before the next one comes, at the rate (rounded down,
	// so the limiter has the last word).
	if r := float64(a.opts.TotalRate); r > 0 {
		a.totalEmpty = now.Add(time.Duration(min((1-tokens)/r, 1) * float64(time.Second)))
	}
	return false
}

// newBucketLocked returns a bucket for path, which has none: its own if
// there is room for it (after dropping idle buckets, at most once a
// second), else the shared one. Preconditions: a.mu held.
func (a *Auditor) newBucketLocked(path string, now time.Time) *bucket {
	if len(a.names) >= a.opts.MaxNames && !now.Before(a.nextSweep) {
		for n, b := range a.names { // drop the idle ones: a full bucket, nothing held
			if b.held == 0 && b.lim.TokensAt(now) >= float64(a.opts.Burst) {
				delete(a.names, n)
			}
		}
		a.nextSweep = now.Add(time.Second)
	}
	if len(a.names) >= a.opts.MaxNames {
		return a.overflow
	}
	b := a.newBucket(path)
	a.names[path] = b
	return b
}

// Miss records one miss decision (lookup.Options.Observe).
//
// It runs on the goroutine of the FUSE request that missed, for every
// decision: one that is held back costs one lock and no allocation (the
// path is looked up through a scratch buffer, a new name gets no bucket
// while the bucket for all names is empty).
func (a *Auditor) Miss(mi lookup.MissInfo) {
	now := a.opts.Now()
	a.mu.Lock()
	b := a.names[string(a.keyLocked(&mi))]
	// Take a token from both buckets or from neither: the total is asked
	// first without taking one, so that a name's storm does not drain it.
	totalLets := a.totalLetsLocked(now)
	if b == nil {
		if !totalLets {
			a.overflow.held++ // no bucket made for a line that cannot be written
			a.suppressed.Add(1)
			a.mu.Unlock()
			return
		}
		b = a.newBucketLocked(path(&mi), now)
	}
	if !totalLets || !b.lim.AllowN(now, 1) || !a.total.AllowN(now, 1) {
		b.held++
		a.suppressed.Add(1)
		a.mu.Unlock()
		return
	}
	held := b.held
	b.held = 0
	a.mu.Unlock()
	name := b.name
	if b == a.overflow {
		name = path(&mi)
	}
	fields := []zap.Field{
		zap.String("name", name),
		zap.Uint32("pid", mi.Caller.Pid),
		zap.Uint32("uid", mi.Caller.Uid),
		zap.Uint32("gid", mi.Caller.Gid),
		zap.String("comm", comm(mi.Caller.Pid)),
		zap.String("origin", mi.Caller.Origin.String()),
		zap.String("loader", mi.Loader),
		zap.String("result", mi.Result),
		zap.Duration("duration", mi.Duration),
		zap.Int("waiters", mi.Waiters),
	}
	if mi.Err != nil && mi.Result != lookup.ResultFound {
		fields = append(fields, zap.String("error", mi.Err.Error()))
	}
	if held > 0 {
		fields = append(fields, zap.Uint64("suppressed", held))
	}
	if b == a.overflow {
		fields = append(fields, zap.Bool("shared_limit", true))
	}
	for _, l := range a.logs {
		l.Info("miss", fields...)
	}
	a.logged.Add(1)
}

// comm returns the command name of process (thread) pid, from /proc.
// It is read on every logged line, so with three system calls into a
// stack buffer: os.ReadFile makes five (fstat, a second read) and
// allocates, about 3x the time here.
func comm(pid uint32) string {
	if pid == 0 {
		return ""
	}
	var pathBuf [32]byte
	p := append(append(append(pathBuf[:0], "/proc/"...), strconv.FormatUint(uint64(pid), 10)...), "/comm"...)
	fd, err := unix.Open(string(p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "?"
	}
	var buf [64]byte // TASK_COMM_LEN is 16
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n < 0 {
		return "?"
	}
	return string(bytes.TrimSpace(buf[:n]))
}

// summaries logs the held-back counts of quiet names every SummaryEvery.
func (a *Auditor) summaries() {
	defer close(a.done)
	t := time.NewTicker(a.opts.SummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.flush(false)
		case <-a.stop:
			a.flush(true)
			return
		}
	}
}

// flush logs "misses suppressed" for each name with held-back lines whose
// bucket would let a line through (it went quiet), or for all at the end.
func (a *Auditor) flush(all bool) {
	type held struct {
		name string
		n    uint64
	}
	var out []held
	now := a.opts.Now()
	a.mu.Lock()
	take := func(name string, b *bucket) {
		if b.held > 0 && (all || b.lim.TokensAt(now) >= 1) {
			out = append(out, held{name, b.held})
			b.held = 0
		}
	}
	for n, b := range a.names {
		take(n, b)
	}
	take("*", a.overflow)
	a.mu.Unlock()
	for _, h := range out {
		for _, l := range a.logs {
			l.Info("misses suppressed", zap.String("name", h.name), zap.Uint64("suppressed", h.n))
		}
	}
}

// Suppressed returns how many lines were held back so far.
func (a *Auditor) Suppressed() uint64 { return a.suppressed.Load() }

// Logged returns how many decisions were logged so far.
func (a *Auditor) Logged() uint64 { return a.logged.Load() }

// Close logs the held-back counts that remain and stops the ticker.
// Idempotent.
func (a *Auditor) Close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
	})
}
