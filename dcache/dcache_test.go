package dcache

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var fuseCaller = Caller{Pid: 100, Uid: 1000, Gid: 1000, Origin: OriginFUSE}
var loaderCaller = Caller{Pid: 7, Origin: OriginLoader}

// recorder is a Sink that keeps every event.
type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) Event(ev Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2003, 7, 7, 22, 38, 35, 0, time.UTC)} }

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

func TestNameLimits(t *testing.T) {
	ns := New(Options{})
	root := ns.Root()
	for _, tc := range []struct {
		name     string
		want     syscall.Errno
		register bool // also a valid test as a last path component
	}{
		{strings.Repeat("x", 255), 0, true},
		{strings.Repeat("y", 256), syscall.ENAMETOOLONG, true},
		{"a/b", syscall.EINVAL, false}, // a path, for Register
		{"a\x00b", syscall.EINVAL, true},
		{"", syscall.EINVAL, false},
		{".", syscall.EINVAL, false},
		{"..", syscall.EINVAL, true},
	} {
		_, err := root.Mknod(tc.name, syscall.S_IFCHR|0600, 1, 3, fuseCaller)
		wantErrno(t, "mknod "+tc.name[:min(len(tc.name), 8)], err, tc.want)
		if tc.register {
			_, err = ns.Register("d/"+tc.name, Spec{Type: TypeChar}, fuseCaller)
			wantErrno(t, "register d/"+tc.name[:min(len(tc.name), 8)], err, tc.want)
		}
	}
	if st := ns.Statfs(); st.NameMax != 255 {
		t.Errorf("NameMax %d", st.NameMax)
	}
}

func TestLimits(t *testing.T) {
	t.Run("nodes", func(t *testing.T) {
		ns := New(Options{MaxNodes: 3})
		_, err := ns.Register("a", Spec{Type: TypeChar}, loaderCaller)
		wantErrno(t, "2nd node", err, 0)
		_, err = ns.Root().Mkdir("b", 0755, fuseCaller)
		wantErrno(t, "3rd node", err, 0)
		_, err = ns.Root().Symlink("c", "a", fuseCaller)
		wantErrno(t, "4th node", err, syscall.ENOSPC)
		wantErrno(t, "unlink", ns.Root().Unlink("a", fuseCaller), 0)
		_, err = ns.Root().Symlink("c", "a", fuseCaller)
		wantErrno(t, "after unlink", err, 0)
		if st := ns.Statfs(); st.Nodes != 3 || st.MaxNodes != 3 {
			t.Errorf("statfs %+v", st)
		}
	})
	t.Run("depth", func(t *testing.T) {
		ns := New(Options{MaxDepth: 3})
		_, err := ns.Register("a/b/c", Spec{Type: TypeChar}, loaderCaller)
		wantErrno(t, "depth 3", err, 0)
		_, err = ns.Register("a/b/c2/d", Spec{Type: TypeChar}, loaderCaller)
		wantErrno(t, "depth 4", err, syscall.ENOSPC)
		b, _ := ns.Resolve("a/b")
		_, err = b.Mkdir("x", 0755, fuseCaller)
		wantErrno(t, "mkdir depth 3", err, 0)
		x, _ := ns.Resolve("a/b/x")
		_, err = x.Mkdir("y", 0755, fuseCaller)
		wantErrno(t, "mkdir depth 4", err, syscall.ENOSPC)
		// Moving a/b (height 2) under a/b's sibling c would make depth 4.
		_, err = ns.Root().Mkdir("e", 0755, fuseCaller)
		wantErrno(t, "mkdir e", err, 0)
		e, _ := ns.Resolve("e")
		f, _ := e.Mkdir("f", 0755, fuseCaller)
		a, _ := ns.Resolve("a")
		wantErrno(t, "rename too deep", ns.Rename(a, "b", f, "b", 0, fuseCaller), syscall.ENOSPC)
		wantErrno(t, "rename fits", ns.Rename(a, "b", e, "b", 0, fuseCaller), 0)
	})
	t.Run("file size", func(t *testing.T) {
		ns := New(Options{MaxFileSize: 10, MaxBytes: 15})
		f, _ := ns.Root().Mknod("f", syscall.S_IFREG|0644, 0, 0, fuseCaller)
		g, _ := ns.Root().Mknod("g", syscall.S_IFREG|0644, 0, 0, fuseCaller)
		n, err := f.WriteAt([]byte("0123456789abc"), 0)
		if n != 10 || err != nil {
			t.Errorf("short write: %d, %v", n, err)
		}
		_, err = f.WriteAt([]byte("x"), 10)
		wantErrno(t, "write past cap", err, syscall.EFBIG)
		_, err = g.SetAttr(SetAttrIn{Valid: SetSize, Size: 11}, fuseCaller)
		wantErrno(t, "truncate past cap", err, syscall.EFBIG)
		_, err = g.WriteAt([]byte("123456"), 0)
		wantErrno(t, "write past MaxBytes", err, syscall.ENOSPC)
		_, err = g.WriteAt([]byte("12345"), 0)
		wantErrno(t, "write to MaxBytes", err, 0)
		wantErrno(t, "unlink f", ns.Root().Unlink("f", fuseCaller), 0)
		if st := ns.Statfs(); st.Bytes != 5 {
			t.Errorf("bytes after unlink: %d", st.Bytes)
		}
		// The unlinked file still reads and writes.
		buf := make([]byte, 20)
		if n, _ := f.ReadAt(buf, 0); string(buf[:n]) != "0123456789" {
			t.Errorf("unlinked content %q", buf[:n])
		}
		if _, err := f.WriteAt([]byte("Z"), 0); err != nil {
			t.Errorf("write to unlinked: %v", err)
		}
		if a := f.Attr(); a.Nlink != 0 || a.Size != 10 {
			t.Errorf("unlinked attr %+v", a)
		}
		_, err = ns.Root().SetAttr(SetAttrIn{Valid: SetSize}, fuseCaller)
		wantErrno(t, "truncate dir", err, syscall.EISDIR)
	})
}

