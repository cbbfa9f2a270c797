package kernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/test/harness"
)

// kernelCaller is what the tests register as.
var kernelCaller = dcache.Caller{Origin: dcache.OriginBuiltin}

// userCaller makes nodes as a user through the mount would.
var userCaller = dcache.Caller{Origin: dcache.OriginFUSE, Uid: 1000, Gid: 1000}

// events records what the namespace reports.
type events struct {
	mu  sync.Mutex
	evs []dcache.Event
}

func (e *events) Event(ev dcache.Event) { e.mu.Lock(); e.evs = append(e.evs, ev); e.mu.Unlock() }

// count returns how many events of kind k for path were seen.
func (e *events) count(k dcache.Kind, path string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.Kind == k && ev.Path == path {
			n++
		}
	}
	return n
}

type rig struct {
	t   *testing.T
	ns  *dcache.Namespace
	evs *events
	src *Source
}

// newRig returns a source over a fresh namespace; opts.Namespace and
// opts.Logger are filled in.
func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	evs := &events{}
	ns := dcache.New(dcache.Options{Sink: evs, NegativeTTL: -1})
	opts.Namespace = DcacheNamespace{NS: ns, Caller: kernelCaller}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	if opts.ModulesDevname == "" {
		opts.ModulesDevname = filepath.Join(t.TempDir(), "no-modules.devname")
	}
	src, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return &rig{t: t, ns: ns, evs: evs, src: src}
}

// node returns the node at p as "type M:m PERM uid:gid", or "" if none.
func (r *rig) node(p string) string {
	n, err := r.ns.Resolve(p)
	if err != nil {
		return ""
	}
	a := n.Attr()
	return fmt.Sprintf("%v %d:%d %04o %d:%d", a.Type, a.Major, a.Minor, a.Mode&07777, a.Uid, a.Gid)
}

func (r *rig) ino(p string) uint64 {
	n, err := r.ns.Resolve(p)
	if err != nil {
		return 0
	}
	return n.Ino()
}

// mknod makes a node at p (in the root) as a user would.
func (r *rig) mknod(name string, mode, major, minor uint32) {
	r.t.Helper()
	if _, err := r.ns.Root().Mknod(name, mode, major, minor, userCaller); err != nil {
		r.t.Fatal(err)
	}
}

// fakeSys is a sysfs tree in a temporary directory: devices under
// devices/, their number links under dev/char and dev/block.
type fakeSys struct {
	t    *testing.T
	root string
}

func newFakeSys(t *testing.T) *fakeSys {
	f := &fakeSys{t: t, root: t.TempDir()}
	for _, d := range []string{"dev/char", "dev/block", "devices", "class"} {
		if err := os.MkdirAll(filepath.Join(f.root, d), 0755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// add makes device devpath of subsystem with a uevent file of the given
// lines, its number link under dev/kind, and a driver link if driver is
// not "".
func (f *fakeSys) add(kind string, major, minor int, devpath, subsystem, driver string, uevent ...string) {
	f.t.Helper()
	dir := filepath.Join(f.root, devpath)
	must(f.t, os.MkdirAll(dir, 0755))
	must(f.t, os.WriteFile(filepath.Join(dir, "uevent"), []byte(strings.Join(uevent, "\n")+"\n"), 0644))
	must(f.t, os.MkdirAll(filepath.Join(f.root, "class", subsystem), 0755))
	rel, err := filepath.Rel(dir, filepath.Join(f.root, "class", subsystem))
	must(f.t, err)
	must(f.t, os.Symlink(rel, filepath.Join(dir, "subsystem")))
	if driver != "" {
		must(f.t, os.Symlink("../../bus/drivers/"+driver, filepath.Join(dir, "driver")))
	}
	link := filepath.Join(f.root, "dev", kind, fmt.Sprintf("%d:%d", major, minor))
	rel, err = filepath.Rel(filepath.Dir(link), dir)
	must(f.t, err)
	must(f.t, os.Symlink(rel, link))
}

func (f *fakeSys) remove(kind string, major, minor int, devpath string) {
	f.t.Helper()
	must(f.t, os.Remove(filepath.Join(f.root, "dev", kind, fmt.Sprintf("%d:%d", major, minor))))
	must(f.t, os.RemoveAll(filepath.Join(f.root, devpath)))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// until waits for cond, failing the test with what after d.
func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	harness.Until(t, d, what, cond)
}

// uev builds a Uevent as the kernel would send it.
func uev(action, devpath string, seq uint64, kv ...string) Uevent {
	env := map[string]string{"ACTION": action, "DEVPATH": devpath, "SEQNUM": fmt.Sprint(seq)}
	for i := 0; i < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	if _, ok := env["SUBSYSTEM"]; !ok {
		env["SUBSYSTEM"] = "misc"
	}
	return Uevent{Action: action, DevPath: devpath, Seq: seq, Env: env}
}

var modloadCaller = dcache.Caller{Pid: 1, Uid: 0, Gid: 0}

var zapNop = zap.NewNop()

var ctxDeadline = context.DeadlineExceeded

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
