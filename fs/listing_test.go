package fs

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/test/harness"
)

// The listing cache through real mounts (root, /dev/fuse): the server is
// mounted in this process, every system call on a mount is made by a
// child process — this test binary re-run with LISTING_CHILD set
// (listingChild), or a real tool (ls, mknod, mv, ...) — and the requests
// the kernel sends are counted by opcode (Options.Observer).

// opCounter counts the requests a server answered, by opcode.
type opCounter struct{ n [NumOps]atomic.Uint64 }

func (c *opCounter) ObserveOp(op Op, d time.Duration) {
	if op < NumOps {
		c.n[op].Add(1)
	}
}

func (c *opCounter) snapshot() (s [NumOps]uint64) {
	for i := range s {
		s[i] = c.n[i].Load()
	}
	return s
}

// since returns the requests answered since snapshot s, by opcode name
// (the opcodes with none left out).
func (c *opCounter) since(s [NumOps]uint64) map[string]uint64 {
	m := map[string]uint64{}
	for i, v := range c.snapshot() {
		if d := v - s[i]; d != 0 {
			m[Op(i).String()] = d
		}
	}
	return m
}

// listingRig is a main server and, optionally, a view, over one
// namespace whose sink is a NotifyMux, mounted on directories of the
// test's own. Its loader registers every name it is asked for that
// starts with "auto" (as a loader: OriginLoader).
type listingRig struct {
	t         *testing.T
	ns        *dcache.Namespace
	mux       *NotifyMux
	main      *Server
	mainCount *opCounter
	mnt       string
	view      *Server
	viewCount *opCounter
	vmnt      string
	ls        *lister
}

// hour is the entry and attribute timeout of the rigs: nothing the
// kernels cache expires during a test, so every request counted is one
// the kernel needed, and every change seen is one it was told of.
const hour = time.Hour

func newListingRig(t *testing.T, policy string, view *viewpath.Spec) *listingRig {
	t.Helper()
	return newListingRigWith(t, policy, view, hour, "")
}

// newListingRigWith is newListingRig with the entry and attribute
// timeout to and the READDIRPLUS policy rdp.
func newListingRigWith(t *testing.T, policy string, view *viewpath.Spec, to time.Duration, rdp string) *listingRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount(2) of FUSE)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	r := &listingRig{t: t, mnt: t.TempDir(), vmnt: t.TempDir(), mainCount: &opCounter{}, viewCount: &opCounter{}}
	nq := NewNotifyQueue(0)
	r.mux = NewNotifyMux(nq)
	r.ns = dcache.New(dcache.Options{NegativeTTL: hour, Sink: r.mux})
	loaderCaller := dcache.Caller{Origin: dcache.OriginLoader}
	res := lookup.New(r.ns, lookup.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		if !strings.HasPrefix(name, "auto") {
			return nil
		}
		_, err := r.ns.Register(path.Join(dir, name), dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 1, Minor: 3}, loaderCaller)
		return err
	}), lookup.Options{Timeout: 5 * time.Second})
	opts := Options{EntryTimeout: to, AttrTimeout: to, NegativeTimeout: hour, ListingCache: policy, Readdirplus: rdp,
		Observer: r.mainCount, DefaultPermissions: true, AllowOther: true}
	r.main = New(res, nq, opts)
	t.Cleanup(func() { r.main.Shutdown() })
	if err := r.main.Mount(r.mnt); err != nil {
		t.Fatal(err)
	}
	if view != nil {
		v, err := viewpath.Compile(*view)
		if err != nil {
			t.Fatal(err)
		}
		vs, err := r.main.NewView(r.mux, v, nil)
		if err != nil {
			t.Fatal(err)
		}
		vs.opts.Observer = r.viewCount
		r.view = vs
		t.Cleanup(func() { vs.Shutdown() })
		if err := vs.Mount(r.vmnt); err != nil {
			t.Fatal(err)
		}
	}
	r.ls = newLister(t)
	return r
}

// register registers p as the control API does: then waits for every
// mount's notifies (the API's answer comes after them).
func (r *listingRig) register(p string, typ dcache.Type) {
	r.t.Helper()
	spec := dcache.Spec{Type: typ, Mode: 0o600, Major: 1, Minor: 5}
	if typ == dcache.TypeDir {
		spec = dcache.Spec{Type: typ, Mode: 0o755}
	}
	if _, err := r.ns.Register(p, spec, dcache.Caller{Origin: dcache.OriginControl}); err != nil {
		r.t.Fatalf("register %s: %v", p, err)
	}
	r.sync()
}