func TestPOSIXErrors(t *testing.T) {
	ns := New(Options{})
	r := ns.Root()
	d, _ := r.Mkdir("d", 0755, fuseCaller)
	d.Mknod("inner", syscall.S_IFIFO|0644, 0, 0, fuseCaller)
	r.Mkdir("e", 0755, fuseCaller)
	f, _ := r.Mknod("f", syscall.S_IFCHR|0600, 1, 3, fuseCaller)
	r.Link("f2", f, fuseCaller)
	other := New(Options{})
	for _, tc := range []struct {
		what string
		err  error
		want syscall.Errno
	}{
		{"rename dir onto non-empty dir", ns.Rename(r, "e", r, "d", 0, fuseCaller), syscall.ENOTEMPTY},
		{"rename dir onto non-dir", ns.Rename(r, "e", r, "f", 0, fuseCaller), syscall.ENOTDIR},
		{"rename non-dir onto dir", ns.Rename(r, "f", r, "e", 0, fuseCaller), syscall.EISDIR},
		{"rename dir into own subtree", ns.Rename(r, "d", d, "x", 0, fuseCaller), syscall.EINVAL},
		{"rename onto own ancestor", ns.Rename(d, "inner", r, "d", 0, fuseCaller), syscall.ENOTEMPTY},
		{"link of a dir", r.Link("dl", d, fuseCaller), syscall.EPERM},
		{"link onto existing", r.Link("e", f, fuseCaller), syscall.EEXIST},
		{"link across namespaces", other.Root().Link("x", f, fuseCaller), syscall.EXDEV},
		{"rename across namespaces", ns.Rename(r, "f", other.Root(), "x", 0, fuseCaller), syscall.EXDEV},
		{"noreplace onto existing", ns.Rename(r, "f", r, "d", RenameNoReplace, fuseCaller), syscall.EEXIST},
		{"noreplace onto itself", ns.Rename(r, "f", r, "f", RenameNoReplace, fuseCaller), syscall.EEXIST},
		{"exchange with missing target", ns.Rename(r, "f", r, "zz", RenameExchange, fuseCaller), syscall.ENOENT},
		{"both flags", ns.Rename(r, "f", r, "zz", RenameExchange|RenameNoReplace, fuseCaller), syscall.EINVAL},
		{"rename onto itself", ns.Rename(r, "f", r, "f", 0, fuseCaller), 0},
		{"rename onto a hard link of itself", ns.Rename(r, "f", r, "f2", 0, fuseCaller), 0},
		{"rmdir non-empty", r.Rmdir("d", fuseCaller), syscall.ENOTEMPTY},
		{"rmdir non-dir", r.Rmdir("f", fuseCaller), syscall.ENOTDIR},
		{"unlink dir", r.Unlink("d", fuseCaller), syscall.EISDIR},
		{"unlink missing", r.Unlink("nope", fuseCaller), syscall.ENOENT},
		{"mkdir in a file", func() error { _, err := f.Mkdir("x", 0755, fuseCaller); return err }(), syscall.ENOTDIR},
		{"mknod of a dir", func() error { _, err := r.Mknod("x", syscall.S_IFDIR|0755, 0, 0, fuseCaller); return err }(), syscall.EPERM},
		{"mknod existing", func() error { _, err := r.Mknod("f", syscall.S_IFREG, 0, 0, fuseCaller); return err }(), syscall.EEXIST},
		{"register existing", func() error { _, err := ns.Register("d/inner", Spec{Type: TypeChar}, loaderCaller); return err }(), syscall.EEXIST},
		{"register under a file", func() error { _, err := ns.Register("f/x", Spec{Type: TypeChar}, loaderCaller); return err }(), syscall.ENOTDIR},
		{"unregister missing", ns.Unregister("nope", loaderCaller), syscall.ENOENT},
	} {
		wantErrno(t, tc.what, tc.err, tc.want)
	}
	// Both names of f survive the no-op renames.
	for _, name := range []string{"f", "f2"} {
		if n, err := r.Lookup(name); err != nil || n != f {
			t.Errorf("%s after no-op renames: %v", name, err)
		}
	}
	if a := f.Attr(); a.Nlink != 2 {
		t.Errorf("f nlink %d", a.Nlink)
	}
}

