package audit

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func miss(name string) lookup.MissInfo {
	return lookup.MissInfo{Dir: "", Name: name, Caller: dcache.Caller{Pid: uint32(os.Getpid()), Uid: 0},
		Loader: "builtin", Result: lookup.ResultAbsent, Err: errors.New("no module"), Duration: time.Millisecond}
}

// A storm on one name is bounded; every decision is logged or counted in
// a later line; other names are not held back by it.
func TestStormIsBounded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.New(core), Now: clk.Now, SummaryEvery: time.Hour})
	for i := 0; i < 10000; i++ {
		a.Miss(miss("nvidia0"))
		if i%1000 == 999 {
			clk.Advance(time.Second) // ten seconds in all
		}
	}
	a.Miss(miss("other"))
	a.Close()
	lines := logs.FilterMessage("miss").FilterField(zap.String("name", "nvidia0")).All()
	if len(lines) > 5+10 {
		t.Errorf("%d lines for 10000 misses; want at most burst + rate*time = 15", len(lines))
	}
	total := uint64(len(lines))
	for _, e := range logs.FilterField(zap.String("name", "nvidia0")).All() {
		if n, ok := e.ContextMap()["suppressed"].(uint64); ok {
			total += n
		}
	}
	if total != 10000 {
		t.Errorf("logged + suppressed = %d, want 10000", total)
	}
	if logs.FilterMessage("misses suppressed").Len() != 1 {
		t.Errorf("no closing summary: %v", logs.All())
	}
	if logs.FilterField(zap.String("name", "other")).Len() != 1 {
		t.Error("another name was held back by the storm")
	}
	l := lines[0].ContextMap()
	if l["comm"] == "" || l["loader"] != "builtin" || l["result"] != "absent" || l["error"] != "no module" {
		t.Errorf("line fields %v", l)
	}
	if a.Suppressed()+a.Logged() != 10001 {
		t.Errorf("counters %d + %d", a.Suppressed(), a.Logged())
	}
}

// Past MaxNames idle buckets are dropped, else the rest share one.
func TestManyNames(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.New(core), Now: clk.Now, MaxNames: 4, Burst: 1, SummaryEvery: time.Hour})
	defer a.Close()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		a.Miss(miss(n))
	}
	if logs.FilterField(zap.Bool("shared_limit", true)).Len() != 1 {
		t.Errorf("the fifth busy name did not share the overflow bucket: %v", logs.All())
	}
	clk.Advance(time.Minute) // every bucket full again: idle
	a.Miss(miss("f"))
	if logs.FilterField(zap.String("name", "f")).FilterField(zap.Bool("shared_limit", true)).Len() != 0 {
		t.Error("idle buckets were not dropped")
	}
}

// BenchmarkMissFullTable is a miss storm over more distinct names than
// the table holds: the sweep of idle buckets must not run on every miss
// (it did, and took 34% of the daemon's CPU under mknod+unlink churn).
func BenchmarkMissFullTable(b *testing.B) {
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.NewNop(), Now: clk.Now, SummaryEvery: time.Hour})
	defer a.Close()
	names := make([]lookup.MissInfo, 2*a.opts.MaxNames)
	for i := range names {
		names[i] = miss("churn" + strconv.Itoa(i))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Miss(names[i%len(names)])
	}
}

// A storm spread over many names, each missing once, is bounded by the
// bucket all names share; every decision is still logged or counted.
func TestStormOverManyNamesIsBounded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.New(core), Now: clk.Now, SummaryEvery: time.Hour,
		TotalRate: 100, TotalBurst: 200})
	for i := 0; i < 10000; i++ {
		a.Miss(miss("sd" + strconv.Itoa(i)))
		if i%1000 == 999 {
			clk.Advance(100 * time.Millisecond) // one second in all
		}
	}
	lines := len(logs.FilterMessage("miss").All())
	a.Close()
	if lines > 200+100 {
		t.Errorf("%d lines for 10000 misses on distinct names; want at most total burst + total rate*time = 300", lines)
	}
	var total uint64
	for _, e := range logs.All() {
		if e.Message == "miss" {
			total++
		}
		if n, ok := e.ContextMap()["suppressed"].(uint64); ok {
			total += n
		}
	}
	if total != 10000 {
		t.Errorf("logged + suppressed = %d, want 10000", total)
	}
	if got := a.Logged() + a.Suppressed(); got != 10000 {
		t.Errorf("Logged()+Suppressed() = %d, want 10000", got)
	}
}

var (
	stormNamesOnce sync.Once
	stormNames     []string
)

