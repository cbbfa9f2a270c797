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
//
// # Refused changes
//
// A change asked of the daemon and refused — a request to the control
// socket answered 403, or 4xx for a bad request that would have changed
// something — is logged too (Refused): who asked (pid, uid, gid, comm),
// which endpoint, the path it would have changed, the error code and
// why. They are rate-limited by the same rules with buckets of their own,
// one per caller uid ("uid N") rather than per name, so that a refusal
// storm neither floods the log nor hides misses; held-back refusals are
// counted in the next line for that uid and summed up by a line
// "refusals suppressed" (field "caller").
//
// # Names
//
// A name or path that is not valid UTF-8 is written as an array of its
// bytes, as the control socket's JSON does (zap would write U+FFFD in
// place of each such byte, a different name).
package audit

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

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
	// Rate and Burst are each name's (or caller's) bucket: default 1 line
	// a second, bursts of 5.
	Rate  rate.Limit
	Burst int
	// TotalRate and TotalBurst bound the lines of all names together (and
	// apart from them, of all refusals together): default 100 lines a
	// second, bursts of 200.
	TotalRate  rate.Limit
	TotalBurst int
	// MaxNames bounds the names (callers) with a bucket of their own;
	// default 4096.
	MaxNames int
	// SummaryEvery is how often held-back counts of quiet names are
	// logged; default 10 s.
	SummaryEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Auditor logs miss decisions and refused changes. Safe for concurrent
