package waitq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

const deadline = 3 * time.Second

// cancelled is a context that is already done: Wait on it returns nil iff
// the record was woken (the wakeup wins the queue lock) and
// context.Canceled iff it was not.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// prepare queues waiters from a pattern of 'n' (non-exclusive) and 'x'
// (exclusive) in that order of calls.
func prepare(q *Queue, pattern string) []*Waiter {
	var ws []*Waiter
	for _, c := range pattern {
		ws = append(ws, q.Prepare(c == 'x'))
	}
	return ws
}

// woken finishes every waiter and returns a pattern of which were woken.
func woken(t *testing.T, ws []*Waiter) string {
	t.Helper()
	var b strings.Builder
	for _, w := range ws {
		switch err := w.Wait(cancelled); {
		case err == nil:
			b.WriteByte('W')
		case errors.Is(err, context.Canceled):
			b.WriteByte('.')
		default:
			t.Fatalf("Wait: %v", err)
		}
	}
	return b.String()
}

func TestWake(t *testing.T) {
	tests := []struct {
		pattern string
		wake    func(*Queue) int
		name    string
		n       int
		want    string // per waiter, in Prepare order: W woken, . not
	}{
		{"xxx", (*Queue).WakeOne, "WakeOne", 1, "W.."},
		{"xxx", (*Queue).WakeAll, "WakeAll", 3, "WWW"},
		{"xxx", func(q *Queue) int { return q.WakeN(2) }, "WakeN(2)", 2, "WW."},
		{"nnxx", (*Queue).WakeOne, "WakeOne", 3, "WWW."},
		{"xnxn", (*Queue).WakeOne, "WakeOne", 3, "WW.W"}, // non-exclusive go to the head
		{"nnxx", func(q *Queue) int { return q.WakeN(0) }, "WakeN(0)", 2, "WW.."},
		{"", (*Queue).WakeAll, "WakeAll", 0, ""},
		{"xx", func(q *Queue) int { return q.WakeN(5) }, "WakeN(5)", 2, "WW"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.pattern, tt.name), func(t *testing.T) {
			var q Queue
			ws := prepare(&q, tt.pattern)
			if q.Len() != len(ws) {
				t.Fatalf("Len %d, want %d", q.Len(), len(ws))
			}
			if n := tt.wake(&q); n != tt.n {
				t.Fatalf("woke %d, want %d", n, tt.n)
			}
			if got := woken(t, ws); got != tt.want {
				t.Fatalf("woken %q, want %q", got, tt.want)
			}
			if q.Len() != 0 {
				t.Fatalf("Len %d after all waits finished", q.Len())
			}
		})
	}
}

func TestAbort(t *testing.T) {
	tests := []struct {
		name        string
		pattern     string
		wakeFirst   bool
		wantAborted bool   // Abort's result for the first waiter
		wantRest    string // the others, after the Abort
	}{
		{"queued", "xx", false, false, "."},
		{"woken exclusive passes its wakeup on", "xx", true, true, "W"},
		{"woken non-exclusive does not", "nx", true, true, "W"}, // WakeOne woke both
		{"woken exclusive, nobody behind", "x", true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Queue
			ws := prepare(&q, tt.pattern)
			if tt.wakeFirst {
				q.WakeOne()
			}
			if got := ws[0].Abort(); got != tt.wantAborted {
				t.Fatalf("Abort = %v, want %v", got, tt.wantAborted)
			}
			if got := woken(t, ws[1:]); got != tt.wantRest {
				t.Fatalf("others %q, want %q", got, tt.wantRest)
			}
		})
	}
}