func (r *listingRig) unregister(p string) {
	r.t.Helper()
	if err := r.ns.Unregister(p, dcache.Caller{Origin: dcache.OriginKernel}); err != nil {
		r.t.Fatalf("unregister %s: %v", p, err)
	}
	r.sync()
}

func (r *listingRig) sync() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.main.SyncNotifies(ctx); err != nil {
		r.t.Fatal(err)
	}
}

// truth is what a listing of dir (relative to the root, "" for it)
// must show through s: "ino name" lines in cookie order, "." and ".."
// first, filtered by s's view.
func (r *listingRig) truth(s *Server, dir string) []string {
	r.t.Helper()
	d := r.ns.Root()
	if dir != "" {
		var err error
		if d, err = r.ns.Resolve(dir); err != nil {
			r.t.Fatalf("resolve %s: %v", dir, err)
		}
	}
	ents, err := d.ReadDir(0, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	if s.view != nil {
		if ents, err = s.viewReadDir(context.Background(), d, ents, len(ents)+1, dcache.Caller{}); err != nil {
			r.t.Fatal(err)
		}
	}
	var out []string
	for _, e := range ents {
		out = append(out, fmt.Sprintf("%d %s", e.Ino, e.Name))
	}
	return out
}

// childDeadline bounds one child's run: a child blocked in the kernel
// fails the test, saying where it was blocked, instead of hanging it.
const childDeadline = 30 * time.Second

// child runs this test binary as listingChild with the arguments, and
// returns its output lines.
func child(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "LISTING_CHILD=1")
	cmd.Dir = "/"
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("child %q: %v: %s", args, err, stderr.String())
		}
	case <-time.After(childDeadline):
		stack := childStacks(cmd.Process.Pid)
		cmd.Process.Kill()
		<-done
		t.Fatalf("child %q still running after %v; its kernel stack:\n%s", args, childDeadline, stack)
	}
	return strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
}

// lister is a child process that lists directories on request: one
// process for a whole test, so that a listing costs a getdents64 loop
// and not a process start (which takes long on a loaded machine).
type lister struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	lines chan []string
}

func newLister(t *testing.T) *lister {
	t.Helper()
	l := &lister{t: t, lines: make(chan []string, 1)}
	l.cmd = exec.Command(os.Args[0], "serve", "/")
	l.cmd.Env = append(os.Environ(), "LISTING_CHILD=1")
	l.cmd.Dir = "/"
	l.cmd.Stderr = os.Stderr
	var err error
	if l.in, err = l.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // one answer per request: its lines up to END
		sc := bufio.NewScanner(stdout)
		var ans []string
		for sc.Scan() {
			if sc.Text() == "END" {
				l.lines <- ans
				ans = nil
				continue
			}
			ans = append(ans, sc.Text())
		}
		close(l.lines)
	}()
	t.Cleanup(func() { // before the servers' Shutdown: registered after them
		l.in.Close()
		done := make(chan struct{})
		go func() { l.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(childDeadline):
			t.Errorf("the lister did not exit; its kernel stacks:\n%s", childStacks(l.cmd.Process.Pid))
			l.cmd.Process.Kill()
			<-done
		}
	})
	return l
}

// list lists dir in the lister: "ino name" lines as getdents64 returns
// them, "." and ".." included.
func (l *lister) list(dir string) []string {
	l.t.Helper()
	return l.ask(dir)
}

// lsl is list, and an lstat of each name after the listing (ls -l).
func (l *lister) lsl(dir string) []string {
	l.t.Helper()
	return l.ask("lsl " + dir)
}

func (l *lister) ask(dir string) []string {
	l.t.Helper()
	if _, err := fmt.Fprintf(l.in, "%s\n", dir); err != nil {
		l.t.Fatalf("lister: %v", err)
	}
	select {
	case ans, ok := <-l.lines:
		if !ok {
			l.t.Fatalf("the lister died")
		}
		if len(ans) > 0 && strings.HasPrefix(ans[0], "ERROR ") {
			l.t.Fatalf("listing %s: %s", dir, ans[0])
		}
		return ans
	case <-time.After(childDeadline):
		l.t.Fatalf("listing %s: no answer within %v; the lister's kernel stacks:\n%s", dir, childDeadline, childStacks(l.cmd.Process.Pid))
	}
	return nil
}