// BenchmarkMissStorm is the mknod+unlink churn: misses on ever new names
// from all CPUs at once, on the real clock, so that past the first burst
// the bucket all names share is empty and nearly every decision is held
// back.
func BenchmarkMissStorm(b *testing.B) {
	stormNamesOnce.Do(func() {
		stormNames = make([]string, 1<<20)
		for i := range stormNames {
			stormNames[i] = "churn" + strconv.Itoa(i)
		}
	})
	a := New(Options{Log: zap.NewNop(), SummaryEvery: time.Hour})
	defer a.Close()
	tmpl := miss("")
	tmpl.Dir = "bench"
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mi := tmpl
		i := next.Add(1) << 18 // each goroutine its own run of names
		for pb.Next() {
			mi.Name = stormNames[i&(1<<20-1)]
			i++
			a.Miss(mi)
		}
	})
}

// sumLines returns the "miss" lines and the decisions all lines say were
// held back ("suppressed" on a "miss" line or a "misses suppressed" one).
func sumLines(logs *observer.ObservedLogs) (lines, held uint64) {
	for _, e := range logs.All() {
		if e.Message == "miss" {
			lines++
		}
		if n, ok := e.ContextMap()["suppressed"].(uint64); ok {
			held += n
		}
	}
	return lines, held
}

// A storm over new names while the clock stands still: the bucket for all
// names lets its burst through, the rest are counted against "*" without
// a bucket of their own each, and the closing summaries account for them.
func TestStormOverNewNamesMakesNoBuckets(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	clk := &clock{t: time.Unix(1e9, 0)}
	const burst, n = 200, 100000
	a := New(Options{Log: zap.New(core), Now: clk.Now, SummaryEvery: time.Hour,
		TotalRate: 100, TotalBurst: burst})
	for i := 0; i < n; i++ {
		mi := miss("churn" + strconv.Itoa(i))
		mi.Dir = "dev"
		a.Miss(mi)
	}
	if a.Logged() != burst || a.Logged()+a.Suppressed() != n {
		t.Errorf("Logged() = %d, Suppressed() = %d; want %d and %d", a.Logged(), a.Suppressed(), burst, n-burst)
	}
	a.misses.mu.Lock()
	names, starHeld := len(a.misses.names), a.misses.overflow.held
	a.misses.mu.Unlock()
	if names > burst+1 {
		t.Errorf("%d names have a bucket; want at most %d, one per line written", names, burst)
	}
	if starHeld != n-burst {
		t.Errorf(`"*" holds %d; want %d`, starHeld, n-burst)
	}
	if l := logs.FilterField(zap.String("name", "dev/churn0")).Len(); l != 1 {
		t.Errorf("%d lines for dev/churn0; want 1", l)
	}
	// A second later the bucket for all names has TotalRate tokens again,
	// no fewer (its "empty until" must have passed) and no more.
	clk.Advance(time.Second)
	for i := 0; i < 1000; i++ {
		a.Miss(miss("later" + strconv.Itoa(i)))
	}
	if a.Logged() != burst+100 {
		t.Errorf("Logged() = %d a second later; want %d", a.Logged(), burst+100)
	}
	a.Close()
	lines, held := sumLines(logs)
	if lines != burst+100 || lines+held != n+1000 {
		t.Errorf("lines %d + held %d; want %d + %d", lines, held, burst+100, n+1000-burst-100)
	}
	star := logs.FilterMessage("misses suppressed").FilterField(zap.String("name", "*")).All()
	if len(star) != 1 || star[0].ContextMap()["suppressed"] != uint64(n+1000-burst-100) {
		t.Errorf(`summary of "*": %v`, star)
	}
}

// A storm on one name is bounded by that name's bucket while the bucket
// for all names has tokens, and takes none of them for the lines it holds
// back.
func TestStormOnOneNameSparesTotal(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.New(core), Now: clk.Now, SummaryEvery: time.Hour,
		Burst: 5, TotalBurst: 200})
	for i := 0; i < 10000; i++ {
		a.Miss(miss("nvidia0"))
	}
	if l := logs.FilterMessage("miss").Len(); l != 5 {
		t.Errorf("%d lines for a storm on one name; want its burst, 5", l)
	}
	for i := 0; i < 1000; i++ {
		a.Miss(miss("other" + strconv.Itoa(i)))
	}
	if l := logs.FilterMessage("miss").Len(); l != 200 {
		t.Errorf("%d lines in all; want the total burst, 200: the storm on one name took tokens of all names", l)
	}
	a.Close()
	lines, held := sumLines(logs)
	if lines+held != 11000 || a.Logged()+a.Suppressed() != 11000 {
		t.Errorf("lines %d + held %d, Logged %d + Suppressed %d; want 11000", lines, held, a.Logged(), a.Suppressed())
	}
	nv := logs.FilterMessage("misses suppressed").FilterField(zap.String("name", "nvidia0")).All()
	if len(nv) != 1 || nv[0].ContextMap()["suppressed"] != uint64(10000-5) {
		t.Errorf("summary of nvidia0: %v", nv)
	}
}

