package waitq

// A Token is the wake handle of one wait: the thing a waiter sleeps on and a
// waker posts to, exactly once per wakeup. It is what a waker keeps after it
// has dropped the queue lock, instead of a pointer to the wait record, so
// that the record itself is never touched once the wakeup is granted (race
// R1 of DESIGN.md). A Token is a one-slot channel; the zero Token is not
// usable, make one with NewToken.
//
// The protocol, for any owner of a Token (Queue and the rwsem wait list):
//
//   - a Token may be reused for many waits, but only once every wakeup
//     posted to it has been consumed; a waiter that learns, under the lock
//     that granted it, that it was woken while it was giving up must Consume
//     the wakeup in flight before its record (and Token) is reused (race R2);
//   - Post is called at most once per grant, and the grant itself (taking
//     the record off its queue) is done under the queue lock before that.
type Token struct {
	c chan struct{}
}

// NewToken returns a Token with no wakeup pending.
func NewToken() Token { return Token{c: make(chan struct{}, 1)} }

// Post delivers one wakeup. It never blocks. Posting to a Token whose last
// wakeup has not been consumed is a protocol error (a second wakeup for a
// wait that was granted once) and panics.
func (t Token) Post() {
	select {
	case t.c <- struct{}{}:
	default:
		panic("waitq: wakeup posted to a token with a wakeup pending")
	}
}

// C is the channel a waiter selects on; a receive from it consumes the
// wakeup.
func (t Token) C() <-chan struct{} { return t.c }

// Consume blocks until a wakeup is posted and consumes it. It is the way a
// waiter that was granted while giving up waits for the waker that is
// already on its way.
func (t Token) Consume() { <-t.c }

// Pending reports whether a wakeup is posted and not yet consumed. It is
// meant for assertions and tests; its answer may be stale at once.
func (t Token) Pending() bool { return len(t.c) != 0 }

// A WakeList collects the Tokens of waiters granted under a lock, to be
// posted by Wake after that lock is dropped. The zero value is an empty
// list; it holds a few Tokens inline so that the common wakeup does not
// allocate. A WakeList is used by one goroutine at a time.
type WakeList struct {
	n      int
	inline [4]Token
	more   []Token
}

// Add appends t to the list.
func (l *WakeList) Add(t Token) {
	if l.n < len(l.inline) {
		l.inline[l.n] = t
	} else {
		l.more = append(l.more, t)
	}
	l.n++
}

// Len is the number of Tokens collected.
func (l *WakeList) Len() int { return l.n }

// Wake posts every collected Token in the order added and empties the list.
// Call it with no lock held.
func (l *WakeList) Wake() { l.WakeEach(nil) }

// WakeEach is Wake, calling after (if not nil) after each Token is posted.
func (l *WakeList) WakeEach(after func()) {
	for i := 0; i < l.n && i < len(l.inline); i++ {
		l.inline[i].Post()
		l.inline[i] = Token{}
		if after != nil {
			after()
		}
	}
	for i, t := range l.more {
		t.Post()
		l.more[i] = Token{}
		if after != nil {
			after()
		}
	}
	l.n = 0
	l.more = l.more[:0]
}