// run runs a real program (mknod, mv, ...) on a mount.
func run(t *testing.T, prog string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), childDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v: %s", prog, args, err, out)
	}
}

// listingChild is the child side: "list DIR", "seek DIR" (see
// TestListingSeekdir) or "pause DIR" (see TestListingChangesMidway).
func listingChild(args []string) int {
	fail := func(f string, a ...any) int {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
		return 1
	}
	if len(args) != 2 {
		return fail("usage: serve|seek|pause DIR")
	}
	if args[0] == "serve" {
		// A directory per line on stdin; for each, its entries, then END.
		w := bufio.NewWriter(os.Stdout)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			dir, stat := strings.CutPrefix(sc.Text(), "lsl ")
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err == nil {
				var ents []string
				ents, err = readBatch(fd, 32<<10, -1)
				for _, e := range ents {
					fmt.Fprintln(w, e)
					if name := strings.SplitN(e, " ", 2)[1]; stat && err == nil && name != "." && name != ".." {
						var st unix.Stat_t
						err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
					}
				}
				unix.Close(fd)
			}
			if err != nil {
				fmt.Fprintf(w, "ERROR %v\n", err)
			}
			fmt.Fprintln(w, "END")
			w.Flush()
		}
		return 0
	}
	fd, err := unix.Open(args[1], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open: %v", err)
	}
	defer unix.Close(fd)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	switch args[0] {
	case "seek":
		// Read in small batches, noting the position before each
		// (telldir); then go back to each position (seekdir) and check
		// the batch read from there starts where it did.
		type mark struct {
			off   int64
			first string
		}
		var marks []mark
		var all []string
		for {
			off, err := unix.Seek(fd, 0, io.SeekCurrent)
			if err != nil {
				return fail("telldir: %v", err)
			}
			ents, err := readBatch(fd, 512, 1)
			if err != nil {
				return fail("getdents: %v", err)
			}
			if len(ents) == 0 {
				break
			}
			marks = append(marks, mark{off, ents[0]})
			all = append(all, ents...)
		}
		for i := len(marks) - 1; i >= 0; i-- { // backwards: every seek goes somewhere else
			m := marks[i]
			if _, err := unix.Seek(fd, m.off, io.SeekStart); err != nil {
				return fail("seekdir %d: %v", m.off, err)
			}
			ents, err := readBatch(fd, 512, 1)
			if err != nil || len(ents) == 0 || ents[0] != m.first {
				return fail("seekdir %d: %q %v, want %q first", m.off, ents, err, m.first)
			}
		}
		for _, e := range all {
			fmt.Fprintln(w, e)
		}
	case "pause":
		// One small batch, then PAUSE and a line from stdin, then the
		// rest: the parent changes the directory in between.
		ents, err := readBatch(fd, 512, 1)
		if err != nil {
			return fail("getdents: %v", err)
		}
		for _, e := range ents {
			fmt.Fprintln(w, e)
		}
		fmt.Fprintln(w, "PAUSE")
		w.Flush()
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fail("stdin: %v", err)
		}
		rest, err := readBatch(fd, 512, -1)
		if err != nil {
			return fail("getdents: %v", err)
		}
		for _, e := range rest {
			fmt.Fprintln(w, e)
		}
	default:
		return fail("unknown child %q", args[0])
	}
	return 0
}

// readBatch reads "ino name" entries from fd with getdents64 calls of a
// buffer of size bytes: calls of them (-1: to the end).
func readBatch(fd, size, calls int) ([]string, error) {
	buf := make([]byte, size)
	var out []string
	for i := 0; calls < 0 || i < calls; i++ {
		k, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if k == 0 {
			break
		}
		for b := buf[:k]; len(b) > 0; {
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			if j := slices.Index(name, 0); j >= 0 {
				name = name[:j]
			}
			out = append(out, strconv.FormatUint(ino, 10)+" "+string(name))
			b = b[reclen:]
		}
	}
	return out, nil
}

// checkListing lists dir in a child and compares with the truth.
func (r *listingRig) checkListing(what string, s *Server, mnt, dir string) {
	r.t.Helper()
	got, want := r.ls.list(filepath.Join(mnt, dir)), r.truth(s, dir)
	if !slices.Equal(got, want) {
		r.t.Fatalf("%s: listing of %q\n got %q\nwant %q", what, dir, got, want)
	}
}

