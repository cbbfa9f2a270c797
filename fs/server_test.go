package fs

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
)

func zapNop() *zap.Logger { return zap.NewNop() }

// rig is a Server over a namespace, driven by calling its handlers
// directly as go-fuse would: no mount, no kernel.
type rig struct {
	t     *testing.T
	ns    *dcache.Namespace
	res   *lookup.Resolver
	s     *Server
	loads atomic.Int64
}

func newRig(t *testing.T, opts Options, load func(ctx context.Context, ns *dcache.Namespace, dir, name string) error) *rig {
	r := &rig{t: t}
	nq := NewNotifyQueue(0)
	neg := opts.NegativeTimeout
	if neg == 0 {
		neg = -1
	}
	r.ns = dcache.New(dcache.Options{NegativeTTL: neg, Sink: nq})
	var loader lookup.Loader
	if load != nil {
		loader = lookup.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
			r.loads.Add(1)
			return load(ctx, r.ns, dir, name)
		})
	}
	r.res = lookup.New(r.ns, loader, lookup.Options{Timeout: 5 * time.Second})
	r.s = New(r.res, nq, opts)
	t.Cleanup(func() { r.s.Shutdown() })
	return r
}

func hdr(node uint64) fuse.InHeader {
	return fuse.InHeader{NodeId: node, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: 1234}}
}

func (r *rig) lookup(dir uint64, name string) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	h := hdr(dir)
	st := r.s.Lookup(make(chan struct{}), &h, name, &out)
	return out, st
}

func TestLookupCountsAndForget(t *testing.T) {
	r := newRig(t, Options{EntryTimeout: time.Second, AttrTimeout: time.Second}, nil)
	n := mk(t, r.ns, "null")
	for i := 1; i <= 2; i++ {
		out, st := r.lookup(1, "null")
		if st != fuse.OK || out.NodeId != n.Ino() || out.Generation != n.Gen() {
			t.Fatalf("lookup: %v %+v", st, out)
		}
		if out.Attr.Mode != syscall.S_IFCHR|0o666 || out.Attr.Rdev != 0x103 || out.EntryValid != 1 {
			t.Fatalf("lookup attr %+v", out)
		}
		if got := r.s.nodes.lookups(n.Ino()); got != uint64(i) {
			t.Fatalf("after %d lookups the count is %d", i, got)
		}
	}
	r.s.Forget(n.Ino(), 2)
	var ao fuse.AttrOut
	if st := r.s.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(n.Ino())}, &ao); st != fuse.Status(syscall.ESTALE) {
		t.Fatalf("GETATTR of a forgotten id: %v, want ESTALE", st)
	}
	// The node is still in the namespace: FORGET never removes anything.
	if _, st := r.lookup(1, "null"); st != fuse.OK {
		t.Fatalf("lookup after forget: %v", st)
	}
}

func TestNegativeLookupReply(t *testing.T) {
	for _, neg := range []time.Duration{0, 10 * time.Second} {
		t.Run(fmt.Sprint(neg), func(t *testing.T) {
			r := newRig(t, Options{NegativeTimeout: neg}, func(ctx context.Context, ns *dcache.Namespace, dir, name string) error {
				return syscall.ENOENT
			})
			out, st := r.lookup(1, "nope")
			switch {
			case neg == 0 && st != fuse.ENOENT:
				t.Fatalf("negative timeout 0: %v, want ENOENT", st)
			case neg > 0 && (st != fuse.OK || out.NodeId != 0 || out.EntryValid != 10):
				t.Fatalf("negative timeout %v: %v %+v, want a negative entry for 10s", neg, st, out)
			}
			if _, st := r.lookup(1, fmt.Sprintf("%0256d", 0)); st != fuse.Status(syscall.ENAMETOOLONG) {
				t.Fatalf("256-byte name: %v, want ENAMETOOLONG", st)
			}
		})
	}
}

