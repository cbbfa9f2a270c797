package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/test/harness"
)

func TestToStatus(t *testing.T) {
	pe := func(e syscall.Errno) error { return &iofs.PathError{Op: "lookup", Path: "x", Err: e} }
	tests := []struct {
		name string
		err  error
		want fuse.Status
	}{
		{"nil", nil, fuse.OK},
		{"bare errno", syscall.EEXIST, fuse.Status(syscall.EEXIST)},
		{"path error", pe(syscall.ENOENT), fuse.ENOENT},
		{"wrapped twice", fmt.Errorf("outer: %w", pe(syscall.ENAMETOOLONG)), fuse.Status(syscall.ENAMETOOLONG)},
		{"lookup's load error", &iofs.PathError{Op: "lookup", Path: "x",
			Err: fmt.Errorf("%w (load: %v)", syscall.ENOENT, errors.New("no module"))}, fuse.ENOENT},
		{"interrupted", pe(syscall.EINTR), fuse.EINTR},
		{"context canceled", context.Canceled, fuse.EINTR},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), fuse.EINTR},
		{"zero errno", syscall.Errno(0), fuse.EIO},
		{"path error, zero errno", pe(0), fuse.EIO},
		{"path error around a wrapped errno", &iofs.PathError{Op: "x", Path: "y",
			Err: fmt.Errorf("w: %w", syscall.EROFS)}, fuse.Status(syscall.EROFS)},
		{"unknown", errors.New("boom"), fuse.EIO},
	}
	for _, tt := range tests {
		if got := toStatus(tt.err); got != tt.want {
			t.Errorf("%s: toStatus(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
		// known says whether the status came from an errno, not EIO's fallback.
		if wantKnown := tt.err != nil && tt.want != fuse.EIO && !errors.Is(tt.err, context.Canceled) &&
			!errors.Is(tt.err, context.DeadlineExceeded); known(tt.err) != wantKnown {
			t.Errorf("%s: known(%v) = %v, want %v", tt.name, tt.err, known(tt.err), wantKnown)
		}
	}
}

func newTable(t *testing.T) (*nodeTable, *dcache.Namespace) {
	ns := dcache.New(dcache.Options{})
	return newNodeTable(ns.Root()), ns
}

func mk(t *testing.T, ns *dcache.Namespace, name string) *dcache.Node {
	t.Helper()
	n, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Mode: 0o666, Major: 1, Minor: 3}, dcache.Caller{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNodeTableForgetCounting(t *testing.T) {
	tab, ns := newTable(t)
	n := mk(t, ns, "null")
	id := n.Ino()
	if tab.get(id) != nil {
		t.Fatal("id known before any lookup")
	}
	for i := 0; i < 3; i++ {
		if got := tab.ref(n); got != id {
			t.Fatalf("ref = %d, want the inode number %d", got, id)
		}
	}
	if got := tab.lookups(id); got != 3 {
		t.Fatalf("lookups = %d, want 3", got)
	}
	if tab.forget(id, 2) {
		t.Fatal("forget 2 of 3 dropped the id")
	}
	if tab.get(id) != n {
		t.Fatal("id lost while the kernel still holds one lookup")
	}
	// Unlinking does not invalidate the id; only the last FORGET does.
	if err := ns.Unregister("null", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if got := tab.get(id); got != n || got.Attr().Nlink != 0 {
		t.Fatalf("after unregister: get = %v (nlink %d)", got, got.Attr().Nlink)
	}
	if !tab.forget(id, 1) {
		t.Fatal("last forget did not drop the id")
	}
	if tab.get(id) != nil || tab.len() != 0 {
		t.Fatalf("id still known after its last forget (len %d)", tab.len())
	}
	// Forgetting an unknown id, or the root, changes nothing.
	if tab.forget(id, 1) || tab.forget(fuseRootID, 100) {
		t.Fatal("forget of an unknown id or the root reported a drop")
	}
	if tab.get(fuseRootID) != ns.Root() || tab.ref(ns.Root()) != fuseRootID {
		t.Fatal("the root is not id 1")
	}
	// Over-forgetting drops rather than wraps.
	m := mk(t, ns, "zero")
	tab.ref(m)
	if !tab.forget(m.Ino(), 5) || tab.get(m.Ino()) != nil {
		t.Fatal("over-forget did not drop the id")
	}
}

// Lookups and forgets of the same ids from many goroutines, in any
// interleaving, leave each id's count at lookups minus forgets.
func TestNodeTableConcurrentLookupForget(t *testing.T) {
	tab, ns := newTable(t)
	var nodes []*dcache.Node
	for i := 0; i < 8; i++ {
		nodes = append(nodes, mk(t, ns, fmt.Sprintf("n%d", i)))
	}
	const per = 2000
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				n := nodes[i%len(nodes)]
				tab.ref(n)
				tab.ref(n)
				tab.forget(n.Ino(), 1)
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, n := range nodes {
		total += tab.lookups(n.Ino())
	}
	if want := uint64(4 * per); total != want {
		t.Fatalf("total lookups %d, want %d", total, want)
	}
	for _, n := range nodes {
		tab.forget(n.Ino(), tab.lookups(n.Ino()))
	}
	if tab.len() != 0 {
		t.Fatalf("%d ids left after forgetting everything", tab.len())
	}
}

// fakeNotifier records notifies.
type fakeNotifier struct {
	mu    sync.Mutex
	got   []string
	reply fuse.Status
	block chan struct{} // if non-nil, every notify waits for it
}

func (f *fakeNotifier) rec(s string) fuse.Status {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, s)
	return f.reply
}
func (f *fakeNotifier) EntryNotify(p uint64, name string) fuse.Status {
	return f.rec(fmt.Sprintf("entry %d %s", p, name))
}
func (f *fakeNotifier) DeleteNotify(p, c uint64, name string) fuse.Status {
	return f.rec(fmt.Sprintf("delete %d %d %s", p, c, name))
}
func (f *fakeNotifier) InodeNotify(n uint64, off, l int64) fuse.Status {
	if off == 0 && l == 0 {
		return f.rec(fmt.Sprintf("listing %d", n)) // every page: noticeDir
	}
	return f.rec(fmt.Sprintf("inode %d %d", n, off))
}
func (f *fakeNotifier) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	harness.Until(t, 5*time.Second, what, cond)
}

// Which events become which notifies: only changes not made through FUSE,
// in order, each of the right kind.
func TestNotifyQueueTranslatesEvents(t *testing.T) {
	nq := NewNotifyQueue(0)
	builtin := dcache.Caller{Origin: dcache.OriginBuiltin}
	fuseCaller := dcache.Caller{Origin: dcache.OriginFUSE, Pid: 42}
	evs := []dcache.Event{
		{Kind: dcache.KindRegister, Parent: 1, Name: "before-mount", Ino: 2, Caller: builtin}, // dropped: not enabled
	}
	for _, ev := range evs {
		nq.Event(ev)
	}
	nq.enable()
	for _, dir := range []uint64{1, 5, 15} { // listings the kernel may hold
		nq.Listed(dir)
	}
	nq.answeredAbsent(1, "loop0", time.Minute) // a LOOKUP of it was answered absent
	for _, ev := range []dcache.Event{
		{Kind: dcache.KindRegister, Parent: 1, Name: "loop0", Ino: 10, Caller: builtin},
		{Kind: dcache.KindCreate, Parent: 1, Name: "mine", Ino: 11, Caller: fuseCaller}, // the kernel knows
		{Kind: dcache.KindDelete, Parent: 1, Name: "mine", Ino: 11, Caller: fuseCaller}, // the kernel knows
		{Kind: dcache.KindLookup, Parent: 1, Name: "x", Caller: fuseCaller},
		{Kind: dcache.KindUnregister, Parent: 5, Name: "event0", Ino: 12, Caller: dcache.Caller{Origin: dcache.OriginControl}},
		{Kind: dcache.KindExpire, Parent: 1, Name: "nvidia0", Caller: builtin},
		{Kind: dcache.KindChange, Parent: 1, Name: "tty", Ino: 13, Caller: dcache.Caller{Origin: dcache.OriginLoader}},
		{Kind: dcache.KindChange, Parent: 1, Name: "tty", Ino: 13, Caller: fuseCaller},
		{Kind: dcache.KindRegister, Parent: 1, Name: "loop1", Ino: 14, Caller: builtin}, // never answered absent; listing 1 still queued
		// A directory renamed through this mount: its ".." changed.
		{Kind: dcache.KindDelete, Parent: 1, Name: "d", Ino: 15, Type: dcache.TypeDir, Renamed: true, Caller: fuseCaller},
		{Kind: dcache.KindCreate, Parent: 5, Name: "d", Ino: 15, Type: dcache.TypeDir, Renamed: true, Caller: fuseCaller},
		// A file renamed through this mount: nothing.
		{Kind: dcache.KindDelete, Parent: 1, Name: "f", Ino: 16, Type: dcache.TypeRegular, Renamed: true, Caller: fuseCaller},
		{Kind: dcache.KindCreate, Parent: 5, Name: "f", Ino: 16, Type: dcache.TypeRegular, Renamed: true, Caller: fuseCaller},
	} {
		nq.Event(ev)
	}
	f := &fakeNotifier{}
	done := make(chan struct{})
	go func() { defer close(done); nq.run(f, zapNop()) }()
	want := []string{"entry 1 loop0", "listing 1", "delete 5 12 event0", "listing 5", "entry 1 nvidia0", "inode 13 -1",
		"listing 15"}
	waitFor(t, "notifies", func() bool { return len(f.list()) >= len(want) })
	nq.close()
	<-done
	got := f.list()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("notifies %q, want %q", got, want)
	}
	if st := nq.Stats(); st.Sent != uint64(len(want)) || st.Dropped != 0 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A full queue drops and counts; it never blocks the event sink, even
// while the worker is stuck in the kernel.
func TestNotifyQueueOverflowCountsAndNeverBlocks(t *testing.T) {
	nq := NewNotifyQueue(4)
	nq.enable()
	f := &fakeNotifier{block: make(chan struct{}), reply: fuse.ENOENT}
	done := make(chan struct{})
	go func() { defer close(done); nq.run(f, zapNop()) }()
	ev := func(i int) dcache.Event { // one notice each (a miss is in no listing)
		return dcache.Event{Kind: dcache.KindExpire, Parent: 1, Name: fmt.Sprint(i), Caller: dcache.Caller{}}
	}
	nq.Event(ev(0))
	waitFor(t, "the worker to take the first notice", func() bool { return nq.len() == 0 })
	// The worker is now blocked in "the kernel"; these must not block.
	finished := make(chan struct{})
	go func() {
		for i := 1; i <= 10; i++ {
			nq.Event(ev(i))
		}
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("Event blocked on a full queue")
	}
	if st := nq.Stats(); st.Dropped != 6 || st.Pending != 4 {
		t.Fatalf("stats %+v, want 6 dropped and 4 pending", st)
	}
	close(f.block)
	waitFor(t, "the queue to drain", func() bool { return len(f.list()) == 5 })
	if st := nq.Stats(); st.Sent != 5 || st.Failed != 0 {
		t.Errorf("ENOENT (nothing cached) must count as sent: %+v", st)
	}
	if !stopWorker(nq, done, 5*time.Second) {
		t.Fatal("worker did not stop")
	}
	nq.Event(ev(99)) // after close: dropped silently
	if nq.len() != 0 {
		t.Fatal("queued after close")
	}
}

// Sync returns once every notice queued before it was sent, and not
// before.
func TestNotifyQueueSync(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	if err := nq.Sync(context.Background()); err != nil {
		t.Fatal("Sync of an empty queue:", err)
	}
	f := &fakeNotifier{block: make(chan struct{})}
	done := make(chan struct{})
	go func() { defer close(done); nq.run(f, zapNop()) }()
	for i := 0; i < 3; i++ {
		nq.Event(dcache.Event{Kind: dcache.KindExpire, Parent: 1, Name: fmt.Sprint(i)})
	}
	synced := make(chan error, 1)
	go func() { synced <- nq.Sync(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if err := nq.Sync(ctx); err == nil {
		t.Fatal("Sync returned while the worker was blocked")
	}
	cancel()
	close(f.block)
	select {
	case err := <-synced:
		if err != nil || len(f.list()) != 3 {
			t.Fatalf("Sync: %v after %d notifies", err, len(f.list()))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sync did not return after the notifies were sent")
	}
	stopWorker(nq, done, 5*time.Second)
	if err := nq.Sync(context.Background()); err != nil {
		t.Fatal("Sync after close:", err)
	}
}

// A directory's listing notice is queued once while it waits for the
// worker, and again for a change made after the worker took it: the
// notice sent is always sent after the change.
func TestNotifyQueueListingOncePerWait(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	cachedAbsentAll(nq) // these registrations' names may be cached absent: the test is about listings
	ctl := dcache.Caller{Origin: dcache.OriginControl}
	reg := func(parent, ino uint64, name string) {
		nq.Event(dcache.Event{Kind: dcache.KindRegister, Parent: parent, Name: name, Ino: ino, Caller: ctl})
	}
	nq.Listed(1)
	nq.Listed(7)
	reg(1, 10, "a")
	reg(1, 11, "b")
	reg(7, 12, "c")
	nq.Event(dcache.Event{Kind: dcache.KindUnregister, Parent: 1, Name: "a", Ino: 10, Caller: ctl})
	if n := nq.len(); n != 6 { // a, listing 1, b, c, listing 7, delete a
		t.Fatalf("%d notices queued, want 6", n)
	}
	f := &fakeNotifier{block: make(chan struct{})}
	done := make(chan struct{})
	go func() { defer close(done); nq.run(f, zapNop()) }()
	defer stopWorker(nq, done, 5*time.Second)
	waitFor(t, "the worker to take the batch", func() bool { return nq.len() == 0 })
	nq.Listed(1)    // a listing served after the notice was queued
	reg(1, 13, "d") // listing 1 was taken: it may be sent before this change
	if n := nq.len(); n != 2 {
		t.Fatalf("%d notices queued after the batch was taken, want 2 (the entry and the listing)", n)
	}
	close(f.block)
	if err := nq.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "[entry 1 a listing 1 entry 1 b entry 7 c listing 7 delete 1 10 a entry 1 d listing 1]"
	if got := fmt.Sprint(f.list()); got != want {
		t.Fatalf("notifies %s, want %s", got, want)
	}
}

// A change to a directory whose listing the kernel cannot hold (none
// served since its last listing notice was queued) queues no listing
// notice: that notice would also drop the directory's attributes. A
// listing served while a listing notice waits keeps the directory
// listed, so that the next change after the worker took it is noticed.
func TestNotifyQueueListingOnlyIfListed(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	cachedAbsentAll(nq) // these registrations' names may be cached absent: the test is about listings
	ctl := dcache.Caller{Origin: dcache.OriginControl}
	reg := func(parent, ino uint64, name string) {
		nq.Event(dcache.Event{Kind: dcache.KindRegister, Parent: parent, Name: name, Ino: ino, Caller: ctl})
	}
	reg(1, 10, "a") // never listed
	nq.Listed(1)    // READDIR of 1
	reg(1, 11, "b") // noticed
	reg(1, 12, "c") // not listed since: none
	nq.Listed(1)    // a listing while listing 1 waits in the queue
	reg(1, 13, "d") // the queued one is sent after it
	nq.Listed(2)    // another directory's listing
	reg(1, 14, "e") // still listed (served while one waited), but one is queued: none
	f := &fakeNotifier{}
	done := make(chan struct{})
	go func() { defer close(done); nq.run(f, zapNop()) }()
	defer stopWorker(nq, done, 5*time.Second)
	if err := nq.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg(1, 15, "f") // listed while the first waited: noticed again
	reg(1, 16, "g") // not listed since
	if err := nq.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "[entry 1 a entry 1 b listing 1 entry 1 c entry 1 d entry 1 e entry 1 f listing 1 entry 1 g]"
	if got := fmt.Sprint(f.list()); got != want {
		t.Fatalf("notifies %s, want %s", got, want)
	}
}

// A queue whose server took a mount over (inheritListings) takes every
// directory for listed until its first listing notice: the kernel may
// hold listings the old process served.
func TestNotifyQueueListingInherited(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	nq.inheritListings()
	nq.inheritAbsences(0) // as Server.Resume does
	ctl := dcache.Caller{Origin: dcache.OriginControl}
	reg := func(parent, ino uint64, name string) {
		nq.Event(dcache.Event{Kind: dcache.KindRegister, Parent: parent, Name: name, Ino: ino, Caller: ctl})
	}
	f, step := runQueue(t, nq)
	step(func() { reg(1, 10, "a"); reg(7, 11, "b") }) // each directory's first change
	step(func() { reg(1, 12, "c") })                  // 1 was noticed, not listed since
	step(func() { nq.Listed(1); reg(1, 13, "d") })    // listed again
	want := "[entry 1 a listing 1 entry 7 b listing 7 entry 1 c entry 1 d listing 1]"
	if got := fmt.Sprint(f.list()); got != want {
		t.Fatalf("notifies %s, want %s", got, want)
	}
}

// cachedAbsentAll makes every name count as cached absent by nq's kernel
// for an hour: each registration queues its entry notice.
func cachedAbsentAll(nq *NotifyQueue) {
	nq.mu.Lock()
	nq.absentAll = time.Now().Add(time.Hour)
	nq.mu.Unlock()
}

// runQueue runs nq's worker over a fake kernel until the test ends; step
// runs fn and waits until what it queued is sent.
func runQueue(t *testing.T, nq *NotifyQueue) (f *fakeNotifier, step func(fn func())) {
	f = &fakeNotifier{}
	done := make(chan struct{})
	go func() { defer close(done); nq.run(f, zapNop()) }()
	t.Cleanup(func() { stopWorker(nq, done, 5*time.Second) })
	return f, func(fn func()) {
		t.Helper()
		fn()
		if err := nq.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
