package audit

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
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
