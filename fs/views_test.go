package fs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
	"github.com/devfsd/devfsd/lookup"
)

func u32(v uint32) *uint32 { return &v }

// viewRig is a main server and view servers over one namespace whose sink
// is a NotifyMux, driven by calling handlers directly: no mount.
type viewRig struct {
	t     *testing.T
	ns    *dcache.Namespace
	mux   *NotifyMux
	main  *Server
	loads atomic.Int64
	names chan string // every name the loader is asked for
}

func newViewRig(t *testing.T, opts Options) *viewRig {
	r := &viewRig{t: t, names: make(chan string, 1024)}
	nq := NewNotifyQueue(0)
	r.mux = NewNotifyMux(nq)
	r.ns = dcache.New(dcache.Options{NegativeTTL: time.Hour, Sink: r.mux})
	res := lookup.New(r.ns, lookup.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		r.loads.Add(1)
		r.names <- name
		return nil
	}), lookup.Options{Timeout: 5 * time.Second})
	r.main = New(res, nq, opts)
	t.Cleanup(func() { r.main.Shutdown() })
	return r
}

func (r *viewRig) view(spec viewpath.Spec) *Server {
	r.t.Helper()
	v, err := viewpath.Compile(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	vs, err := r.main.NewView(r.mux, v, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { vs.Shutdown() })
	return vs
}

func lookupIn(s *Server, dir uint64, name string) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	h := hdr(dir)
	st := s.Lookup(make(chan struct{}), &h, name, &out)
	return out, st
}

// walk looks up p ("a/b/c") in s from the root, as the kernel would.
func walk(s *Server, p string) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	out.NodeId = 1
	for _, e := range strings.Split(p, "/") {
		var st fuse.Status
		if out, st = lookupIn(s, out.NodeId, e); st != fuse.OK {
			return out, st
		}
		if out.NodeId == 0 {
			return out, fuse.ENOENT // a negative entry
		}
	}
	return out, fuse.OK
}

// A name the view hides is ENOENT at once: the loader is not asked, and
// no negative entry goes into the shared namespace (the main mount's
// lookup of the same name still asks the loader).
func TestViewHiddenLookupNeverLoads(t *testing.T) {
	r := newViewRig(t, Options{NegativeTimeout: time.Second})
	vs := r.view(viewpath.Spec{Allow: []string{"snd/*", "null"}, Deny: []string{"snd/seq"}})
	mk(t, r.ns, "snd/pcm0")
	mk(t, r.ns, "zero")
	for _, p := range []string{"widget", "zero", "snd/seq", "snd/seq/deeper"} {
		out, st := walk(vs, p)
		if st != fuse.ENOENT {
			t.Fatalf("view lookup of hidden %q: %v %+v", p, st, out)
		}
	}
	if n := r.loads.Load(); n != 0 {
		t.Fatalf("hidden lookups asked the loader %d times", n)
	}
	out, st := lookupIn(vs, 1, "widget")
	if st != fuse.OK || out.NodeId != 0 || out.EntryValid != 1 {
		t.Fatalf("hidden name: %v %+v, want a negative entry for the negative timeout", st, out)
	}
	// The main mount: widget is asked for (no negative entry was left),
	// zero is there.
	if _, st := lookupIn(r.main, 1, "widget"); st != fuse.OK || r.loads.Load() != 1 {
		t.Fatalf("main lookup of widget after the view's: %v, %d loads, want 1", st, r.loads.Load())
	}
	if out, st := lookupIn(r.main, 1, "zero"); st != fuse.OK || out.NodeId == 0 {
		t.Fatalf("main lookup of zero: %v", st)
	}
	// A shown name that is missing asks the loader, as everywhere.
	if _, st := walk(vs, "snd/pcm9"); st != fuse.ENOENT || r.loads.Load() != 2 {
		t.Fatalf("view lookup of a missing shown name: %v, %d loads, want 2", st, r.loads.Load())
	}
	if out, st := walk(vs, "snd/pcm0"); st != fuse.OK || out.NodeId == 0 {
		t.Fatalf("snd/pcm0 in the view: %v", st)
	}
	// A passage that is not a directory is hidden.
	v2 := r.view(viewpath.Spec{Allow: []string{"dri/card*"}})
	mk(t, r.ns, "dri")
	loads := r.loads.Load()
	if _, st := walk(v2, "dri"); st != fuse.ENOENT || r.loads.Load() != loads {
		t.Fatalf("a char device on a passage: %v", st)
	}
}

