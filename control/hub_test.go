package control

import (
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

type countSink struct{ n int }

func (c *countSink) Event(dcache.Event) { c.n++ }

// A consumer that never reads costs the namespace nothing: Event returns
// at once, the next sink sees every event, and the consumer is told how
// many it missed, after the ones it kept, in order.
func TestHubSlowConsumerGetsOverrunNeverBlocks(t *testing.T) {
	next := &countSink{}
	h := NewHub(next)
	slow := h.Subscribe(4, nil)
	defer slow.Close()
	fast := h.Subscribe(1<<16, nil)
	defer fast.Close()
	const n = 10000
	start := time.Now()
	for i := 1; i <= n; i++ {
		h.Event(dcache.Event{Seq: uint64(i), Kind: dcache.KindRegister, Path: "x"})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("%d events took %v", n, d)
	}
	if next.n != n {
		t.Fatalf("next sink saw %d of %d", next.n, n)
	}
	items, ov := slow.Take()
	if len(items) != 4 || items[0].ev.Seq != 1 || items[3].ev.Seq != 4 {
		t.Fatalf("kept %d items", len(items))
	}
	if ov.Missed != n-4 || ov.FirstSeq != 5 || ov.LastSeq != n {
		t.Fatalf("overrun %+v", ov)
	}
	if items, ov := slow.Take(); len(items) != 0 || ov.Missed != 0 {
		t.Fatalf("second take: %d items, %+v", len(items), ov)
	}
	h.Event(dcache.Event{Seq: n + 1, Kind: dcache.KindDelete})
	if items, _ := slow.Take(); len(items) != 1 || items[0].ev.Seq != n+1 {
		t.Fatalf("after the overrun: %v", items)
	}
	if items, ov := fast.Take(); len(items) != n+1 || ov.Missed != 0 {
		t.Fatalf("fast consumer: %d items, %+v", len(items), ov)
	}
	if st := h.Stats(); st.Missed != n-4 || st.Subscribers != 2 || st.LastSeq != n+1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHubFilterAndExpire(t *testing.T) {
	h := NewHub(nil)
	s := h.Subscribe(10, func(ev *dcache.Event) bool { return ev.Kind != dcache.KindLookup })
	h.Event(dcache.Event{Seq: 1, Kind: dcache.KindLookup})
	h.Event(dcache.Event{Seq: 2, Kind: dcache.KindExpire})
	h.Event(dcache.Event{Seq: 3, Kind: dcache.KindRegister})
	items, _ := s.Take()
	if len(items) != 1 || items[0].ev.Seq != 3 {
		t.Fatalf("got %v", items)
	}
	s.Close()
	s.Close()
	h.Event(dcache.Event{Seq: 4, Kind: dcache.KindRegister})
	if items, _ := s.Take(); len(items) != 0 || h.Subscribers() != 0 {
		t.Fatalf("closed subscription got %v", items)
	}
}

type noLookups struct{ countSink }

func (*noLookups) WantsLookups() bool { return false }

// The hub wants LOOKUP events while somebody is subscribed, or when its
// next sink wants them (a plain Sink always does; one that says no, no).
func TestHubWantsLookupsOnlyWithSubscribers(t *testing.T) {
	h := NewHub(&noLookups{})
	if h.WantsLookups() {
		t.Fatal("no subscriber, next wants none: the hub wants LOOKUP events")
	}
	s := h.Subscribe(4, nil)
	if !h.WantsLookups() {
		t.Fatal("a subscriber, and the hub wants no LOOKUP events")
	}
	s.Close()
	if h.WantsLookups() {
		t.Fatal("the subscriber left, and the hub still wants LOOKUP events")
	}
	if !NewHub(&countSink{}).WantsLookups() || NewHub(nil).WantsLookups() {
		t.Fatal("next a plain Sink: wanted; no next and no subscriber: not")
	}
}

// An event every subscriber's filter drops costs no clock read (a
// helper's stream drops its own registrations, made while a lookup
// waits); one that a subscriber takes is stamped once, the same for all.
func TestHubClockOnlyForTakenEvents(t *testing.T) {
	h := NewHub(nil)
	reads := 0
	stamp := time.Unix(1000, 0)
	h.now = func() time.Time { reads++; return stamp }
	mine := func(ev *dcache.Event) bool { return ev.Caller.Origin != dcache.OriginLoader }
	a := h.Subscribe(10, mine)
	defer a.Close()
	b := h.Subscribe(10, mine)
	defer b.Close()
	h.Event(dcache.Event{Seq: 1, Kind: dcache.KindRegister, Path: "tty0", Caller: dcache.Caller{Origin: dcache.OriginLoader}})
	if reads != 0 {
		t.Fatalf("an event no subscriber takes read the clock %d times", reads)
	}
	h.Event(dcache.Event{Seq: 2, Kind: dcache.KindRegister, Path: "tty1", Caller: dcache.Caller{Origin: dcache.OriginControl}})
	if reads != 1 {
		t.Fatalf("an event two subscribers take read the clock %d times, want 1", reads)
	}
	for _, s := range []*Subscription{a, b} {
		items, _ := s.Take()
		if len(items) != 1 || items[0].ev.Seq != 2 || !items[0].at.Equal(stamp) {
			t.Fatalf("taken: %+v", items)
		}
	}
}
