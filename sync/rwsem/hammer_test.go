package rwsem

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hammerDeadline bounds a whole hammer run: a lost wakeup shows as a run
// that does not finish.
const hammerDeadline = 20 * time.Second

// inside tracks who is inside the critical section and checks the
// exclusion invariant at every entry.
type inside struct {
	readers, writers atomic.Int32
	failed           atomic.Value // string: the first violation
}

func (in *inside) fail(format string, args ...any) {
	in.failed.CompareAndSwap(nil, fmt.Sprintf(format, args...))
}

func (in *inside) enterRead() {
	in.readers.Add(1)
	if w := in.writers.Load(); w != 0 {
		in.fail("reader inside with %d writer(s)", w)
	}
}

func (in *inside) exitRead() { in.readers.Add(-1) }

func (in *inside) enterWrite() {
	if w := in.writers.Add(1); w != 1 {
		in.fail("writer inside with %d other writer(s)", w-1)
	}
	if r := in.readers.Load(); r != 0 {
		in.fail("writer inside with %d reader(s)", r)
	}
}

func (in *inside) exitWrite() { in.writers.Add(-1) }

// TestHammer mixes readers, writers, downgraders, try-lockers,
// WaitForRelease waiters and context cancellers on one Sem, checking
// exclusion at every entry, that the run finishes (no lost wakeup), that
// the protected counter is exact, and that the Sem ends idle. It runs with
// the normal wait limit and with a zero one, which sets HANDOFF at every
// pass-over.
func TestHammer(t *testing.T) {
	for _, limit := range []time.Duration{waitLimit, 0} {
		t.Run(fmt.Sprintf("waitLimit=%v", limit), func(t *testing.T) {
			defer func(d time.Duration) { waitLimit = d }(waitLimit)
			waitLimit = limit
			hammer(t, 4000)
		})
	}
}

func hammer(t *testing.T, iters int) {
	var (
		s       Sem
		in      inside
		counter int64        // guarded by s (write)
		writes  atomic.Int64 // successful write sections
		fails   atomic.Int64 // Ctx acquisitions that gave up
		wg      sync.WaitGroup
	)
	read := func() {
		in.enterRead()
		_ = counter
		runtime.Gosched()
		in.exitRead()
	}
	write := func() {
		in.enterWrite()
		counter++
		writes.Add(1)
		in.exitWrite()
	}
	// ctxFor returns a context that ends soon, by timeout or by another
	// goroutine's cancel, to race the grant.
	ctxFor := func(r *rand.Rand) (context.Context, context.CancelFunc) {
		if r.IntN(2) == 0 {
			return context.WithTimeout(context.Background(), time.Duration(r.IntN(200))*time.Microsecond)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { runtime.Gosched(); cancel() }()
		return ctx, cancel
	}
	workers := []func(r *rand.Rand){
		func(*rand.Rand) { s.DownRead(); read(); s.UpRead() },
		func(*rand.Rand) { s.DownRead(); read(); s.UpRead() },
		func(*rand.Rand) { s.DownWrite(); write(); s.UpWrite() },
		func(*rand.Rand) { // downgrader
			s.DownWrite()
			write()
			s.DowngradeWrite()
			read()
			s.UpRead()
		},
		func(*rand.Rand) { // try-locker
			if s.TryDownRead() {
				read()
				s.UpRead()
			}
			if s.TryDownWrite() {
				write()
				s.UpWrite()
			}
		},
		func(r *rand.Rand) { // read canceller
			ctx, cancel := ctxFor(r)
			defer cancel()
			if s.DownReadCtx(ctx) != nil {
				fails.Add(1)
				return
			}
			read()
			s.UpRead()
		},
		func(r *rand.Rand) { // write canceller
			ctx, cancel := ctxFor(r)
			defer cancel()
			if s.DownWriteCtx(ctx) != nil {
				fails.Add(1)
				return
			}
			write()
			s.UpWrite()
		},
		func(r *rand.Rand) { // release waiter
			ctx, cancel := ctxFor(r)
			defer cancel()
			if s.WaitForRelease(ctx) != nil {
				fails.Add(1)
			}
		},
		func(*rand.Rand) { _ = s.WaitForRelease(context.Background()) },
	}
	for i, f := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range iters {
				f(r)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hammerDeadline):
		t.Fatalf("hammer did not finish in %v (lost wakeup?): %v", hammerDeadline, &s)
	}
	if f := in.failed.Load(); f != nil {
		t.Fatalf("exclusion violated: %s", f)
	}
	if counter != writes.Load() {
		t.Fatalf("counter %d, want %d", counter, writes.Load())
	}
	checkIdle(t, &s)
	t.Logf("%d write sections, %d Ctx waits gave up", writes.Load(), fails.Load())
}