// READDIR lists only what the view shows, through batches wholly
// filtered out, and resumes from dcache's cookies.
func TestViewReadDirFilters(t *testing.T) {
	r := newViewRig(t, Options{})
	vs := r.view(viewpath.Spec{Allow: []string{"keep*", "sub/*"}, Deny: []string{"keep13"}})
	var want []string
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("drop%03d", i)
		if i%50 == 49 {
			name = fmt.Sprintf("keep%d", i/50*10+3)
		}
		mk(t, r.ns, name)
		if strings.HasPrefix(name, "keep") && name != "keep13" {
			want = append(want, name)
		}
	}
	mk(t, r.ns, "sub/x")
	mk(t, r.ns, "subfile")
	want = append(want, "sub")
	sort.Strings(want)
	var got []string
	buf := make([]byte, 128) // a few entries per READDIR
	in := &fuse.ReadIn{InHeader: hdr(1), Size: uint32(len(buf))}
	for rounds := 0; ; rounds++ {
		l := fuse.NewDirEntryList(buf, in.Offset)
		if st := vs.ReadDir(nil, in, l); st != fuse.OK {
			t.Fatal(st)
		}
		ents, err := fuse.ParseDirEntries(l.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			if e.Name != "." && e.Name != ".." {
				got = append(got, e.Name)
			}
			in.Offset = e.Off
		}
		if rounds > 1000 {
			t.Fatal("readdir does not end")
		}
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("view readdir %v, want %v", got, want)
	}
	// READDIRPLUS counts lookups only for what it shows.
	sub, _ := r.ns.Resolve("sub")
	in = &fuse.ReadIn{InHeader: hdr(1), Size: 64 << 10}
	l := fuse.NewDirEntryList(make([]byte, 64<<10), 0)
	if st := vs.ReadDirPlus(nil, in, l); st != fuse.OK {
		t.Fatal(st)
	}
	if vs.nodes.lookups(sub.Ino()) != 1 || vs.nodes.len() != int64(len(want)) {
		t.Fatalf("READDIRPLUS counted %d ids, want %d", vs.nodes.len(), len(want))
	}
}

// Overrides show in every attribute reply of the view; a chmod through
// the view changes the namespace, and the view goes on showing its
// override.
func TestViewOverrides(t *testing.T) {
	r := newViewRig(t, Options{})
	vs := r.view(viewpath.Spec{Allow: []string{"snd/*"}, Overrides: []viewpath.Override{
		{Glob: "snd/pcm*", Mode: u32(0o666), Gid: u32(29)},
		{Glob: "snd/*", Uid: u32(7)}, // pcm0 matched the first: not this one
	}})
	n := mk(t, r.ns, "snd/pcm0")
	mk(t, r.ns, "snd/timer")
	r.ns.Resolve("snd/pcm0")
	if _, err := n.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: 0o600}, dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	out, st := walk(vs, "snd/pcm0")
	if st != fuse.OK || out.Attr.Mode != syscall.S_IFCHR|0o666 || out.Attr.Gid != 29 || out.Attr.Uid != 0 {
		t.Fatalf("lookup through the view: %v mode %o owner %d:%d", st, out.Attr.Mode, out.Attr.Uid, out.Attr.Gid)
	}
	if out, _ := walk(vs, "snd/timer"); out.Attr.Uid != 7 || out.Attr.Mode != syscall.S_IFCHR|0o666 {
		t.Fatalf("snd/timer: mode %o uid %d", out.Attr.Mode, out.Attr.Uid)
	}
	var ao fuse.AttrOut
	if st := vs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(n.Ino())}, &ao); st != fuse.OK || ao.Attr.Mode&07777 != 0o666 {
		t.Fatalf("GETATTR through the view: %v %o", st, ao.Attr.Mode)
	}
	sa := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr(n.Ino()), Valid: fuse.FATTR_MODE, Mode: 0o640}}
	if st := vs.SetAttr(nil, sa, &ao); st != fuse.OK || ao.Attr.Mode&07777 != 0o666 {
		t.Fatalf("SETATTR through the view answers %v %o, want the override 0666", st, ao.Attr.Mode)
	}
	if a := n.Attr(); a.Mode&07777 != 0o640 {
		t.Fatalf("the namespace after chmod through the view: %o, want 0640", a.Mode&07777)
	}
	if out, _ := walk(r.main, "snd/pcm0"); out.Attr.Mode&07777 != 0o640 || out.Attr.Gid != 0 {
		t.Fatalf("the main mount shows %o gid %d", out.Attr.Mode&07777, out.Attr.Gid)
	}
}