// A FUSE INTERRUPT (the cancel channel closing) ends a lookup waiting on
// a slow loader with EINTR; the load finishes for others.
func TestInterruptedLookupIsEINTR(t *testing.T) {
	release := make(chan struct{})
	r := newRig(t, Options{}, func(ctx context.Context, ns *dcache.Namespace, dir, name string) error {
		<-release
		_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 10, Minor: 1}, dcache.Caller{})
		return err
	})
	cancel := make(chan struct{})
	res := make(chan fuse.Status, 1)
	go func() {
		var out fuse.EntryOut
		h := hdr(1)
		res <- r.s.Lookup(cancel, &h, "slow", &out)
	}()
	waitFor(t, "the load to start", func() bool { return r.loads.Load() == 1 })
	close(cancel)
	select {
	case st := <-res:
		if st != fuse.EINTR {
			t.Fatalf("interrupted lookup: %v, want EINTR", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("interrupt did not end the lookup")
	}
	close(release)
	waitFor(t, "the load to register", func() bool { _, err := r.ns.Resolve("slow"); return err == nil })
	if _, st := r.lookup(1, "slow"); st != fuse.OK {
		t.Fatalf("lookup after the load: %v", st)
	}
}

// READDIRPLUS counts one lookup per entry it returns with attributes,
// never for "." and "..".
func TestReadDirPlusCountsLookups(t *testing.T) {
	r := newRig(t, Options{}, nil)
	var kids []*dcache.Node
	for i := 0; i < 5; i++ {
		kids = append(kids, mk(t, r.ns, fmt.Sprintf("d/k%d", i)))
	}
	d, _ := r.ns.Resolve("d")
	buf := make([]byte, 64<<10)
	in := &fuse.ReadIn{InHeader: hdr(d.Ino()), Size: uint32(len(buf))}
	r.s.nodes.ref(d)
	l := fuse.NewDirEntryList(buf, 0)
	if st := r.s.ReadDirPlus(nil, in, l); st != fuse.OK {
		t.Fatal(st)
	}
	ents, outs, err := fuse.ParseDirLookupEntries(l.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, e := range ents {
		names = append(names, e.Name)
		if (e.Name == "." || e.Name == "..") != (outs[i].NodeId == 0) {
			t.Errorf("%s: node id %d", e.Name, outs[i].NodeId)
		}
	}
	if fmt.Sprint(names) != "[. .. k0 k1 k2 k3 k4]" {
		t.Fatalf("names %v", names)
	}
	for _, k := range kids {
		if got := r.s.nodes.lookups(k.Ino()); got != 1 {
			t.Errorf("%d: %d lookups, want 1", k.Ino(), got)
		}
	}
	if got := r.s.nodes.lookups(d.Ino()); got != 1 {
		t.Errorf("the listed directory itself: %d lookups, want 1 (\".\" counts nothing)", got)
	}
	// Resuming at the cookie of k1 lists k2.. only.
	l = fuse.NewDirEntryList(buf, 0)
	in.Offset = ents[3].Off
	if st := r.s.ReadDir(nil, in, l); st != fuse.OK {
		t.Fatal(st)
	}
	ents2, err := fuse.ParseDirEntries(l.Bytes())
	if err != nil || len(ents2) != 3 || ents2[0].Name != "k2" {
		t.Fatalf("resumed listing %v %v", ents2, err)
	}
}

// Modes are never rewritten: 0000 stays 0000, through MKNOD and SETATTR.
func TestModesPassThrough(t *testing.T) {
	r := newRig(t, Options{}, nil)
	var out fuse.EntryOut
	in := &fuse.MknodIn{InHeader: hdr(1), Mode: syscall.S_IFREG | 0}
	if st := r.s.Mknod(make(chan struct{}), in, "f", &out); st != fuse.OK {
		t.Fatal(st)
	}
	if out.Attr.Mode != syscall.S_IFREG {
		t.Fatalf("mode %o, want 0100000", out.Attr.Mode)
	}
	var ao fuse.AttrOut
	sa := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr(out.NodeId), Valid: fuse.FATTR_MODE, Mode: syscall.S_IFREG | 0o4755}}
	if st := r.s.SetAttr(nil, sa, &ao); st != fuse.OK || ao.Attr.Mode != syscall.S_IFREG|0o4755 {
		t.Fatalf("chmod 4755: %v %o", st, ao.Attr.Mode)
	}
	sa.Mode = syscall.S_IFREG
	if st := r.s.SetAttr(nil, sa, &ao); st != fuse.OK || ao.Attr.Mode != syscall.S_IFREG {
		t.Fatalf("chmod 0: %v %o", st, ao.Attr.Mode)
	}
}

// An unlinked file stays readable and writable through its handle.
func TestUnlinkedOpenFile(t *testing.T) {
	r := newRig(t, Options{}, nil)
	var co fuse.CreateOut
	cin := &fuse.CreateIn{InHeader: hdr(1), Mode: syscall.S_IFREG | 0o644, Flags: syscall.O_RDWR}
	if st := r.s.Create(make(chan struct{}), cin, "f", &co); st != fuse.OK {
		t.Fatal(st)
	}
	if k, st := r.s.Write(nil, &fuse.WriteIn{Fh: co.Fh}, []byte("hello")); st != fuse.OK || k != 5 {
		t.Fatal(st, k)
	}
	h := hdr(1)
	if st := r.s.Unlink(make(chan struct{}), &h, "f"); st != fuse.OK {
		t.Fatal(st)
	}
	buf := make([]byte, 16)
	rr, st := r.s.Read(nil, &fuse.ReadIn{Fh: co.Fh, Size: 16}, buf)
	if st != fuse.OK {
		t.Fatal(st)
	}
	data, _ := rr.Bytes(buf)
	if string(data) != "hello" {
		t.Fatalf("read %q after unlink", data)
	}
	var ao fuse.AttrOut
	if st := r.s.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(co.NodeId)}, &ao); st != fuse.OK || ao.Nlink != 0 {
		t.Fatalf("getattr of the unlinked id: %v nlink %d", st, ao.Nlink)
	}
	r.s.Release(nil, &fuse.ReleaseIn{Fh: co.Fh})
	if _, st := r.s.Read(nil, &fuse.ReadIn{Fh: co.Fh, Size: 16}, buf); st != fuse.EBADF {
		t.Fatalf("read after release: %v", st)
	}
}