func TestRemovedDirectory(t *testing.T) {
	ns := New(Options{})
	d, _ := ns.Root().Mkdir("d", 0755, fuseCaller)
	wantErrno(t, "rmdir", ns.Root().Rmdir("d", fuseCaller), 0)
	_, err := d.Mknod("x", syscall.S_IFREG, 0, 0, fuseCaller)
	wantErrno(t, "create in removed dir", err, syscall.ENOENT)
	_, err = d.ReadDir(0, 0)
	wantErrno(t, "readdir removed dir", err, syscall.ENOENT)
	if a := d.Attr(); a.Nlink != 0 {
		t.Errorf("removed dir nlink %d", a.Nlink)
	}
	if a := ns.Root().Attr(); a.Nlink != 2 {
		t.Errorf("root nlink %d", a.Nlink)
	}
}

func TestInodeNumbersNeverReused(t *testing.T) {
	ns := New(Options{Generation: 42})
	seen := map[uint64]bool{1: true}
	if ns.Root().Ino() != 1 || ns.Root().Gen() != 42 {
		t.Fatalf("root ino %d gen %d", ns.Root().Ino(), ns.Root().Gen())
	}
	for i := 0; i < 100; i++ {
		n, err := ns.Register("x", Spec{Type: TypeChar}, loaderCaller)
		if err != nil {
			t.Fatal(err)
		}
		if seen[n.Ino()] {
			t.Fatalf("ino %d reused", n.Ino())
		}
		seen[n.Ino()] = true
		ns.Unregister("x", loaderCaller)
	}
}

