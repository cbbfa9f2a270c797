package refcount

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// deadline bounds every wait in these tests. It is generous because the
// machine is small, shared, and the tests run under -race; a correct
// implementation answers in microseconds.
const deadline = 20 * time.Second

// await fails the test if ch is not closed within deadline.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("%s: not done within %v", what, deadline)
	}
}

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waiter runs WaitZero (bounded by deadline) in a goroutine; the returned
// channel is closed when it returns, and *err holds its result.
func waiter(r *Ref) (done chan struct{}, err *error) {
	done = make(chan struct{})
	err = new(error)
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		*err = r.WaitZero(ctx)
	}()
	return done, err
}

// shardings are the Ref shapes the hammer tests run over: one shard per P
// (what New gives) and a single shard that every goroutine shares (the
// most contended shape, and the one R5 is about).
var shardings = []struct {
	name string
	new  func() *Ref
}{
	{"per-P shards", New},
	{"one shared shard", func() *Ref { return newRef(1) }},
}

func TestNewHoldsTheInitialReference(t *testing.T) {
	r := New()
	if got := r.Count(); got != 1 {
		t.Fatalf("Count() of a new Ref = %d, want 1", got)
	}
	r.Get()
	if !r.TryGet() {
		t.Fatal("TryGet on a live Ref failed")
	}
	if got := r.Count(); got != 3 {
		t.Fatalf("Count() = %d, want 3", got)
	}
	r.Put()
	r.Put()
	confirm := r.Kill()
	if !closed(confirm) {
		t.Fatal("Kill returned before its confirmation was closed")
	}
	if got := r.Count(); got != 0 {
		t.Fatalf("Count() after Kill = %d, want 0", got)
	}
	if err := r.WaitZero(context.Background()); err != nil {
		t.Fatalf("WaitZero after drain: %v", err)
	}
}

