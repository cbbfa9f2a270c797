package dcache

import "testing"

// panicSink panics on its first event and counts the others.
type panicSink struct {
	calls int
	got   []string
}

func (s *panicSink) Event(ev Event) {
	s.calls++
	if s.calls == 1 {
		panic("sink")
	}
	s.got = append(s.got, ev.Name)
}

// A sink that panics does not stop delivery for good: the panic reaches
// the flusher, the queue is left unlocked and not flushing, and the next
// flush delivers what was queued after it.
func TestEventQueueSurvivesPanickingSink(t *testing.T) {
	s := &panicSink{}
	q := &eventQueue{sink: s}
	q.push(Event{Kind: KindCreate, Name: "a"})
	func() {
		defer func() {
			if p := recover(); p != "sink" {
				t.Fatalf("flush recovered %v, want the sink's panic", p)
			}
		}()
		q.flush()
	}()
	q.push(Event{Kind: KindCreate, Name: "b"})
	q.flush()
	if len(s.got) != 1 || s.got[0] != "b" {
		t.Fatalf("after the panic the sink got %q, want [b]", s.got)
	}
}