func TestRegisterTimesAndAttrs(t *testing.T) {
	clk := newClock()
	ns := New(Options{Now: clk.Now})
	reg := clk.Now()
	n, err := ns.Register("input/event0", Spec{Type: TypeChar, Mode: 0, Uid: 5, Gid: 6, Major: 13, Minor: 64}, loaderCaller)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	a := n.Attr()
	want := Attr{Ino: n.Ino(), Gen: n.Gen(), Type: TypeChar, Mode: syscall.S_IFCHR, Nlink: 1,
		Uid: 5, Gid: 6, Major: 13, Minor: 64, Atime: reg, Mtime: reg, Ctime: reg}
	if a != want {
		t.Errorf("attr\n got %+v\nwant %+v", a, want)
	}
	dir, _ := ns.Resolve("input")
	if a := dir.Attr(); a.Mode != syscall.S_IFDIR|0755 || a.Nlink != 2 {
		t.Errorf("parent attr %+v", a)
	}
	a, _ = n.SetAttr(SetAttrIn{Valid: SetMode | SetUid, Mode: 0640, Uid: 0}, fuseCaller)
	if a.Mode != syscall.S_IFCHR|0640 || a.Uid != 0 || !a.Ctime.Equal(clk.Now()) || !a.Mtime.Equal(reg) {
		t.Errorf("after chmod %+v", a)
	}
	if n.Path() != "input/event0" {
		t.Errorf("path %q", n.Path())
	}
}