// Making a name the view would not show is EACCES; a directory on a
// passage may be made.
func TestViewCreateOutsideIsEACCES(t *testing.T) {
	r := newViewRig(t, Options{})
	vs := r.view(viewpath.Spec{Allow: []string{"snd/*"}})
	var out fuse.EntryOut
	if st := vs.Mknod(nil, &fuse.MknodIn{InHeader: hdr(1), Mode: syscall.S_IFCHR | 0o600}, "mem", &out); st != fuse.Status(syscall.EACCES) {
		t.Fatalf("mknod of a hidden name: %v", st)
	}
	if st := vs.Mknod(nil, &fuse.MknodIn{InHeader: hdr(1), Mode: syscall.S_IFCHR | 0o600}, "snd", &out); st != fuse.Status(syscall.EACCES) {
		t.Fatalf("mknod of a non-directory on a passage: %v", st)
	}
	if st := vs.Mkdir(nil, &fuse.MkdirIn{InHeader: hdr(1), Mode: 0o755}, "snd", &out); st != fuse.OK {
		t.Fatalf("mkdir on a passage: %v", st)
	}
	if st := vs.Mknod(nil, &fuse.MknodIn{InHeader: hdr(out.NodeId), Mode: syscall.S_IFCHR | 0o600}, "pcm1", &out); st != fuse.OK {
		t.Fatalf("mknod of a shown name: %v", st)
	}
	if _, err := r.ns.Resolve("mem"); err == nil {
		t.Fatal("the refused mknod made mem")
	}
	mk(t, r.ns, "secret")
	snd, _ := r.ns.Resolve("snd")
	vs.nodes.ref(snd)
	if st := vs.Rename(nil, &fuse.RenameIn{InHeader: hdr(snd.Ino()), Newdir: 1}, "pcm1", "secret"); st != fuse.Status(syscall.EACCES) {
		t.Fatalf("rename onto a hidden name: %v", st)
	}
	if _, err := r.ns.Resolve("secret"); err != nil {
		t.Fatal("the refused rename replaced secret")
	}
}

