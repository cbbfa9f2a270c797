package rwsem

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSequential(t *testing.T) {
	type op struct {
		name string
		do   func(s *Sem) bool
		want bool
	}
	down := func(f func(*Sem)) func(*Sem) bool { return func(s *Sem) bool { f(s); return true } }
	tests := []struct {
		name string
		ops  []op
		end  int64
	}{
		{"read twice", []op{
			{"DownRead", down((*Sem).DownRead), true},
			{"TryDownRead", (*Sem).TryDownRead, true},
			{"TryDownWrite", (*Sem).TryDownWrite, false},
			{"UpRead", down((*Sem).UpRead), true},
			{"UpRead", down((*Sem).UpRead), true},
		}, 0},
		{"write excludes all", []op{
			{"DownWrite", down((*Sem).DownWrite), true},
			{"TryDownRead", (*Sem).TryDownRead, false},
			{"TryDownWrite", (*Sem).TryDownWrite, false},
			{"UpWrite", down((*Sem).UpWrite), true},
			{"TryDownWrite", (*Sem).TryDownWrite, true},
			{"UpWrite", down((*Sem).UpWrite), true},
		}, 0},
		{"downgrade", []op{
			{"DownWrite", down((*Sem).DownWrite), true},
			{"DowngradeWrite", down((*Sem).DowngradeWrite), true},
			{"TryDownRead", (*Sem).TryDownRead, true},
			{"TryDownWrite", (*Sem).TryDownWrite, false},
			{"UpRead", down((*Sem).UpRead), true},
		}, readerBias},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			for i, o := range tt.ops {
				if got := o.do(&s); got != o.want {
					t.Fatalf("op %d %s = %v, want %v (%v)", i, o.name, got, o.want, &s)
				}
			}
			if c := s.state.Load(); c != tt.end {
				t.Fatalf("end state %#x, want %#x", c, tt.end)
			}
		})
	}
}

func TestMisusePanics(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*Sem)
		do    func(*Sem)
		want  string
	}{
		{"UpRead unheld", func(*Sem) {}, (*Sem).UpRead, "rwsem: up_read of unheld semaphore"},
		{"UpWrite unheld", func(*Sem) {}, (*Sem).UpWrite, "rwsem: up_write of unheld semaphore"},
		{"UpWrite read-held", (*Sem).DownRead, (*Sem).UpWrite, "rwsem: up_write of unheld semaphore"},
		{"DowngradeWrite unheld", func(*Sem) {}, (*Sem).DowngradeWrite, "rwsem: downgrade_write of unheld semaphore"},
		{"DowngradeWrite read-held", (*Sem).DownRead, (*Sem).DowngradeWrite, "rwsem: downgrade_write of unheld semaphore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			tt.setup(&s)
			before := s.state.Load()
			func() {
				defer func() {
					r := recover()
					if msg, _ := r.(string); !strings.HasPrefix(msg, tt.want) {
						t.Fatalf("panic %v, want %q", r, tt.want)
					}
				}()
				tt.do(&s)
			}()
			if after := s.state.Load(); after != before {
				t.Fatalf("misuse changed the state word: %#x -> %#x", before, after)
			}
		})
	}
}

// TestCtxFailureLeavesNothing: a Ctx acquisition that fails leaves the
// state word as it was and nothing queued.
func TestCtxFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name string
		hold func(*Sem)
		try  func(*Sem, context.Context) error
	}{
		{"read vs writer", (*Sem).DownWrite, (*Sem).DownReadCtx},
		{"write vs writer", (*Sem).DownWrite, (*Sem).DownWriteCtx},
		{"write vs reader", (*Sem).DownRead, (*Sem).DownWriteCtx},
		{"release vs writer", (*Sem).DownWrite, (*Sem).WaitForRelease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sem
			tt.hold(&s)
			before := s.state.Load()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := tt.try(&s, ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			if after := s.state.Load(); after != before || s.queueLen() != 0 {
				t.Fatalf("failed acquisition left %v (state %#x, was %#x)", &s, after, before)
			}
		})
	}
}

func TestWaitForReleaseFreeReturnsAtOnce(t *testing.T) {
	var s Sem
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WaitForRelease(ctx); err != nil {
		t.Fatalf("WaitForRelease on a free semaphore: %v", err)
	}
	s.DownRead()
	if err := s.WaitForRelease(ctx); err != nil {
		t.Fatalf("WaitForRelease on a read-held semaphore: %v", err)
	}
	s.UpRead()
	checkIdle(t, &s)
}

// TestDowngradeGrantsQueuedReaders: readers queued behind a writer get in
// when it downgrades; a writer behind them waits for all readers.
func TestDowngradeGrantsQueuedReaders(t *testing.T) {
	var s Sem
	enq := withEnqueueHook(&s)
	s.DownWrite()
	got := make(chan string, 3)
	go func() { s.DownRead(); got <- "r1" }()
	recv(t, enq, "r1 queued")
	go func() { s.DownWrite(); got <- "w" }()
	recv(t, enq, "w queued")
	go func() { s.DownRead(); got <- "r2" }()
	recv(t, enq, "r2 queued")
	s.DowngradeWrite()
	for range 2 {
		if g := recv(t, got, "a reader"); g == "w" {
			t.Fatalf("writer got in while readers hold: %v", &s)
		}
	}
	s.UpRead()
	s.UpRead()
	s.UpRead()
	if g := recv(t, got, "the writer"); g != "w" {
		t.Fatalf("got %s", g)
	}
	s.UpWrite()
	checkIdle(t, &s)
}

// TestHandoffSetForPassedOverHead: a head waiter passed over after
// waitLimit reserves the semaphore; stealing stops; the grant clears it.
func TestHandoffSetForPassedOverHead(t *testing.T) {
	defer func(d time.Duration) { waitLimit = d }(waitLimit)
	waitLimit = 0
	var s Sem
	enq := withEnqueueHook(&s)
	s.DownWrite()
	done := make(chan error, 1)
	go func() { done <- s.DownReadCtx(ctxDeadline(t)) }()
	recv(t, enq, "reader queued")
	// A waker that finds the semaphore held by a writer (as after a steal).
	s.wake()
	if s.state.Load()&flagHandoff == 0 {
		t.Fatalf("HANDOFF not set for a head passed over after the wait limit: %v", &s)
	}
	if s.TryDownRead() {
		t.Fatalf("TryDownRead succeeded past HANDOFF")
	}
	s.UpWrite()
	if s.TryDownWrite() {
		t.Fatalf("TryDownWrite stole the semaphore reserved for the head: %v", &s)
	}
	if err := recv(t, done, "the reader"); err != nil {
		t.Fatal(err)
	}
	if s.state.Load() != readerBias {
		t.Fatalf("after the grant: %v", &s)
	}
	s.UpRead()
	checkIdle(t, &s)
}