func TestEvents(t *testing.T) {
	rec := &recorder{}
	ns := New(Options{Sink: rec})
	ns.Register("snd/pcm", Spec{Type: TypeChar, Major: 116, Minor: 2}, loaderCaller)
	snd, _ := ns.Resolve("snd")
	n, _ := snd.Mknod("x", syscall.S_IFIFO|0600, 0, 0, fuseCaller)
	n.SetAttr(SetAttrIn{Valid: SetMode, Mode: 0666}, fuseCaller)
	snd.Unlink("x", fuseCaller)
	ns.EmitLookup(snd, snd.Path(), "y", fuseCaller)
	ns.Unregister("snd", Caller{Origin: OriginControl})
	type ev struct {
		kind   Kind
		path   string
		origin Origin
	}
	want := []ev{
		{KindRegister, "snd", OriginLoader}, {KindRegister, "snd/pcm", OriginLoader},
		{KindCreate, "snd/x", OriginFUSE}, {KindChange, "snd/x", OriginFUSE}, {KindDelete, "snd/x", OriginFUSE},
		{KindLookup, "snd/y", OriginFUSE},
		{KindUnregister, "snd/pcm", OriginControl}, {KindUnregister, "snd", OriginControl},
	}
	got := rec.take()
	if len(got) != len(want) {
		t.Fatalf("got %d events: %+v", len(got), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.Path != w.path || g.Caller.Origin != w.origin || g.Seq != uint64(i+1) {
			t.Errorf("event %d: got %v %q %v seq %d, want %v %q %v", i, g.Kind, g.Path, g.Caller.Origin, g.Seq, w.kind, w.path, w.origin)
		}
	}
	if got[1].Major != 116 || got[1].Minor != 2 || got[1].Parent != snd.Ino() || got[1].Name != "pcm" || !got[1].FromLoader() {
		t.Errorf("register event %+v", got[1])
	}
}

func TestNegativeEntries(t *testing.T) {
	clk := newClock()
	rec := &recorder{}
	ns := New(Options{Now: clk.Now, NegativeTTL: 2 * time.Second, Sink: rec})
	r := ns.Root()
	neg := func() bool {
		r.LockMu()
		defer r.UnlockMu()
		_, neg := r.ChildLocked("foo")
		return neg
	}
	r.LockMu()
	r.AddNegativeLocked("foo")
	r.UnlockMu()
	if !neg() {
		t.Fatal("no negative entry")
	}
	clk.Advance(time.Second)
	if !neg() {
		t.Fatal("negative entry expired early")
	}
	clk.Advance(time.Second)
	if neg() {
		t.Fatal("negative entry outlived its TTL")
	}
	ns.Flush()
	if evs := rec.take(); len(evs) != 1 || evs[0].Kind != KindExpire || evs[0].Name != "foo" {
		t.Errorf("expiry events %+v", evs)
	}
	// Registration drops it.
	r.LockMu()
	r.AddNegativeLocked("foo")
	r.UnlockMu()
	ns.Register("foo", Spec{Type: TypeChar}, loaderCaller)
	if n, neg := func() (*Node, bool) { r.LockMu(); defer r.UnlockMu(); return r.ChildLocked("foo") }(); n == nil || neg {
		t.Errorf("after register: %v %v", n, neg)
	}
	// The sweep.
	r.LockMu()
	r.AddNegativeLocked("bar")
	r.UnlockMu()
	clk.Advance(3 * time.Second)
	if n := ns.ExpireNegatives(); n != 1 {
		t.Errorf("swept %d", n)
	}
}

// EntryLocked answers step 1 of the miss protocol in one look, and
// AddNegativeLocked answers step 4: each case of what a directory can hold
// for a name, table-driven.
func TestEntryLockedAndAddNegativeLocked(t *testing.T) {
	clk := newClock()
	ns := New(Options{Now: clk.Now, NegativeTTL: 2 * time.Second})
	r := ns.Root()
	foo, _ := ns.Register("foo", Spec{Type: TypeChar}, loaderCaller)
	gone, _ := r.Mkdir("gone", 0755, fuseCaller)
	gone.LockMu()
	gone.AddNegativeLocked("stale") // expires with the clock below
	gone.UnlockMu()
	r.LockMu()
	r.AddNegativeLocked("cached")
	r.PublishLocked("loading", "record")
	r.UnlockMu()
	clk.Advance(3 * time.Second)
	gone.LockMu()
	gone.AddNegativeLocked("fresh")
	gone.UnlockMu()
	r.LockMu()
	r.AddNegativeLocked("cached") // fresh again
	r.UnlockMu()
	if err := r.Rmdir("gone", fuseCaller); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  *Node
		name string
		want Entry
	}{
		{r, "foo", Entry{Node: foo}},
		{r, "cached", Entry{Negative: true}},
		{r, "loading", Entry{Inflight: "record"}},
		{r, "absent", Entry{}},
		{gone, "fresh", Entry{Negative: true}},
		{gone, "stale", Entry{DirRemoved: true}},
		{gone, "absent", Entry{DirRemoved: true}},
	} {
		tc.dir.LockMu()
		got := tc.dir.EntryLocked(tc.name)
		tc.dir.UnlockMu()
		if got != tc.want {
			t.Errorf("EntryLocked(%q) in %q = %+v, want %+v", tc.name, tc.dir.Path(), got, tc.want)
		}
	}
	r.LockMu()
	child := r.AddNegativeLocked("foo")
	none := r.AddNegativeLocked("absent")
	e := r.EntryLocked("absent")
	r.UnpublishLocked("loading", "record")
	r.UnlockMu()
	if child != foo || none != nil || !e.Negative {
		t.Errorf("AddNegativeLocked: of an existing name %v (want foo), of an absent one %v (want nil), cached %v", child, none, e.Negative)
	}
	if _, err := r.Lookup("foo"); err != nil {
		t.Errorf("AddNegativeLocked of an existing name changed it: %v", err)
	}
}