// Each mount's queue notifies what its own kernel did not do, and only
// what its view shows; the mux gives each queue its own mount id.
func TestViewNotifiesPerMount(t *testing.T) {
	r := newViewRig(t, Options{})
	vs := r.view(viewpath.Spec{Allow: []string{"snd/*"}})
	mainQ, viewQ := r.main.Queue(), vs.Queue()
	if mainQ.id == 0 || viewQ.id == 0 || mainQ.id == viewQ.id {
		t.Fatalf("mount ids %d and %d", mainQ.id, viewQ.id)
	}
	fakes := map[*NotifyQueue]*fakeNotifier{mainQ: {}, viewQ: {}}
	for q := range fakes {
		q.enable()
		q.Listed(1) // both kernels may hold listings of / and snd
		q.Listed(20)
		cachedAbsentAll(q) // both kernels may hold absences of the names registered
	}
	ctl := dcache.Caller{Origin: dcache.OriginControl}
	viaMain := dcache.Caller{Origin: dcache.OriginFUSE, Mount: mainQ.id}
	viaView := dcache.Caller{Origin: dcache.OriginFUSE, Mount: viewQ.id}
	for _, ev := range []dcache.Event{
		{Kind: dcache.KindRegister, Path: "snd", Parent: 1, Name: "snd", Ino: 20, Type: dcache.TypeDir, Caller: ctl},
		{Kind: dcache.KindRegister, Path: "snd/pcm0", Parent: 20, Name: "pcm0", Ino: 21, Caller: ctl},
		{Kind: dcache.KindRegister, Path: "mem", Parent: 1, Name: "mem", Ino: 22, Caller: ctl},
		{Kind: dcache.KindCreate, Path: "snd/pcm1", Parent: 20, Name: "pcm1", Ino: 23, Caller: viaMain},
		{Kind: dcache.KindCreate, Path: "snd/pcm2", Parent: 20, Name: "pcm2", Ino: 24, Caller: viaView},
		{Kind: dcache.KindDelete, Path: "kmsg", Parent: 1, Name: "kmsg", Ino: 25, Caller: viaView},
		{Kind: dcache.KindChange, Path: "snd/pcm0", Ino: 21, Caller: ctl},
		{Kind: dcache.KindExpire, Path: "snd/x", Parent: 20, Name: "x", Caller: dcache.Caller{}},
	} {
		r.mux.Event(ev)
	}
	// The workers start with every notice queued: a directory's listing
	// notice is queued once.
	for q, f := range fakes {
		done := make(chan struct{})
		go func() { defer close(done); q.run(f, zapNop()) }()
		t.Cleanup(func() { stopWorker(q, done, 5*time.Second) })
	}
	if err := r.main.SyncNotifies(context.Background()); err != nil { // both queues
		t.Fatal(err)
	}
	wantMain := "[entry 1 snd listing 1 entry 20 pcm0 listing 20 entry 1 mem entry 20 pcm2 delete 1 25 kmsg inode 21 -1 entry 20 x]"
	wantView := "[entry 1 snd listing 1 entry 20 pcm0 listing 20 entry 20 pcm1 inode 21 -1 entry 20 x]"
	if got := fmt.Sprint(fakes[mainQ].list()); got != wantMain {
		t.Errorf("main mount's notifies %s, want %s", got, wantMain)
	}
	if got := fmt.Sprint(fakes[viewQ].list()); got != wantView {
		t.Errorf("view's notifies %s, want %s", got, wantView)
	}
	// A view shut down leaves the mux and frees its id.
	vs.Shutdown()
	if n := len(*r.mux.qs.Load()); n != 1 {
		t.Fatalf("%d queues in the mux after the view's shutdown", n)
	}
	r.mux.mu.Lock()
	inUse := r.mux.ids[viewQ.id]
	r.mux.mu.Unlock()
	if inUse {
		t.Fatalf("the view's mount id %d is still taken after its shutdown", viewQ.id)
	}
}

// SetTimeouts on the main server reaches its views, made before or
// after.
func TestViewFollowsTimeouts(t *testing.T) {
	r := newViewRig(t, Options{EntryTimeout: time.Second})
	before := r.view(viewpath.Spec{})
	r.main.SetTimeouts(3*time.Second, 4*time.Second, 5*time.Second)
	after := r.view(viewpath.Spec{})
	for _, vs := range []*Server{before, after} {
		if vs.entryTimeout() != 3*time.Second || vs.attrTimeout() != 4*time.Second || vs.negTimeout() != 5*time.Second {
			t.Errorf("view timeouts %v %v %v", vs.entryTimeout(), vs.attrTimeout(), vs.negTimeout())
		}
	}
}
