package control

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// Hub fans the namespace's event stream out: to the next sink (the FUSE
// server's notify queue, which turns changes into kernel notifies) and to
// every subscriber (GET /v1/events, the helper's stream, waits). It is the
// namespace's dcache.Sink, so Event only queues: each subscriber has a
// bounded buffer, and an event that finds it full is counted as missed for
// that subscriber, who reads an overrun record with the count before the
// events that follow. The namespace never waits for a consumer.
//
// Lock order: Hub.mu, then Subscription.mu (leaves; taken inside dcache's
// event delivery, which holds no dcache mutex).
type Hub struct {
	next dcache.Sink // immutable; may be nil
	now  func() time.Time

	mu   sync.Mutex
	subs map[*Subscription]struct{} // guarded by mu
	// nsubs is len(subs), written under mu and read without it by Event,
	// which skips the clock and the lock while nobody subscribes (the
	// common case: every FUSE change is an event). A Subscribe that
	// returned before a change was made sees that change's event: the
	// store below happens before the change, the load in Event after it.
	nsubs atomic.Int32

	lastSeq   atomic.Uint64
	delivered atomic.Uint64
	missed    atomic.Uint64
}

// NewHub returns a hub that passes every event to next (nil: none) first.
func NewHub(next dcache.Sink) *Hub {
	return &Hub{next: next, now: time.Now, subs: make(map[*Subscription]struct{})}
}

var _ dcache.Sink = (*Hub)(nil)

// item is one queued event with the time the hub saw it.
type item struct {
	ev dcache.Event
	at time.Time
}

// WantsLookups implements dcache.LookupSink: LOOKUP events are wanted
// while somebody is subscribed, or if the next sink wants them.
func (h *Hub) WantsLookups() bool {
	return h.nsubs.Load() > 0 || (h.next != nil && dcache.WantsLookups(h.next))
}

var _ dcache.LookupSink = (*Hub)(nil)

// Event implements dcache.Sink. It never blocks.
func (h *Hub) Event(ev dcache.Event) {
	if h.next != nil {
		h.next.Event(ev)
	}
	if ev.Kind.Internal() {
		return // EXPIRE, TOUCH: the daemon's own, not devfsd events
	}
	h.lastSeq.Store(ev.Seq)
	if h.nsubs.Load() == 0 {
		return
	}
	// The clock is read once, and only for an event some subscriber
	// takes: a helper's stream takes none of its own registrations,
	// which are made while the lookup they answer waits.
	var at time.Time
	h.mu.Lock()
	for s := range h.subs {
		if s.filter != nil && !s.filter(&ev) {
			continue
		}
		if at.IsZero() {
			at = h.now()
		}
		s.push(item{ev: ev, at: at})
	}
	h.mu.Unlock()
}

// Subscription is one consumer's bounded buffer.
type Subscription struct {
	h      *Hub
	filter func(*dcache.Event) bool // immutable; nil: everything
	max    int                      // immutable

	mu sync.Mutex
	// Guarded by mu:
	buf                 []item
	missed              uint64 // dropped since the last Take
	firstMiss, lastMiss uint64
	closed              bool

	ready chan struct{} // capacity 1: something to take
}

// Subscribe adds a consumer holding at most max events (max >= 1). filter,
// if not nil, is called from Event (it must be cheap and only look at the
// event) and drops the events it returns false for, uncounted. max is
// clamped to [1, 1<<16].
func (h *Hub) Subscribe(max int, filter func(*dcache.Event) bool) *Subscription {
	if max < 1 {
		max = 1
	}
	if max > 1<<16 {
		max = 1 << 16
	}
	s := &Subscription{h: h, filter: filter, max: max, ready: make(chan struct{}, 1)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.nsubs.Store(int32(len(h.subs)))
	h.mu.Unlock()
	return s
}

// Subscribers returns the number of consumers.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// HubStats counts the fan-out.
type HubStats struct {
	LastSeq     uint64
	Subscribers int
	Delivered   uint64
	Missed      uint64
}

// Stats returns the counters.
func (h *Hub) Stats() HubStats {
	return HubStats{LastSeq: h.lastSeq.Load(), Subscribers: h.Subscribers(),
		Delivered: h.delivered.Load(), Missed: h.missed.Load()}
}

// push queues it, which s's filter took.
func (s *Subscription) push(it item) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if len(s.buf) >= s.max {
		if s.missed == 0 {
			s.firstMiss = it.ev.Seq
		}
		s.missed++
		s.lastMiss = it.ev.Seq
		s.mu.Unlock()
		s.h.missed.Add(1)
	} else {
		s.buf = append(s.buf, it)
		s.mu.Unlock()
		s.h.delivered.Add(1)
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready is signalled (capacity 1) when Take has something.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Overrun describes events a subscriber missed.
type Overrun struct {
	Missed, FirstSeq, LastSeq uint64
}

// Take returns the queued events, oldest first, and what was missed after
// them (zero if nothing), and empties the buffer.
func (s *Subscription) Take() ([]item, Overrun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := s.buf
	s.buf = make([]item, 0, min(len(items), s.max))
	ov := Overrun{Missed: s.missed, FirstSeq: s.firstMiss, LastSeq: s.lastMiss}
	s.missed = 0
	return items, ov
}

// Close removes the subscriber. Idempotent.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	delete(s.h.subs, s)
	s.h.nsubs.Store(int32(len(s.h.subs)))
	s.h.mu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.buf = nil
	s.mu.Unlock()
}