// A directory's negative table is bounded (maxNegative). Once it is full,
// a new miss is not cached while nothing in the table has expired — and
// is not charged a sweep of the whole table for it (negNext), which would make a
// storm of new misses in one directory quadratic. Once the oldest entries
// expire, the next miss sweeps them and is cached again.
func TestNegativeTableFullSkipsSweepUntilExpiry(t *testing.T) {
	clk := newClock()
	ns := New(Options{Now: clk.Now, NegativeTTL: 2 * time.Second})
	r := ns.Root()
	add := func(name string) {
		r.LockMu()
		r.AddNegativeLocked(name)
		r.UnlockMu()
	}
	cached := func(name string) bool {
		r.LockMu()
		defer r.UnlockMu()
		_, neg := r.ChildLocked(name)
		return neg
	}
	for i := 0; i < maxNegative; i++ {
		add(fmt.Sprintf("old%05d", i))
	}
	clk.Advance(time.Second)
	for i := 0; i < maxNegative; i++ { // full: none cached, no sweep needed
		add(fmt.Sprintf("new%05d", i))
		if i == 0 && r.dir.negNext.IsZero() {
			t.Fatal("a sweep of the full table left no lower bound on its expiries")
		}
	}
	if cached("new00000") || len(r.dir.negative) != maxNegative {
		t.Fatalf("full table: new miss cached %v, %d entries; want not cached, %d", cached("new00000"), len(r.dir.negative), maxNegative)
	}
	if r.dir.negSweeps != 1 {
		t.Errorf("%d misses on a full table that nothing can leave yet swept it %d times, want 1", maxNegative, r.dir.negSweeps)
	}
	clk.Advance(time.Second) // the old entries expire
	add("late")
	if !cached("late") {
		t.Error("after the old entries expired, a new miss was not cached")
	}
	if n := len(r.dir.negative); n != 1 {
		t.Errorf("after the sweep: %d entries, want 1 (the old ones dropped)", n)
	}
}

// BenchmarkAddNegativeFull is a miss of a new name in a directory whose
// negative table is full and not yet expired.
func BenchmarkAddNegativeFull(b *testing.B) {
	ns := New(Options{NegativeTTL: time.Hour})
	r := ns.Root()
	for i := 0; i < maxNegative; i++ {
		r.LockMu()
		r.AddNegativeLocked(fmt.Sprintf("old%05d", i))
		r.UnlockMu()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.LockMu()
		r.AddNegativeLocked("new")
		r.UnlockMu()
	}
}

func TestReadDirStableOffsets(t *testing.T) {
	ns := New(Options{})
	r := ns.Root()
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		r.Mknod(name, syscall.S_IFREG, 0, 0, fuseCaller)
	}
	page, _ := r.ReadDir(0, 4) // ".", "..", a, b
	if len(page) != 4 || page[0].Name != "." || page[1].Name != ".." || page[3].Name != "b" {
		t.Fatalf("first page %+v", page)
	}
	// Meanwhile: remove a listed and an unlisted entry, add one.
	r.Unlink("a", fuseCaller)
	r.Unlink("c", fuseCaller)
	r.Mknod("f", syscall.S_IFREG, 0, 0, fuseCaller)
	rest, _ := r.ReadDir(page[3].Cookie, 0)
	var names []string
	for _, de := range rest {
		names = append(names, de.Name)
	}
	if strings.Join(names, ",") != "d,e,f" {
		t.Errorf("rest %v", names)
	}
	// Many removals compact the order without changing cookies.
	for i := 0; i < 100; i++ {
		n := "t" + string(rune('A'+i%26)) + string(rune('a'+i/26))
		r.Mknod(n, syscall.S_IFREG, 0, 0, fuseCaller)
		r.Unlink(n, fuseCaller)
	}
	again, _ := r.ReadDir(page[3].Cookie, 0)
	if len(again) != 3 || again[0].Cookie != rest[0].Cookie {
		t.Errorf("after compaction %+v", again)
	}
}