// A decision held back by the bucket for all names, on a new name, costs
// no allocation.
func TestStormMissAllocs(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.NewNop(), Now: clk.Now, SummaryEvery: time.Hour, TotalBurst: 1})
	defer a.Close()
	names := make([]string, 2000)
	for i := range names {
		names[i] = "churn" + strconv.Itoa(i)
	}
	mi := miss("first")
	mi.Dir = "dev/snd"
	a.Miss(mi) // takes the only token
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		mi.Name = names[i]
		i++
		a.Miss(mi)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per held-back miss; want 0", allocs)
	}
	if a.Logged() != 1 || a.Suppressed() != uint64(i) {
		t.Errorf("Logged() = %d, Suppressed() = %d; want 1, %d", a.Logged(), a.Suppressed(), i)
	}
}

// comm reads what /proc says, for the process and for one of its threads;
// no caller (pid 0) has none, a vanished one "?".
func TestCommReadsProc(t *testing.T) {
	want, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	w := strings.TrimSpace(string(want))
	if got := comm(uint32(os.Getpid())); got != w {
		t.Errorf("comm(own pid) = %q, want %q", got, w)
	}
	if got := comm(uint32(syscall.Gettid())); got != w {
		t.Errorf("comm(a thread's tid) = %q, want %q", got, w)
	}
	if got := comm(0); got != "" {
		t.Errorf("comm(0) = %q, want empty", got)
	}
	if got := comm(1<<22 + 12345); got != "?" { // above pid_max's ceiling
		t.Errorf("comm(no such pid) = %q, want ?", got)
	}
}

// A storm of refusals from one uid is bounded by that uid's bucket and
// every refusal is logged or counted; another uid's refusal and a miss
// during the storm are logged; a path that is not UTF-8 is written as
// its bytes.
func TestRefusalStormIsBounded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	clk := &clock{t: time.Unix(1e9, 0)}
	a := New(Options{Log: zap.New(core), Now: clk.Now, SummaryEvery: time.Hour})
	r := Refusal{Pid: uint32(os.Getpid()), Uid: 1000, Gid: 1000, Endpoint: "/v1/register",
		Path: "evil\xff", Code: "permission_denied", Why: "uid 1000 may not change the namespace"}
	for i := 0; i < 1000; i++ {
		a.Refused(r)
		if i%100 == 99 {
			clk.Advance(time.Second) // ten seconds in all
		}
	}
	other := r
	other.Uid, other.Path = 2000, "ok"
	a.Refused(other)
	a.Miss(miss("nvidia0"))
	a.Close()
	lines := logs.FilterMessage("refused").FilterField(zap.Uint32("uid", 1000)).All()
	if len(lines) > 5+10 || len(lines) < 5 {
		t.Errorf("%d lines for 1000 refusals; want 5 to burst + rate*time = 15", len(lines))
	}
	total := uint64(len(lines))
	for _, e := range lines {
		if n, ok := e.ContextMap()["suppressed"].(uint64); ok {
			total += n
		}
	}
	sum := logs.FilterMessage("refusals suppressed").FilterField(zap.String("caller", "uid 1000")).All()
	if len(sum) != 1 {
		t.Fatalf("closing summary for uid 1000: %v", sum)
	}
	total += sum[0].ContextMap()["suppressed"].(uint64)
	if total != 1000 {
		t.Errorf("logged + suppressed = %d, want 1000", total)
	}
	l := lines[0].ContextMap()
	if l["comm"] == "" || l["endpoint"] != "/v1/register" || l["code"] != "permission_denied" ||
		l["why"] != r.Why || l["pid"] != r.Pid || l["gid"] != uint32(1000) {
		t.Errorf("line fields %v", l)
	}
	if logs.FilterMessage("refused").FilterField(zap.Uint32("uid", 2000)).Len() != 1 {
		t.Error("another uid's refusal was held back by the storm")
	}
	if logs.FilterMessage("miss").Len() != 1 {
		t.Error("a miss was held back by a refusal storm")
	}
	if a.Logged()+a.Suppressed() != 1002 {
		t.Errorf("counters %d + %d, want 1002", a.Logged(), a.Suppressed())
	}
}

// Names that are not UTF-8 are written as their bytes in the JSON lines,
// never as U+FFFD; others as strings.
func TestNamesNotUTF8AreWrittenExactly(t *testing.T) {
	var buf strings.Builder
	ec := zap.NewProductionEncoderConfig()
	file := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(&syncBuilder{b: &buf}), zapcore.InfoLevel))
	a := New(Options{File: file, SummaryEvery: time.Hour})
	mi := miss("m\xff\xfe")
	mi.Dir = "d"
	a.Miss(mi)
	a.Miss(miss("plain"))
	a.Refused(Refusal{Uid: 5, Endpoint: "/v1/unregister", Path: "x\x80", Code: "not_found", Why: "w"})
	a.Close()
	out := buf.String()
	for _, want := range []string{`"name":[100,47,109,255,254]`, `"name":"plain"`, `"path":[120,128]`} {
		if !strings.Contains(out, want) {
			t.Errorf("audit lines lack %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `\ufffd`) || strings.Contains(out, "\uFFFD") {
		t.Errorf("U+FFFD in the audit lines:\n%s", out)
	}
}

type syncBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