// untilListing polls until a listing of dir through s shows the truth:
// for changes made through another mount, whose notifies nobody waits
// for.
func (r *listingRig) untilListing(what string, s *Server, mnt, dir string) {
	r.t.Helper()
	var got, want []string
	if !harness.Poll(10*time.Second, 2*time.Millisecond, func() bool {
		got, want = r.ls.list(filepath.Join(mnt, dir)), r.truth(s, dir)
		return slices.Equal(got, want)
	}) {
		r.t.Fatalf("%s: listing of %q\n got %q\nwant %q", what, dir, got, want)
	}
}

func populate(t *testing.T, ns *dcache.Namespace, dir string, n int) {
	t.Helper()
	for i := range n {
		if _, err := ns.Register(path.Join(dir, fmt.Sprintf("n%04d", i)), dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 1, Minor: 3}, dcache.Caller{}); err != nil {
			t.Fatal(err)
		}
	}
}

// A listing of an unchanged directory costs no request once the kernel
// holds it (policy auto: not even OPENDIR or RELEASEDIR; policy opendir:
// the OPENDIR only), and every request with the cache off. The second
// `ls` may cost one GETATTR: ls stats the directory it lists, and the
// first listing, read from the server, made the kernel drop the
// directory's atime (fuse_invalidate_atime); a listing from the cache
// does not, so the third `ls` costs nothing at all.
func TestListingCachedCostsNoRequest(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   map[string]uint64 // a listing's requests once cached; nil: not cached
	}{
		{ListingCacheAuto, map[string]uint64{}},
		{ListingCacheOpenDir, map[string]uint64{"OPENDIR": 1}},
		{ListingCacheOff, nil},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			r := newListingRig(t, tc.policy, nil)
			populate(t, r.ns, "", 300) // several pages of listing
			populate(t, r.ns, "sub", 3)
			r.sync()
			for _, dir := range []string{"", "sub"} {
				p := filepath.Join(r.mnt, dir)
				run(t, "ls", "-f", p) // the kernel now holds dir, and the listing if cached
				s := r.mainCount.snapshot()
				run(t, "ls", "-f", p)
				second := r.mainCount.since(s)
				s = r.mainCount.snapshot()
				run(t, "ls", "-f", p)
				r.checkListing("again", r.main, r.mnt, dir)
				third := r.mainCount.since(s)
				if tc.want == nil {
					if third["READDIR"]+third["READDIRPLUS"] == 0 || third["OPENDIR"] != 2 {
						t.Errorf("%q without the cache: requests %v, want READDIR or READDIRPLUS and 2 OPENDIR", dir, third)
					}
					continue
				}
				want := map[string]uint64{}
				for op, n := range tc.want {
					want[op] = 2 * n // ls and the check
				}
				if !maps.Equal(third, want) {
					t.Errorf("%q: requests %v for ls and a listing of an unchanged directory, want %v", dir, third, want)
				}
				delete(second, "GETATTR")
				if want := tc.want; !maps.Equal(second, want) {
					t.Errorf("%q: requests %v for the second ls (GETATTR aside), want %v", dir, second, want)
				}
			}
		})
	}
}