// TestLivenessWriterNotStarvedByReaderStream: overlapping readers keep the
// reader count above zero forever; a writer still gets in, because new
// readers queue behind it.
func TestLivenessWriterNotStarvedByReaderStream(t *testing.T) {
	var s Sem
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.DownRead()
				runtime.Gosched()
				s.UpRead()
			}
		}()
	}
	defer func() { close(stop); wg.Wait(); checkIdle(t, &s) }()
	for range 20 {
		if err := s.DownWriteCtx(ctxDeadline(t)); err != nil {
			t.Fatalf("writer starved by a stream of readers: %v (%v)", err, &s)
		}
		s.UpWrite()
	}
}

// streamWriters runs goroutines that take and release s for writing until
// stop is closed.
func streamWriters(s *Sem, n int, stop <-chan struct{}, wg *sync.WaitGroup) {
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.DownWrite()
				runtime.Gosched()
				s.UpWrite()
			}
		}()
	}
}

// TestLivenessReadersNotStarvedByWriterStream: writers that steal the lock
// between a release and the grant cannot keep a reader, a WaitForRelease
// waiter or a queued writer out past the handoff limit.
func TestLivenessReadersNotStarvedByWriterStream(t *testing.T) {
	tests := []struct {
		name string
		wait func(*Sem, context.Context) error
		undo func(*Sem)
	}{
		{"reader", (*Sem).DownReadCtx, (*Sem).UpRead},
		{"WaitForRelease", (*Sem).WaitForRelease, func(*Sem) {}},
		{"writer", (*Sem).DownWriteCtx, (*Sem).UpWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			stop := make(chan struct{})
			var wg sync.WaitGroup
			streamWriters(&s, 3, stop, &wg)
			defer func() { close(stop); wg.Wait(); checkIdle(t, &s) }()
			for range 20 {
				if err := tt.wait(&s, ctxDeadline(t)); err != nil {
					t.Fatalf("%s starved by a stream of writers: %v (%v)", tt.name, err, &s)
				}
				tt.undo(&s)
			}
		})
	}
}

// TestLivenessCancelledWaiterDoesNotBlockWaitersBehind: a writer at the
// head of the queue holds up the readers behind it while readers hold s;
// when it gives up, they must be let in at once.
func TestLivenessCancelledWaiterDoesNotBlockWaitersBehind(t *testing.T) {
	tests := []struct {
		name   string
		behind func(*Sem, context.Context) error
		undo   func(*Sem)
	}{
		{"reader", (*Sem).DownReadCtx, (*Sem).UpRead},
		{"WaitForRelease", (*Sem).WaitForRelease, func(*Sem) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			enq := withEnqueueHook(&s)
			s.DownRead()
			ctxW, cancelW := context.WithCancel(context.Background())
			wErr := make(chan error, 1)
			go func() { wErr <- s.DownWriteCtx(ctxW) }()
			recv(t, enq, "the writer to queue")
			bErr := make(chan error, 1)
			go func() { bErr <- tt.behind(&s, ctxDeadline(t)) }()
			recv(t, enq, "the waiter behind it to queue")
			cancelW()
			if err := recv(t, wErr, "the writer to give up"); err == nil {
				t.Fatalf("the writer got the lock while a reader holds it")
			}
			if err := recv(t, bErr, "the waiter behind the cancelled writer"); err != nil {
				t.Fatalf("the waiter behind a cancelled writer was not let in: %v (%v)", err, &s)
			}
			tt.undo(&s)
			s.UpRead()
			checkIdle(t, &s)
		})
	}
}