func TestMisusePanics(t *testing.T) {
	ns := New(Options{})
	f, _ := ns.Root().Mknod("f", syscall.S_IFREG, 0, 0, fuseCaller)
	for _, tc := range []struct {
		what string
		fn   func()
	}{
		{"Sem of a file", func() { f.Sem() }},
		{"slot taken", func() {
			r := ns.Root()
			r.LockMu()
			defer r.UnlockMu()
			r.PublishLocked("x", 1)
			defer r.UnpublishLocked("x", 1)
			r.PublishLocked("x", 2)
		}},
		{"clear foreign", func() {
			r := ns.Root()
			r.LockMu()
			defer r.UnlockMu()
			r.UnpublishLocked("y", 1)
		}},
	} {
		func() {
			defer func() {
				p := recover()
				if s, _ := p.(string); !strings.HasPrefix(s, "dcache: ") {
					t.Errorf("%s: panic %v", tc.what, p)
				}
			}()
			tc.fn()
		}()
	}
}

// TestHammerNamespace runs registrations, unregistrations, FUSE changes,
// renames and readdirs of overlapping names concurrently; under -race it
// finds unguarded state, and the final tree must agree with Statfs.
func TestHammerNamespace(t *testing.T) {
	ns := New(Options{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(hammerDuration(t))
	names := []string{"a", "b", "a/x", "b/x", "a/x/y", "c"}
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			i := g
			for time.Now().Before(deadline) {
				i++
				p := names[i%len(names)]
				switch (i / len(names)) % 6 {
				case 0:
					ns.Register(p, Spec{Type: TypeChar}, loaderCaller)
				case 1:
					ns.Unregister(p, loaderCaller)
				case 2:
					if d, err := ns.Resolve(p); err == nil && d.IsDir() {
						d.Mkdir("m", 0755, fuseCaller)
						d.ReadDir(0, 0)
					}
				case 3:
					a, err1 := ns.Resolve("a")
					b, err2 := ns.Resolve("b")
					if err1 == nil && err2 == nil && a.IsDir() && b.IsDir() {
						ns.Rename(a, "x", b, "x", uint32(i%3), fuseCaller)
						ns.Rename(b, "m", a, "m", 0, fuseCaller)
					}
				case 4:
					if d, err := ns.Resolve(p); err == nil && d.IsDir() {
						d.Rmdir("m", fuseCaller)
					}
				case 5:
					ns.Rename(ns.Root(), "a", ns.Root(), "b", uint32(i%3), fuseCaller)
				}
			}
		}(g)
	}
	wg.Wait()
	sys := &nsSystem{ns: ns}
	if got, want := ns.Statfs().Nodes, uint64(countNodes(sys.snapshot())+1); got != want {
		t.Errorf("Statfs nodes %d, tree %d", got, want)
	}
}

// lookupGate is a sink that says whether it wants LOOKUP events.
type lookupGate struct {
	recorder
	wants atomic.Bool
}

func (g *lookupGate) WantsLookups() bool { return g.wants.Load() }

// A sink that wants no LOOKUP events gets none, and no sequence number is
// spent on one; the other events are unaffected, and LOOKUP events come
// again as soon as the sink wants them.
func TestEmitLookupSkippedWhileSinkWantsNone(t *testing.T) {
	g := &lookupGate{}
	ns := New(Options{Sink: g})
	ns.Register("snd/pcm", Spec{Type: TypeChar, Major: 116, Minor: 2}, loaderCaller)
	snd, _ := ns.Resolve("snd")
	seq := ns.LastSeq()
	ns.EmitLookup(snd, snd.Path(), "y", fuseCaller)
	if got := g.take(); len(got) != 2 || ns.LastSeq() != seq {
		t.Fatalf("with no LOOKUP wanted: %d events, seq %d → %d: %+v", len(got), seq, ns.LastSeq(), got)
	}
	g.wants.Store(true)
	ns.EmitLookup(snd, snd.Path(), "z", fuseCaller)
	got := g.take()
	if len(got) != 1 || got[0].Kind != KindLookup || got[0].Path != "snd/z" || got[0].Seq != seq+1 {
		t.Fatalf("with LOOKUP wanted: %+v", got)
	}
	if WantsLookups(nil) || !WantsLookups(&recorder{}) {
		t.Fatal("WantsLookups: a nil sink wants none, a plain Sink every one")
	}
}