// TestCountAcrossShards puts the Gets and Puts of one reference on
// different shards (a negative shard), and checks that the sum is right in
// both modes.
func TestCountAcrossShards(t *testing.T) {
	r := newRef(4)
	r.shards[0].n.Add(5) // five Gets on P0
	r.shards[3].n.Add(-2)
	if got := r.Count(); got != 4 {
		t.Fatalf("sharded Count() = %d, want 4", got)
	}
	r.Kill()
	if got := r.Count(); got != 3 {
		t.Fatalf("dead Count() = %d, want 3 (initial reference dropped)", got)
	}
	for range 3 {
		r.Put()
	}
	if err := r.WaitZero(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestTryGetAfterKill(t *testing.T) {
	for _, sh := range shardings {
		t.Run(sh.name, func(t *testing.T) {
			r := sh.new()
			r.Get() // keep it alive past Kill
			r.Kill()
			for range 100 {
				if r.TryGet() {
					t.Fatal("TryGet succeeded after Kill returned")
				}
			}
			r.Get() // allowed: we hold a reference
			if got := r.Count(); got != 2 {
				t.Fatalf("Count() = %d, want 2", got)
			}
			r.Put()
			r.Put()
			if err := r.WaitZero(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMisusePanics(t *testing.T) {
	tests := []struct {
		name string
		do   func(r *Ref)
	}{
		{"Kill twice", func(r *Ref) { r.Kill(); r.Kill() }},
		{"Put below zero after Kill", func(r *Ref) { r.Kill(); r.Put() }},
		{"Get after the count reached zero", func(r *Ref) { r.Kill(); r.Get() }},
		{"Put below zero with a Get in between", func(r *Ref) {
			r.Get()
			r.Kill()
			r.Put()
			r.Put()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				p := recover()
				msg, _ := p.(string)
				if !strings.HasPrefix(msg, "refcount: ") {
					t.Fatalf("recovered %v, want a panic starting \"refcount: \"", p)
				}
			}()
			tt.do(newRef(2))
		})
	}
}

// TestR5LostShardUpdate is the regression test for R5 (DESIGN.md section
// 4; the 2014 percpu-refcount __this_cpu_inc bug). Two contexts update the
// same shard; the test hook stops the first in the middle of its update
// step, lets the second update the shard, then lets the first finish. With
// an atomic update step nothing is lost. With the mutant_r5 build (load,
// hook, store) the second update is overwritten: the count is off by one
// and, for a lost Put, would never drain.
func TestR5LostShardUpdate(t *testing.T) {
	get := func(r *Ref) { r.Get() }
	put := func(r *Ref) { r.Put() }
	tests := []struct {
		name  string
		a, b  func(*Ref) // a is stopped mid-update; b runs meanwhile
		delta int64
	}{
		{"Get vs Get", get, get, +2},
		{"Put vs Put", put, put, -2},
		{"Get vs Put", get, put, 0},
		{"Put vs Get", put, get, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRef(1) // both contexts on the one shard
			r.Get()
			r.Get() // two held references, so the Puts are legal
			const held = 3

			stopped := make(chan struct{})
			resume := make(chan struct{})
			var first atomic.Bool
			r.hooks = &testHooks{shardUpdate: func() {
				if first.CompareAndSwap(false, true) {
					close(stopped)
					<-resume
				}
			}}
			aDone := make(chan struct{})
			go func() {
				defer close(aDone)
				tt.a(r)
			}()
			await(t, stopped, "context A reaching the shard update")
			tt.b(r) // context B, while A is inside its update step
			close(resume)
			await(t, aDone, "context A finishing its update")

			want := held + tt.delta
			if got := r.Count(); got != want {
				t.Fatalf("Count() = %d after two concurrent updates of one shard, want %d: an update was lost (R5)", got, want)
			}
			// Drain: with a lost Put this would never reach zero; the
			// deadline turns that into a failure, not a hang.
			for range want - 1 {
				r.Put()
			}
			r.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			if err := r.WaitZero(ctx); err != nil {
				t.Fatalf("count did not drain after matched Gets and Puts (R5): %v", err)
			}
		})
	}
}

// TestHammerTryGetPutRacingKillAndWaitZero runs request-like workers
// (TryGet, a nested Get/Put while holding, Put) against Kill and WaitZero.
// It checks that WaitZero never returns while a reference is held, that no
// TryGet succeeds after the confirmation or after zero, and that WaitZero
// returns once the last Put is done. With dropAtKill the test's own
// reference goes right after Kill, so WaitZero races the workers' last
// Puts; without, the test holds it to the end and checks the count is
// exactly 1 once the workers are done.
func TestHammerTryGetPutRacingKillAndWaitZero(t *testing.T) {
	const workers, ops = 6, 3000
	for _, sh := range shardings {
		for _, dropAtKill := range []bool{false, true} {
			name := sh.name + "/hold to end"
			if dropAtKill {
				name = sh.name + "/drop at Kill"
			}
			t.Run(name, func(t *testing.T) {
				hammerTryGetPut(t, sh.new(), workers, ops, dropAtKill)
			})
		}
	}
}

func hammerTryGetPut(t *testing.T, r *Ref, workers, ops int, dropAtKill bool) {
	r.Get() // the test's own reference

	var (
		live     atomic.Int64 // references held by workers, per the test's books
		zeroed   atomic.Bool  // set once WaitZero returned
		errs     = make(chan string, 16)
		halfway  = make(chan struct{})
		once     sync.Once
		wg       sync.WaitGroup
		confirm  atomic.Pointer[<-chan struct{}]
		waitDone = make(chan struct{})
		waitErr  error
	)
	report := func(s string) {
		select {
		case errs <- s:
		default:
		}
	}
	go func() {
		defer close(waitDone)
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		waitErr = r.WaitZero(ctx)
		if n := live.Load(); n != 0 {
			report(fmt.Sprintf("WaitZero returned while workers held %d references", n))
		}
		zeroed.Store(true)
	}()
	for w := range workers {
		wg.Go(func() {
			for i := range ops {
				if w == 0 && i == ops/2 {
					once.Do(func() { close(halfway) })
				}
				c := confirm.Load()
				afterConfirm := c != nil && closed(*c)
				afterZero := zeroed.Load()
				if !r.TryGet() {
					continue
				}
				if afterConfirm {
					report("TryGet succeeded after Kill's confirmation")
				}
				if afterZero {
					report("TryGet succeeded after WaitZero returned")
				}
				live.Add(1)
				r.Get() // nested, legal while holding: works after Kill too
				r.Put()
				live.Add(-1)
				r.Put()
			}
		})
	}
	await(t, halfway, "workers reaching half their operations")
	c := r.Kill()
	confirm.Store(&c)
	await(t, c, "Kill's confirmation")
	if r.TryGet() {
		t.Error("TryGet succeeded after Kill's confirmation")
	}
	if dropAtKill {
		r.Put()
	}
	wg.Wait()

	if !dropAtKill {
		if got := r.Count(); got != 1 {
			t.Errorf("Count() after Kill with workers done = %d, want exactly 1 (the test's reference)", got)
		}
		if closed(waitDone) {
			t.Fatalf("WaitZero returned (%v) while the test still held a reference", waitErr)
		}
		r.Put() // the last reference
	}
	await(t, waitDone, "WaitZero after the last Put")
	if waitErr != nil {
		t.Fatalf("WaitZero: %v", waitErr)
	}
	if got := r.Count(); got != 0 {
		t.Errorf("Count() after WaitZero = %d, want 0", got)
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestHammerGetsHeldAcrossKillCountExact takes references on every shard
// while Kill switches the Ref, keeps them, and checks the atomic count is
// exact; then drops them all concurrently against WaitZero.
func TestHammerGetsHeldAcrossKillCountExact(t *testing.T) {
	const workers, gets = 6, 2000
	for _, sh := range shardings {
		t.Run(sh.name, func(t *testing.T) {
			r := sh.new()
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				putters sync.WaitGroup
			)
			// A Get after Kill needs the count above zero: the guard
			// reference keeps it there until every Put is done.
			r.Get()
			for range workers {
				wg.Go(func() {
					<-start
					for range gets {
						r.Get()
					}
				})
			}
			// Kill races with the Gets: some land on shards before their
			// switch, some on central after; none may be lost.
			close(start)
			r.Kill()
			wg.Wait()
			if got, want := r.Count(), int64(workers*gets+1); got != want {
				t.Fatalf("Count() after Kill = %d, want exactly %d", got, want)
			}
			waitDone, waitErr := waiter(r)
			for range workers {
				putters.Go(func() {
					for range gets {
						r.Put()
					}
				})
			}
			putters.Wait()
			if closed(waitDone) {
				t.Fatal("WaitZero returned while the guard reference was held")
			}
			if got := r.Count(); got != 1 {
				t.Fatalf("Count() = %d, want 1", got)
			}
			r.Put()
			await(t, waitDone, "WaitZero after the last Put")
			if *waitErr != nil {
				t.Fatal(*waitErr)
			}
		})
	}
}

func TestLivenessWaitZeroReturnsAfterLastPut(t *testing.T) {
	for _, held := range []int{1, 3, 100} {
		t.Run(fmt.Sprintf("%d held", held), func(t *testing.T) {
			r := New()
			for range held {
				r.Get()
			}
			r.Kill()
			done, err := waiter(r)
			for range held - 1 {
				r.Put()
			}
			if closed(done) {
				t.Fatalf("WaitZero returned (%v) with one reference still held", *err)
			}
			r.Put()
			await(t, done, "WaitZero after the last Put")
			if *err != nil {
				t.Fatal(*err)
			}
		})
	}
}

func TestLivenessWaitZeroStartedBeforeKill(t *testing.T) {
	r := New()
	done, err := waiter(r)
	r.Kill() // drops the only reference
	await(t, done, "WaitZero started before Kill")
	if *err != nil {
		t.Fatal(*err)
	}
}

func TestLivenessKillConfirmsUnderConstantGets(t *testing.T) {
	for _, sh := range shardings {
		t.Run(sh.name, func(t *testing.T) {
			r := sh.new()
			var (
				stop    atomic.Bool
				wg      sync.WaitGroup
				running = make(chan struct{}, 4)
				late    atomic.Int64 // TryGets that succeeded after the confirmation
			)
			var confirm atomic.Pointer[<-chan struct{}]
			for range 4 {
				wg.Go(func() {
					running <- struct{}{}
					for !stop.Load() {
						c := confirm.Load()
						after := c != nil && closed(*c)
						if r.TryGet() {
							if after {
								late.Add(1)
							}
							r.Get()
							r.Put()
							r.Put()
						}
					}
				})
			}
			for range 4 {
				await1(t, running)
			}
			c := r.Kill()
			confirm.Store(&c)
			await(t, c, "Kill's confirmation under constant Gets")
			stop.Store(true)
			wg.Wait()
			if n := late.Load(); n != 0 {
				t.Errorf("%d TryGets succeeded after Kill's confirmation", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			if err := r.WaitZero(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// await1 receives one value from ch within deadline.
func await1(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("not started within %v", deadline)
	}
}

func TestLivenessWaitZeroHonoursContext(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"deadline passed", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Unix(0, 0))
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New()
			r.Get()
			r.Kill()
			ctx, cancel := tt.ctx()
			defer cancel()
			if err := r.WaitZero(ctx); !errors.Is(err, tt.want) {
				t.Fatalf("WaitZero with a held reference = %v, want %v", err, tt.want)
			}
			r.Put()
			// Both zero and a done context: zero wins.
			if err := r.WaitZero(ctx); err != nil {
				t.Fatalf("WaitZero after drain with a done context = %v, want nil", err)
			}
		})
	}
}

// TestDyingBiasKeepsCountAboveZero stops Kill after it has switched shard 0
// but not shard 1, and drops references through the switched shard whose
// Gets are still in the unswitched one: central goes below its starting
// value, and only the bias keeps it from reading as zero (an early
// WaitZero) or below (a false misuse panic). TryGet fails on the switched
// shard and still succeeds on the unswitched one, and that reference counts.
func TestDyingBiasKeepsCountAboveZero(t *testing.T) {
	r := newRef(2)
	s0, s1 := &r.shards[0], &r.shards[1]
	r.getOn(s1) // a holder's Get, in shard 1

	inDying := make(chan struct{})
	resume := make(chan struct{})
	r.hooks = &testHooks{killSwitched: func(i int) {
		if i == 0 {
			close(inDying)
			<-resume
		}
	}}
	waitDone, waitErr := waiter(r)
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		r.Kill()
	}()
	await(t, inDying, "Kill switching shard 0")

	if r.tryGetOn(s0) {
		t.Error("TryGet on a switched shard succeeded")
	}
	if !r.tryGetOn(s1) {
		t.Error("TryGet on a shard not yet switched failed")
	}
	r.putOn(s0) // the holder's Put: to central
	r.putOn(s0) // the TryGet's Put: to central
	if got := r.central.Load(); got != bias-1 {
		t.Errorf("central = bias%+d in the dying mode, want bias-1", got-bias)
	}
	if closed(waitDone) {
		t.Fatalf("WaitZero returned (%v) while Kill was mid-switch", *waitErr)
	}
	close(resume)
	await(t, killed, "Kill")
	await(t, waitDone, "WaitZero after Kill moved shard 1")
	if *waitErr != nil {
		t.Fatal(*waitErr)
	}
	if got := r.Count(); got != 0 {
		t.Fatalf("Count() = %d, want 0", got)
	}
}

// ShardCount rounds up to a power of two and caps at maxShards.
func TestShardCount(t *testing.T) {
	for _, c := range []struct{ n, want int }{{0, 1}, {1, 1}, {2, 2}, {3, 4}, {5, 8}, {64, 64}, {65, 64}, {1 << 20, 64}} {
		if got := ShardCount(c.n); got != c.want {
			t.Errorf("ShardCount(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