// Every change of a directory's entries shows in the next listing of
// every mount whose kernel caches it, whatever made the change: the
// control API and the kernel's device source (registration, then the
// API's wait for the notifies), a loader answering a lookup, and each
// namespace operation through one mount (seen at once there, and by
// the other mount once its notify is sent), across a view. No listing
// is stale after an rmdir and a mkdir of the same name, nor after a
// directory moved to another parent (its "..").
func TestListingSeesEveryChange(t *testing.T) {
	for _, policy := range []string{ListingCacheAuto, ListingCacheOpenDir, ListingCacheOff} {
		t.Run(policy, func(t *testing.T) {
			r := newListingRig(t, policy, &viewpath.Spec{Deny: []string{"secret*", "*/secret*"}})
			main, view := r.main, r.view
			r.register("d", dcache.TypeDir)
			r.register("e", dcache.TypeDir)
			populate(t, r.ns, "d", 100)
			r.sync()
			dirs := []string{"", "d", "e"}
			// now checks every directory in both mounts, at once.
			now := func(what string) {
				t.Helper()
				for _, dir := range dirs {
					r.checkListing(what+" (main)", main, r.mnt, dir)
					r.checkListing(what+" (view)", view, r.vmnt, dir)
				}
			}
			// through checks at once the mount the change was made
			// through, and the other once its kernel was told.
			through := func(what string, s *Server) {
				t.Helper()
				for _, dir := range dirs {
					if s == main {
						r.checkListing(what+" (main, which made it)", main, r.mnt, dir)
						r.untilListing(what+" (view)", view, r.vmnt, dir)
					} else {
						r.checkListing(what+" (view, which made it)", view, r.vmnt, dir)
						r.untilListing(what+" (main)", main, r.mnt, dir)
					}
				}
			}
			now("before any change") // and the kernels cache each listing

			r.register("d/reg1", dcache.TypeChar)
			r.register("secret1", dcache.TypeChar) // the view's listing is unchanged
			now("registered through the control API")
			r.unregister("d/reg1")
			r.unregister("secret1")
			now("unregistered by the kernel's device source")
			r.register("e/sub", dcache.TypeDir)
			dirs = append(dirs, "e/sub")
			now("a directory registered")

			// A miss the loader answers by registering the name: the
			// lookup's reply installs the entry; the listings follow
			// once the notifies are sent.
			run(t, "stat", filepath.Join(r.mnt, "d", "auto1"))
			if _, err := r.ns.Resolve("d/auto1"); err != nil {
				t.Fatalf("the loader did not register d/auto1: %v", err)
			}
			for _, dir := range dirs {
				r.untilListing("registered by the loader (main)", main, r.mnt, dir)
				r.untilListing("registered by the loader (view)", view, r.vmnt, dir)
			}

			// Through the mounts, with real tools.
			m, v := r.mnt, r.vmnt
			for _, step := range []struct {
				what string
				s    *Server
				prog string
				args []string
			}{
				{"mknod", main, "mknod", []string{m + "/d/m1", "c", "1", "3"}},
				{"mknod through the view", view, "mknod", []string{v + "/e/v1", "c", "1", "3"}},
				{"mkdir", main, "mkdir", []string{m + "/d/sd"}},
				{"symlink", view, "ln", []string{"-s", "m1", v + "/d/sl"}},
				{"link", main, "ln", []string{m + "/d/m1", m + "/e/hl"}},
				{"create", view, "touch", []string{v + "/e/file"}},
				{"rename across directories", main, "mv", []string{m + "/d/m1", m + "/e/m1"}},
				{"rename in one directory", view, "mv", []string{v + "/e/v1", v + "/e/v2"}},
				{"rename over a name", main, "mv", []string{m + "/e/v2", m + "/e/file"}},
				{"unlink", view, "rm", []string{v + "/e/hl"}},
				{"rmdir", main, "rmdir", []string{m + "/d/sd"}},
			} {
				run(t, step.prog, step.args...)
				through(step.what, step.s)
			}

			// rmdir and mkdir of the same name: the new directory lists
			// empty, under its own inode number, in both mounts.
			run(t, "mkdir", m+"/d/x")
			run(t, "mknod", m+"/d/x/f", "c", "1", "3")
			dirs = append(dirs, "d/x")
			through("d/x made, with a node", main)
			run(t, "rm", m+"/d/x/f")
			run(t, "rmdir", m+"/d/x")
			run(t, "mkdir", m+"/d/x")
			through("d/x removed and made again", main)
			if got := r.ls.list(m + "/d/x"); len(got) != 2 {
				t.Fatalf("the new d/x lists %q", got)
			}
			r.unregister("d/x")
			r.register("d/x", dcache.TypeDir)
			r.register("d/x/y", dcache.TypeChar)
			now("d/x unregistered and registered again")

			// A directory moved to another parent: its ".." follows.
			r.register("d/mv", dcache.TypeDir)
			dirs = append(dirs, "d/mv")
			now("d/mv registered")
			run(t, "mv", m+"/d/mv", m+"/e/mv")
			dirs[len(dirs)-1] = "e/mv"
			for _, dir := range dirs { // the mount that moved it is told too
				r.untilListing("d/mv moved to e (main)", main, m, dir)
				r.untilListing("d/mv moved to e (view)", view, v, dir)
			}
		})
	}
}