// use.
type Auditor struct {
	opts Options
	logs []*zap.Logger

	misses  limiter // keyed by path
	refused limiter // keyed by caller uid

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// limiter is the rate limit of one kind of line: a bucket per key, one
// for all keys.
type limiter struct {
	opts *Options

	mu sync.Mutex // a leaf
	// Lines held back, ever: next to mu, which a storm takes with it.
	suppressed atomic.Uint64
	// Guarded by mu:
	total      *rate.Limiter // all keys together (used under mu only)
	totalEmpty time.Time     // total has no token before then
	names      map[string]*bucket
	overflow   *bucket // "*": keys past MaxNames, and new keys total held back
	nextSweep  time.Time
	key        []byte // scratch: the key of the decision at hand

	logged atomic.Uint64 // lines written (per logger), ever
}

type bucket struct {
	name string // the key in names; "*" for the overflow bucket
	lim  *rate.Limiter
	held uint64 // held back since the last line for this key
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
	a := &Auditor{opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	a.misses.init(&a.opts)
	a.refused.init(&a.opts)
	if opts.Log != nil {
		a.logs = append(a.logs, opts.Log.Named("audit"))
	}
	if opts.File != nil {
		a.logs = append(a.logs, opts.File)
	}
	go a.summaries()
	return a
}

func (l *limiter) init(opts *Options) {
	l.opts = opts
	l.names = make(map[string]*bucket)
	l.total = rate.NewLimiter(opts.TotalRate, opts.TotalBurst)
	l.overflow = l.newBucket("*")
}

func (l *limiter) newBucket(name string) *bucket {
	return &bucket{name: name, lim: rate.NewLimiter(l.opts.Rate, l.opts.Burst)}
}

// appendPath appends the path of mi to k.
func appendPath(k []byte, mi *lookup.MissInfo) []byte {
	if mi.Dir != "" {
		k = append(k, mi.Dir...)
		k = append(k, '/')
	}
	return append(k, mi.Name...)
}

// totalLetsLocked reports whether the bucket for all keys has a token at
// now, taking none. Preconditions: l.mu held.
func (l *limiter) totalLetsLocked(now time.Time) bool {
	if now.Before(l.totalEmpty) { // a storm: spare total's lock
		return false
	}
	// TokensAt of an infinite limit is NaN at times; Allow always holds.
	if l.opts.TotalRate == rate.Inf {
		return true
	}
	tokens := l.total.TokensAt(now)
	if tokens >= 1 {
		return true
	}
	// Only admitLocked takes tokens, under l.mu, and only after this said
	// yes: none is taken before the next one comes, at the rate (rounded
	// down, so the limiter has the last word).
	if r := float64(l.opts.TotalRate); r > 0 {
		l.totalEmpty = now.Add(time.Duration(min((1-tokens)/r, 1) * float64(time.Second)))
	}
	return false
}

// newBucketLocked returns a bucket for key, which has none: its own if
// there is room for it (after dropping idle buckets, at most once a
// second), else the shared one. Preconditions: l.mu held.
func (l *limiter) newBucketLocked(key string, now time.Time) *bucket {
	if len(l.names) >= l.opts.MaxNames && !now.Before(l.nextSweep) {
		for n, b := range l.names { // drop the idle ones: a full bucket, nothing held
			if b.held == 0 && b.lim.TokensAt(now) >= float64(l.opts.Burst) {
				delete(l.names, n)
			}
		}
		l.nextSweep = now.Add(time.Second)
	}
	if len(l.names) >= l.opts.MaxNames {
		return l.overflow
	}
	b := l.newBucket(key)
	l.names[key] = b
	return b
}

// admitLocked decides on a line for l.key (set by the caller) at now. If
// it may be written, ok is true, name is the key to log (the bucket's),
// held the lines held back for it since its last one, and shared whether
// it was judged by the overflow bucket. Otherwise it is counted. It
// releases l.mu. Preconditions: l.mu held.
func (l *limiter) admitLocked(now time.Time) (name string, held uint64, shared, ok bool) {
	b := l.names[string(l.key)]
	// Take a token from both buckets or from neither: the total is asked
	// first without taking one, so that a key's storm does not drain it.
	totalLets := l.totalLetsLocked(now)
	if b == nil {
		if !totalLets {
			l.overflow.held++ // no bucket made for a line that cannot be written
			l.suppressed.Add(1)
			l.mu.Unlock()
			return "", 0, false, false
		}
		b = l.newBucketLocked(string(l.key), now)
	}
	if !totalLets || !b.lim.AllowN(now, 1) || !l.total.AllowN(now, 1) {
		b.held++
		l.suppressed.Add(1)
		l.mu.Unlock()
		return "", 0, false, false
	}
	held = b.held
	b.held = 0
	name, shared = b.name, b == l.overflow
	if shared {
		name = string(l.key)
	}
	l.mu.Unlock()
	l.logged.Add(1)
	return name, held, shared, true
}

// Miss records one miss decision (lookup.Options.Observe).
//
// It runs on the goroutine of the FUSE request that missed, for every
// decision: one that is held back costs one lock and no allocation (the
// path is looked up through a scratch buffer, a new name gets no bucket
// while the bucket for all names is empty).
func (a *Auditor) Miss(mi lookup.MissInfo) {
	now := a.opts.Now()
	l := &a.misses
	l.mu.Lock()
	l.key = appendPath(l.key[:0], &mi)
	name, held, shared, ok := l.admitLocked(now)
	if !ok {
		return
	}
	fields := []zap.Field{
		nameField("name", name),
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
	if shared {
		fields = append(fields, zap.Bool("shared_limit", true))
	}
	for _, lg := range a.logs {
		lg.Info("miss", fields...)
	}
}

// Refusal is one refused change: a request that would have changed the
// namespace or the daemon, answered with an error.
type Refusal struct {
	Pid, Uid, Gid uint32 // the caller (the connection's peer credential)
	Endpoint      string // "/v1/register"
	Path          string // what it would have changed, as the request said ("": it said nothing)
	Code          string // the error code answered: "permission_denied", "invalid_path", ...
	Why           string // the error message answered
}

// Refused records one refused change. It reads the caller's comm from
// /proc: call it while the caller waits for its answer.
func (a *Auditor) Refused(r Refusal) {
	now := a.opts.Now()
	l := &a.refused
	l.mu.Lock()
	l.key = strconv.AppendUint(append(l.key[:0], "uid "...), uint64(r.Uid), 10)
	_, held, shared, ok := l.admitLocked(now)
	if !ok {
		return
	}
	fields := []zap.Field{
		zap.Uint32("pid", r.Pid),
		zap.Uint32("uid", r.Uid),
		zap.Uint32("gid", r.Gid),
		zap.String("comm", comm(r.Pid)),
		zap.String("endpoint", r.Endpoint),
		nameField("path", r.Path),
		zap.String("code", r.Code),
		zap.String("why", r.Why),
	}
	if held > 0 {
		fields = append(fields, zap.Uint64("suppressed", held))
	}
	if shared {
		fields = append(fields, zap.Bool("shared_limit", true))
	}
	for _, lg := range a.logs {
		lg.Info("refused", fields...)
	}
}

// nameField is a name as a string if it is valid UTF-8, else as the
// array of its bytes.
func nameField(key, name string) zap.Field {
	if utf8.ValidString(name) {
		return zap.String(key, name)
	}
	return zap.Uint8s(key, []byte(name))
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

type held struct {
	key string
	n   uint64
}

// quiet takes the held-back counts of each key whose bucket would let a
// line through (it went quiet), or of all.
func (l *limiter) quiet(now time.Time, all bool) []held {
	var out []held
	l.mu.Lock()
	defer l.mu.Unlock()
	take := func(key string, b *bucket) {
		if b.held > 0 && (all || b.lim.TokensAt(now) >= 1) {
			out = append(out, held{key, b.held})
			b.held = 0
		}
	}
	for k, b := range l.names {
		take(k, b)
	}
	take("*", l.overflow)
	return out
}

// flush logs "misses suppressed" for each name, and "refusals
// suppressed" for each caller, with held-back lines whose bucket would
// let a line through, or for all at the end.
func (a *Auditor) flush(all bool) {
	now := a.opts.Now()
	for _, h := range a.misses.quiet(now, all) {
		for _, lg := range a.logs {
			lg.Info("misses suppressed", nameField("name", h.key), zap.Uint64("suppressed", h.n))
		}
	}
	for _, h := range a.refused.quiet(now, all) {
		for _, lg := range a.logs {
			lg.Info("refusals suppressed", zap.String("caller", h.key), zap.Uint64("suppressed", h.n))
		}
	}
}

// Suppressed returns how many lines (misses and refusals) were held back
// so far.
func (a *Auditor) Suppressed() uint64 {
	return a.misses.suppressed.Load() + a.refused.suppressed.Load()
}

// Logged returns how many lines (misses and refusals) were logged so far.
func (a *Auditor) Logged() uint64 { return a.misses.logged.Load() + a.refused.logged.Load() }

// Close logs the held-back counts that remain and stops the ticker.
// Idempotent.
func (a *Auditor) Close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
	})
}
