package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/killtest"
)

// viewDir makes an empty directory for a view mount, and registers — before
// the daemon starts, so that it runs after the daemon was stopped — a
// cleanup that lazily unmounts whatever is left there, whatever the test
// did.
func viewDir(t *testing.T, name string) string {
	t.Helper()
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(t, dir) {
			t.Errorf("%s still mounted at the end of the test; detaching it", dir)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// lookups records the LOOKUP events of a daemon: every miss that asked
// the loader, as the loader sees it.
type lookups struct {
	t    *testing.T
	mu   sync.Mutex
	seen []string
	more chan struct{} // closed and replaced on every LOOKUP
}

func watchLookups(t *testing.T, c *client.Client) *lookups {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.Events(ctx, 4096)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l := &lookups{t: t, more: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rec, err := st.Next()
			if err != nil {
				return
			}
			if rec.Type == "overrun" {
				l.add("OVERRUN") // fails every later check: nothing may be missed
			}
			if rec.Type == "event" && rec.Kind == "LOOKUP" {
				l.add(rec.Path)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		st.Close()
		<-done
	})
	return l
}

func (l *lookups) add(p string) {
	l.mu.Lock()
	l.seen = append(l.seen, p)
	close(l.more)
	l.more = make(chan struct{})
	l.mu.Unlock()
}

// waitFor waits until a LOOKUP of p arrives after the first from LOOKUPs,
// and returns the LOOKUPs from there to it.
func (l *lookups) waitFor(from int, p string) []string {
	l.t.Helper()
	deadline := time.NewTimer(condDeadline)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		seen, more := l.seen[min(from, len(l.seen)):], l.more
		for i, s := range seen {
			if s == p {
				out := append([]string(nil), seen[:i+1]...)
				l.mu.Unlock()
				return out
			}
		}
		l.mu.Unlock()
		select {
		case <-more:
		case <-deadline.C:
			l.t.Fatalf("no LOOKUP of %s within %v; LOOKUPs since: %q", p, condDeadline, seen)
		}
	}
}

func (l *lookups) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// listing is the names getdents shows in dir, with their d_ino.
var listing = killtest.Listing

// namespacePaths lists every path of the namespace through the main
// mount, recursively, by getdents only.
func namespacePaths(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	var walk func(rel string)
	rootDev := lstat(t, root).Dev
	walk = func(rel string) {
		ents, err := listing(filepath.Join(root, rel))
		if err != nil {
			t.Fatalf("listing %s in the main mount: %v", rel, err)
		}
		for name := range ents {
			p := path.Join(rel, name)
			out = append(out, p)
			var st unix.Stat_t
			// Not into what is mounted on a directory (pts, shm): that
			// is not the namespace.
			if unix.Lstat(filepath.Join(root, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Dev == rootDev {
				walk(p)
			}
		}
	}
	walk("")
	sort.Strings(out)
	return out
}

// checkAgree checks, for every path of the namespace, that the mount at
// dir shows it in its parent's listing exactly when stat finds it there,
// with the same inode and type as the namespace, and that what it shows
// is what want says. Every name checked exists in the namespace, so no
// stat here can ask the loader.
func checkAgree(t *testing.T, what, dir, mainDir string, all []string, want func(string) bool) {
	t.Helper()
	lists := map[string]map[string]uint64{}
	for _, p := range all {
		parent := path.Dir(p)
		if parent == "." {
			parent = ""
		}
		ents, ok := lists[parent]
		if !ok {
			ents, _ = listing(filepath.Join(dir, parent)) // ENOENT for a hidden directory: nil
			lists[parent] = ents
		}
		ino, listed := ents[path.Base(p)]
		var st, mst unix.Stat_t
		err := unix.Lstat(filepath.Join(dir, p), &st)
		if listed != (err == nil) {
			t.Errorf("%s: %s listed %v but stat says %v", what, p, listed, err)
			continue
		}
		if listed != want(p) {
			t.Errorf("%s: %s shown %v, want %v", what, p, listed, want(p))
			continue
		}
		if err != nil {
			if err != unix.ENOENT {
				t.Errorf("%s: stat %s: %v, want ENOENT", what, p, err)
			}
			continue
		}
		if merr := unix.Lstat(filepath.Join(mainDir, p), &mst); merr != nil {
			t.Errorf("%s: %s gone from the main mount: %v", what, p, merr)
			continue
		}
		if st.Dev != lstat(t, dir).Dev {
			continue // a mount point (pts, shm): stat shows what is mounted there, readdir the namespace's directory
		}
		if st.Ino != ino || st.Ino != mst.Ino || st.Mode&unix.S_IFMT != mst.Mode&unix.S_IFMT || st.Rdev != mst.Rdev {
			t.Errorf("%s: %s: readdir ino %d, stat ino %d mode %o rdev %#x; main ino %d mode %o rdev %#x",
				what, p, ino, st.Ino, st.Mode, st.Rdev, mst.Ino, mst.Mode, mst.Rdev)
		}
	}
}

func statErr(p string) error {
	var st unix.Stat_t
	return unix.Lstat(p, &st)
}

// Issue 8's must-show: two views of one daemon (one from --view at start,
// one added through the control API). A device registered through the
// control API appears in the view that admits it and not in the other —
// the kernel caches of each mount invalidated, with hour-long timeouts so
// nothing expires by itself; readdir and stat agree in each mount; a
// lookup a view filters never reaches the loader (the daemon's LOOKUP
// events, which every load raises, and its load count say so), and leaves
// no negative entry in the shared namespace. Changes made through one
// mount reach the others' kernels; SIGTERM unmounts every view.
func TestViewsTwoMountsOneDaemon(t *testing.T) {
	aDir := viewDir(t, "a")
	bDir := viewDir(t, "b")
	files := t.TempDir()
	aFile := writeFile(t, files, "a.yaml", fmt.Sprintf(`
mountpoint: %s
allow: [null, "snd/*"]
deny: [snd/seq]
overrides:
  - {glob: "snd/*", mode: "0660", gid: 29}
`, aDir))
	bFile := writeFile(t, files, "b.yaml", fmt.Sprintf(`
mountpoint: %s
allow: ["net/*", zero]
deny: [net/secret]
`, bDir))
	d := startCtl(t, "--view="+aFile, "--loader=none", "--views-dir="+os.TempDir(),
		"--entry-timeout=1h", "--attr-timeout=1h", "--negative-timeout=1h")
	if !mounted(t, aDir) {
		t.Fatalf("the --view mount %s is not mounted at READY=1", aDir)
	}
	d.mustCtl(t, "view", "add", bFile)
	if !mounted(t, bDir) {
		t.Fatalf("view add returned before %s was mounted", bDir)
	}
	ctx := context.Background()
	lk := watchLookups(t, d.c)
	loads := func() uint64 {
		st, err := d.c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Extra["lookup_loads"]
	}
	register := func(p string, major, minor int64) {
		t.Helper()
		if _, err := d.c.Register(ctx, wire.RegisterRequest{Path: p, Type: "char", Major: &major, Minor: &minor}); err != nil {
			t.Fatalf("register %s: %v", p, err)
		}
	}

	// The kernels cache misses first (for an hour): snd in A (a passage:
	// asked for), net in B.
	if err := statErr(filepath.Join(aDir, "snd/pcm0")); err != unix.ENOENT {
		t.Fatalf("A: snd/pcm0 before registration: %v", err)
	}
	if err := statErr(filepath.Join(bDir, "net/tun")); err != unix.ENOENT {
		t.Fatalf("B: net/tun before registration: %v", err)
	}
	lk.waitFor(0, "net") // both misses were loads: both allowed there

	// Registered through the control API (which answers once every
	// mount's kernel was told): snd/pcm0 is A's, net/tun is B's.
	register("snd/pcm0", 116, 3)
	register("snd/seq", 116, 1)
	register("net/tun", 10, 200)
	register("net/secret", 10, 201)
	register("kvm", 10, 232)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(aDir, "snd/pcm0"), &st); err != nil {
		t.Fatalf("A: snd/pcm0 after registration: %v (the kernel's cached miss was not invalidated)", err)
	}
	if st.Mode != unix.S_IFCHR|0o660 || st.Gid != 29 || unix.Major(st.Rdev) != 116 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("A: snd/pcm0 mode %o gid %d rdev %d:%d, want the override 0660 gid 29 on 116:3",
			st.Mode, st.Gid, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := unix.Lstat(filepath.Join(d.mnt, "snd/pcm0"), &st); err != nil || st.Mode != unix.S_IFCHR|0o600 || st.Gid != 0 {
		t.Errorf("main: snd/pcm0 %v mode %o gid %d, want 0600 gid 0 (overrides are the view's)", err, st.Mode, st.Gid)
	}
	if err := statErr(filepath.Join(bDir, "net/tun")); err != nil {
		t.Fatalf("B: net/tun after registration: %v", err)
	}
	for _, hid := range []string{filepath.Join(aDir, "net"), filepath.Join(aDir, "net/tun"), filepath.Join(bDir, "snd"),
		filepath.Join(bDir, "snd/pcm0"), filepath.Join(aDir, "snd/seq"), filepath.Join(bDir, "net/secret")} {
		if err := statErr(hid); err != unix.ENOENT {
			t.Errorf("stat %s: %v, want ENOENT (outside that view)", hid, err)
		}
	}

	// readdir and stat agree in each mount, on every name the namespace
	// holds, and show what each view admits.
	all := namespacePaths(t, d.mnt)
	for _, p := range []string{"snd/pcm0", "snd/seq", "net/tun", "net/secret", "kvm", "null", "zero", "tty"} {
		if sort.SearchStrings(all, p) == len(all) || all[sort.SearchStrings(all, p)] != p {
			t.Fatalf("the namespace lacks %s: %q", p, all)
		}
	}
	inA := func(p string) bool {
		return p == "null" || p == "snd" || strings.HasPrefix(p, "snd/") && p != "snd/seq"
	}
	inB := func(p string) bool {
		return p == "zero" || p == "net" || strings.HasPrefix(p, "net/") && p != "net/secret"
	}
	checkAgree(t, "main", d.mnt, d.mnt, all, func(string) bool { return true })
	checkAgree(t, "A", aDir, d.mnt, all, inA)
	checkAgree(t, "B", bDir, d.mnt, all, inB)

	// A filtered lookup never reaches the loader. Each of these misses
	// would be a load (a LOOKUP event, one more in lookup_loads) if it got
	// that far; then one the view admits is, and since events come in
	// order, the LOOKUPs from the mark to it are exactly that one.
	mark, before := lk.len(), loads()
	for _, p := range []string{filepath.Join(bDir, "widget"), filepath.Join(bDir, "loop3"), filepath.Join(bDir, "net/secret/x"),
		filepath.Join(bDir, "snd/pcm9"), filepath.Join(aDir, "kvm2"), filepath.Join(aDir, "snd/seq/x"), filepath.Join(aDir, "net/tun")} {
		if err := statErr(p); err != unix.ENOENT {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}
	if err := statErr(filepath.Join(aDir, "snd/sentinel")); err != unix.ENOENT {
		t.Fatalf("A: snd/sentinel: %v", err)
	}
	if got := lk.waitFor(mark, "snd/sentinel"); len(got) != 1 {
		t.Fatalf("filtered lookups reached the loader: LOOKUPs %q, want only snd/sentinel", got)
	}
	if n := loads() - before; n != 1 {
		t.Fatalf("%d loads for the filtered lookups and one admitted miss, want 1", n)
	}
	// No negative entry was left in the namespace for the others: the
	// main mount's lookup of widget asks the loader.
	mark = lk.len()
	if err := statErr(filepath.Join(d.mnt, "widget")); err != unix.ENOENT {
		t.Fatalf("main: widget: %v", err)
	}
	lk.waitFor(mark, "widget")

	// Changes made through one mount reach the other kernels, which
	// cached the misses for an hour.
	if err := statErr(filepath.Join(aDir, "snd/pcm1")); err != unix.ENOENT {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(d.mnt, "snd/pcm1"), unix.S_IFCHR|0o600, int(unix.Mkdev(116, 4))); err != nil {
		t.Fatal(err)
	}
	until(t, "A to see snd/pcm1 made through the main mount", func() bool {
		return statErr(filepath.Join(aDir, "snd/pcm1")) == nil
	})
	if err := statErr(filepath.Join(d.mnt, "snd/pcm2")); err != unix.ENOENT {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(aDir, "snd/pcm2"), unix.S_IFCHR|0o600, int(unix.Mkdev(116, 5))); err != nil {
		t.Fatalf("mknod through A: %v", err)
	}
	until(t, "the main mount to see snd/pcm2 made through A", func() bool {
		return statErr(filepath.Join(d.mnt, "snd/pcm2")) == nil
	})
	if err := unix.Mknod(filepath.Join(aDir, "mem"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))); err != unix.EACCES {
		t.Errorf("mknod through A of a name A hides: %v, want EACCES", err)
	}
	// Unregistered: every kernel that held it forgets it.
	if err := d.c.Unregister(ctx, "snd/pcm0"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(aDir, "snd/pcm0"), filepath.Join(d.mnt, "snd/pcm0")} {
		if err := statErr(p); err != unix.ENOENT {
			t.Errorf("stat %s after unregister: %v", p, err)
		}
	}

	// Management: ls, a taken mountpoint, a bad pattern (nothing
	// mounted), rm.
	out := d.mustCtl(t, "view", "ls")
	for _, mp := range []string{d.mnt, aDir, bDir} {
		if !strings.Contains(out, mp) {
			t.Errorf("view ls lacks %s:\n%s", mp, out)
		}
	}
	if _, errOut, code := d.ctl(t, nil, "view", "add", bFile); code != 4 || !strings.Contains(errOut, "exists") {
		t.Errorf("view add at a view's mountpoint: exit %d %s", code, errOut)
	}
	cDir := viewDir(t, "c")
	if _, errOut, code := d.ctl(t, nil, "view", "add", "--mountpoint", cDir, "--allow", "snd/**"); code != 1 ||
		!strings.Contains(errOut, "invalid_argument") || mounted(t, cDir) {
		t.Errorf("view add with a bad pattern: exit %d %s (mounted: %v)", code, errOut, mounted(t, cDir))
	}
	if _, errOut, code := d.ctl(t, nil, "view", "add", "--mountpoint", filepath.Join(d.mnt, "shm")); code != 1 ||
		!strings.Contains(errOut, "invalid_mountpoint") {
		t.Errorf("view add inside the main mount: exit %d %s", code, errOut)
	}
	d.mustCtl(t, "view", "rm", bDir)
	if mounted(t, bDir) {
		t.Fatalf("view rm returned with %s still mounted", bDir)
	}
	if _, _, code := d.ctl(t, nil, "view", "rm", bDir); code != 3 {
		t.Errorf("view rm of a removed view: exit %d, want 3", code)
	}
	if vs, err := d.c.Views(ctx); err != nil || len(vs) != 2 || !vs[0].Main || vs[1].Mountpoint != aDir {
		t.Errorf("views after rm: %+v %v", vs, err)
	}

	// SIGTERM: every view is drained and unmounted with the main mount.
	d.stop()
	if d.err != nil {
		t.Errorf("devfsd exited with %v after SIGTERM", d.err)
	}
	for _, dir := range []string{d.mnt, aDir} {
		if mounted(t, dir) {
			t.Errorf("%s still mounted after SIGTERM", dir)
		}
	}
}

// A view that cannot be mounted fails the start before READY=1 and leaves
// nothing mounted.
func TestViewBadFileFailsStart(t *testing.T) {
	dir := viewDir(t, "v")
	f := writeFile(t, t.TempDir(), "v.yaml", fmt.Sprintf("mountpoint: %s\nallow: [\"tty[\"]\n", dir))
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, devfsdBin, "mount", "--socket=none", "--view="+f, mnt)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "allow[0]") {
		t.Fatalf("devfsd mount with a bad view: %v\n%s", err, out)
	}
	if mounted(t, mnt) || mounted(t, dir) {
		unix.Unmount(mnt, unix.MNT_DETACH)
		t.Fatalf("a failed start left a mount")
	}
}

// Only root adds or removes views, even where control_uid may change the
// namespace: a view mounts a file system wherever it is told.
func TestViewAddIsRootOnly(t *testing.T) {
	binDirReachable(t)
	d := startCtl(t, "--control-uid=65534", "--socket-mode=0666", "--views-dir="+os.TempDir())
	dir := viewDir(t, "v")
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if _, errOut, code := d.ctl(t, nobody, "register", "x", "char", "1", "3"); code != 0 {
		t.Fatalf("control_uid register: exit %d %s", code, errOut)
	}
	if _, errOut, code := d.ctl(t, nobody, "view", "add", "--mountpoint", dir); code != 5 || !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("view add by control_uid: exit %d %s, want 5 permission_denied", code, errOut)
	}
	if mounted(t, dir) {
		t.Fatal("a refused view add mounted")
	}
	if out, errOut, code := d.ctl(t, nobody, "view", "ls"); code != 0 || !strings.Contains(out, d.mnt) {
		t.Fatalf("view ls by anyone: exit %d %s %s", code, out, errOut)
	}
	d.mustCtl(t, "view", "add", "--mountpoint", dir)
	if _, _, code := d.ctl(t, nobody, "view", "rm", dir); code != 5 || !mounted(t, dir) {
		t.Fatalf("view rm by control_uid: exit %d", code)
	}
	d.mustCtl(t, "view", "rm", dir)
}