// telldir and seekdir (lseek on the directory) land where they did,
// whether the kernel reads the listing from the server or from its
// cache: the offsets are dcache's cookies either way.
func TestListingSeekdir(t *testing.T) {
	for _, policy := range []string{ListingCacheAuto, ListingCacheOff} {
		t.Run(policy, func(t *testing.T) {
			r := newListingRig(t, policy, nil)
			populate(t, r.ns, "", 200)
			r.sync()
			want := r.truth(r.main, "")
			for pass := range 3 { // from the server, then from the cache (auto)
				s := r.mainCount.snapshot()
				got := child(t, "seek", r.mnt)
				if !slices.Equal(got, want) {
					t.Fatalf("pass %d: listed\n %q\nwant %q", pass, got, want)
				}
				reads := r.mainCount.since(s)
				if policy == ListingCacheAuto && pass > 0 && reads["READDIR"]+reads["READDIRPLUS"] != 0 {
					t.Errorf("pass %d: %v: seeks in a cached listing reached the server", pass, reads)
				}
			}
		})
	}
}

// A directory that changes while a process lists it: the names that
// stayed are listed once each, none skipped, none repeated; a name
// removed before the listing reached it is not listed, whether the
// listing came from the cache or not.
func TestListingChangesMidway(t *testing.T) {
	for _, policy := range []string{ListingCacheAuto, ListingCacheOff} {
		t.Run(policy, func(t *testing.T) {
			r := newListingRig(t, policy, nil)
			populate(t, r.ns, "", 100)
			r.sync()
			r.ls.list(r.mnt) // cached, with auto
			before := r.truth(r.main, "")
			cmd := exec.Command(os.Args[0], "pause", r.mnt)
			cmd.Env = append(os.Environ(), "LISTING_CHILD=1")
			cmd.Dir = "/"
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			sc := bufio.NewScanner(stdout)
			var got []string
			for sc.Scan() && sc.Text() != "PAUSE" {
				got = append(got, sc.Text())
			}
			if len(got) == 0 || len(got) >= len(before) {
				t.Fatalf("first batch %d entries of %d", len(got), len(before))
			}
			// Remove the last name (not listed yet) and one listed
			// already, add two.
			last := before[len(before)-1]
			r.unregister(strings.Fields(last)[1])
			r.unregister(strings.Fields(got[len(got)-1])[1])
			r.register("new1", dcache.TypeChar)
			r.register("new2", dcache.TypeChar)
			io.WriteString(stdin, "go on\n")
			for sc.Scan() {
				got = append(got, sc.Text())
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v: %s", err, stderr.String())
			}
			seen := map[string]int{}
			for _, e := range got {
				seen[e]++
			}
			for _, e := range before[:len(before)-1] {
				if seen[e] != 1 {
					t.Errorf("%q listed %d times, want once", e, seen[e])
				}
			}
			if seen[last] != 0 {
				t.Errorf("%q, removed before the listing reached it, was listed", last)
			}
			for e, n := range seen {
				if n != 1 {
					t.Errorf("%q listed %d times", e, n)
				}
			}
			// The next listing is the directory as it is now.
			r.checkListing("after the change", r.main, r.mnt, "")
		})
	}
}

// childStacks is the kernel stack of each thread of process pid.
func childStacks(pid int) string {
	var b strings.Builder
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stack", pid))
	for _, f := range tasks {
		st, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "%s:\n%s", f, st)
	}
	return b.String()
}

// A listing READDIRPLUS filled lasts as long as the names it brought:
// once they expired, the next `ls -l` is READDIRPLUS again, as without
// the cache, and not a LOOKUP per name; before, it costs nothing.
func TestListingLastsAsLongAsItsNames(t *testing.T) {
	const n = 300
	const to = 200 * time.Millisecond
	r := newListingRigWith(t, ListingCacheAuto, nil, to, ReaddirplusAlways)
	populate(t, r.ns, "", n)
	r.sync()
	q0 := r.main.nq.Stats()
	r.ls.lsl(r.mnt) // READDIRPLUS fills the listing and gives every name
	// Its listing notice comes once the names expired.
	waitFor(t, "the filled listing's notice", func() bool {
		st := r.main.nq.Stats()
		return st.Queued > q0.Queued && st.Pending == 0
	})
	s := r.mainCount.snapshot()
	r.ls.lsl(r.mnt)
	got := r.mainCount.since(s)
	if got["READDIRPLUS"] == 0 || got["LOOKUP"] > n/10 {
		t.Fatalf("ls -l once the names expired: requests %v, want READDIRPLUS and not a LOOKUP per name", got)
	}
}