func TestMisusePanics(t *testing.T) {
	tests := []struct {
		name string
		do   func()
	}{
		{"Wait twice", func() {
			var q Queue
			w := q.Prepare(true)
			_ = w.Wait(cancelled)
			_ = w.Wait(cancelled)
		}},
		{"Abort after Wait", func() {
			var q Queue
			w := q.Prepare(false)
			q.WakeAll()
			_ = w.Wait(context.Background())
			w.Abort()
		}},
		{"negative WakeN", func() { var q Queue; q.WakeN(-1) }},
		{"token posted twice", func() { tk := NewToken(); tk.Post(); tk.Post() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if msg, _ := recover().(string); !strings.HasPrefix(msg, "waitq: ") {
					t.Fatalf("panic %q, want a waitq: panic", msg)
				}
			}()
			tt.do()
		})
	}
}

// TestWakeRacingCancelIsReported: a record woken before its Wait sees the
// end of its context reports the wakeup; it is neither lost nor left for
// a later wait.
func TestWakeRacingCancelIsReported(t *testing.T) {
	var q Queue
	w := q.Prepare(true)
	q.WakeOne()
	for range 10 { // select picks either ready case; both must say nil
		var q2 Queue
		w2 := q2.Prepare(true)
		q2.WakeOne()
		if err := w2.Wait(cancelled); err != nil {
			t.Fatalf("woken wait reported %v", err)
		}
	}
	if err := w.Wait(cancelled); err != nil {
		t.Fatalf("woken wait reported %v", err)
	}
	if w.tok.Pending() {
		t.Fatalf("wakeup left pending after Wait returned")
	}
}

// TestLivenessWokenExclusiveWaiterThatAbortsPassesWakeOn: one wakeup, two
// exclusive waiters; the woken one aborts; the other must be woken.
func TestLivenessWokenExclusiveWaiterThatAbortsPassesWakeOn(t *testing.T) {
	var q Queue
	a, b := q.Prepare(true), q.Prepare(true)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		done <- b.Wait(ctx)
	}()
	q.WakeOne()
	a.Abort()
	if err := <-done; err != nil {
		t.Fatalf("the wakeup given up by an aborting waiter was lost: %v", err)
	}
}

// TestHammer is a producer/consumer on a Queue used as a condition
// variable: exclusive consumers (some with short timeouts, some aborting
// a prepared wait) take tokens, non-exclusive watchers wait for the end.
// Every token must be consumed before the deadline: a lost wakeup leaves
// a consumer asleep with tokens available.
func TestHammer(t *testing.T) {
	const (
		producers = 3
		consumers = 4
		watchers  = 2
		perProd   = 20000
		total     = producers * perProd
	)
	var (
		q        Queue
		mu       sync.Mutex
		tokens   int // guarded by mu
		consumed int // guarded by mu
		wg       sync.WaitGroup
	)
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perProd {
				mu.Lock()
				tokens++
				mu.Unlock()
				q.WakeOne()
			}
		}()
	}
	for i := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 2))
			mu.Lock()
			defer mu.Unlock()
			for {
				for tokens == 0 {
					if consumed == total {
						return
					}
					w := q.Prepare(true)
					if r.IntN(8) == 0 {
						// Changed our mind: a prepared wait not slept on.
						mu.Unlock()
						w.Abort()
						mu.Lock()
						continue
					}
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if r.IntN(2) == 0 {
						ctx, cancel = context.WithTimeout(ctx, time.Duration(r.IntN(50))*time.Microsecond)
					}
					mu.Unlock()
					_ = w.Wait(ctx) // nil or not, recheck the condition
					cancel()
					mu.Lock()
				}
				tokens--
				consumed++
				if consumed == total {
					q.WakeAll()
				}
			}
		}()
	}
	for range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			for consumed != total {
				w := q.Prepare(false)
				mu.Unlock()
				_ = w.Wait(context.Background())
				mu.Lock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("hammer stuck (lost wakeup): tokens=%d consumed=%d queued=%d", tokens, consumed, q.Len())
	}
	if consumed != total || tokens != 0 || q.Len() != 0 {
		t.Fatalf("end: consumed=%d/%d tokens=%d queued=%d", consumed, total, tokens, q.Len())
	}
}