func TestStatfs(t *testing.T) {
	r := newRig(t, Options{}, nil)
	var out fuse.StatfsOut
	h := hdr(1)
	if st := r.s.StatFs(nil, &h, &out); st != fuse.OK {
		t.Fatal(st)
	}
	if out.NameLen != 255 || out.Bsize != 4096 || out.Files == 0 || out.Ffree == 0 || out.Blocks == 0 {
		t.Fatalf("statfs %+v", out)
	}
}

// Shutdown without a mount: idempotent; requests afterwards are refused
// with ENOTCONN, FORGET and RELEASE still served.
func TestShutdownRefusesAndIsIdempotent(t *testing.T) {
	r := newRig(t, Options{ShutdownTimeout: time.Second}, nil)
	n := mk(t, r.ns, "null")
	if _, st := r.lookup(1, "null"); st != fuse.OK {
		t.Fatal(st)
	}
	if r.s.nodes.len() != 1 { // else the FORGET check below proves nothing
		t.Fatalf("%d node ids known after one lookup, want 1", r.s.nodes.len())
	}
	for i := 0; i < 3; i++ {
		if err := r.s.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	if _, st := r.lookup(1, "null"); st != errShutdown {
		t.Fatalf("lookup after shutdown: %v, want ENOTCONN", st)
	}
	r.s.Forget(n.Ino(), 1)
	if r.s.nodes.len() != 0 {
		t.Fatal("FORGET refused after shutdown")
	}
	if r.s.Stats().Refused == 0 {
		t.Fatal("refusals not counted")
	}
}

// Shutdown ends a lookup waiting on a loader at once (EINTR) and the drain
// then completes well within the timeout.
func TestShutdownInterruptsWaitingLookups(t *testing.T) {
	r := newRig(t, Options{ShutdownTimeout: 3 * time.Second}, func(ctx context.Context, ns *dcache.Namespace, dir, name string) error {
		<-ctx.Done() // hangs until the load's deadline
		return ctx.Err()
	})
	res := make(chan fuse.Status, 8)
	for i := 0; i < 8; i++ {
		go func() {
			_, st := r.lookup(1, fmt.Sprintf("hang%d", i%2))
			res <- st
		}()
	}
	// Every lookup is past the server's door (it counted its miss) and
	// the two loads run: a lookup that came after Shutdown began would be
	// refused (ENOTCONN), not interrupted.
	waitFor(t, "the loads to start and every lookup to join them", func() bool {
		return r.loads.Load() == 2 && r.res.Stats().Misses == 8
	})
	start := time.Now()
	if err := r.s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	for i := 0; i < 8; i++ {
		if st := <-res; st != fuse.EINTR {
			t.Errorf("waiting lookup at shutdown: %v, want EINTR", st)
		}
	}
}

func TestSigkillPending(t *testing.T) {
	for _, tt := range []struct {
		status string
		want   bool
	}{
		{"Name:\tx\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n", false},
		{"Name:\tx\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n", true},
		{"Name:\tx\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000004100\n", true},
		{"Name:\tx\nSigPnd:\t0000000000000002\nShdPnd:\t0000000000004000\n", false}, // SIGINT and SIGTERM pending: handled, so not fatal
	} {
		if got := sigkillPending([]byte(tt.status)); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.status, got, tt.want)
		}
	}
	if dying(uint32(os.Getpid())) {
		t.Error("the test process counts as dying")
	}
}

// An interrupt from a signal that does not kill the caller (Go's SIGURG,
// SIGCHLD, ...) does not fail the request: the lookup waits on and
// answers from the load.
func TestNonFatalInterruptIsIgnored(t *testing.T) {
	release := make(chan struct{})
	r := newRig(t, Options{}, func(ctx context.Context, ns *dcache.Namespace, dir, name string) error {
		<-release
		_, err := ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 10, Minor: 1}, dcache.Caller{})
		return err
	})
	cancel := make(chan struct{})
	res := make(chan fuse.Status, 1)
	go func() {
		var out fuse.EntryOut
		h := hdr(1)
		h.Pid = uint32(os.Getpid()) // alive, no SIGKILL pending
		res <- r.s.Lookup(cancel, &h, "slow", &out)
	}()
	waitFor(t, "the load to start", func() bool { return r.loads.Load() == 1 })
	close(cancel)
	select {
	case st := <-res:
		t.Fatalf("lookup ended with %v on a non-fatal interrupt", st)
	case <-time.After(3 * killPoll):
	}
	close(release)
	if st := <-res; st != fuse.OK {
		t.Fatalf("lookup after the load: %v, want OK", st)
	}
}
