package dcache

import "testing"

type countSink struct {
	n    int
	last Event
}

func (s *countSink) Event(ev Event) { s.n++; s.last = ev }

// A queue that holds one event at a time reuses the delivered batch's
// array: events keep their order and content, the array keeps no strings
// of delivered events, and a push and flush in steady state allocate
// nothing.
func TestEventQueueReusesBatch(t *testing.T) {
	s := &countSink{}
	q := &eventQueue{sink: s}
	for i := 1; i <= 3; i++ {
		q.push(Event{Kind: KindCreate, Name: "x"})
		q.pushAll(Event{Kind: KindDelete, Name: "y"}, Event{Kind: KindCreate, Name: "z"})
		q.flush()
		if s.n != 3*i || s.last.Seq != uint64(3*i) || s.last.Name != "z" {
			t.Fatalf("round %d: %d events, last %+v", i, s.n, s.last)
		}
		q.mu.Lock()
		if q.pending != nil || cap(q.spare) == 0 {
			t.Fatalf("round %d: pending %v, spare cap %d", i, q.pending, cap(q.spare))
		}
		for _, ev := range q.spare[:cap(q.spare)] {
			if ev.Name != "" {
				t.Fatalf("round %d: the spare array pins %q", i, ev.Name)
			}
		}
		q.mu.Unlock()
	}
	if a := testing.AllocsPerRun(100, func() {
		q.push(Event{Kind: KindCreate, Name: "x"})
		q.flush()
	}); a != 0 {
		t.Errorf("push+flush allocates %v times", a)
	}
}
