package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
	"github.com/devfsd/devfsd/test/loopdev"
)

// Issue 17, item 4, through the devfsd binary: the kernel serves a
// listing of an unchanged directory from its cache, with no request,
// and every change of a directory's entries shows in the next listing
// of the main mount and of a view, whatever made it. Hour-long caches:
// nothing the kernels hold expires by itself during the test.

// fuseRequests is the daemon's count of answered FUSE requests by
// opcode (every mount of it together), from its /metrics.
func fuseRequests(t *testing.T, d *ctlDaemon) map[string]float64 {
	t.Helper()
	const pre = `devfsd_fuse_request_duration_seconds_count{op="`
	out := map[string]float64{}
	for k, v := range scrape(t, d) {
		if op, ok := strings.CutPrefix(k, pre); ok {
			out[strings.TrimSuffix(op, `"}`)] = v
		}
	}
	return out
}

// requestsSince is what was answered since the count before.
func requestsSince(t *testing.T, d *ctlDaemon, before map[string]float64) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for op, v := range fuseRequests(t, d) {
		if n := v - before[op]; n != 0 {
			out[op] = n
		}
	}
	return out
}

func lsF(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("ls", "-f", dir)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ls -f %s: %v: %s", dir, err, out)
	}
}

// names lists dir: name -> inode number, "." and ".." left out.
func names(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	ents, err := listing(dir)
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	return ents
}

// listed says whether a listing of dir has name, and is wanted.
func listedAs(t *testing.T, dir, name string, want bool) bool {
	_, ok := names(t, dir)[name]
	return ok == want
}

func TestListingCacheEveryOrigin(t *testing.T) {
	vdir := viewDir(t, "v")
	vfile := writeFile(t, t.TempDir(), "v.yaml", fmt.Sprintf("mountpoint: %s\ndeny: [\"secret*\"]\n", vdir))
	d := startCtl(t, "--view="+vfile, "--views-dir="+os.TempDir(),
		"--entry-timeout=1h", "--attr-timeout=1h", "--negative-timeout=1h")
	ctx := context.Background()
	mnts := []string{d.mnt, vdir}

	// An unchanged listing costs nothing once the kernel holds it. The
	// second ls may cost one GETATTR (ls stats the directory, whose
	// atime the first listing, read from the daemon, made the kernel
	// drop); the third costs nothing, nor does a listing with getdents.
	for _, m := range mnts {
		lsF(t, m)
	}
	before := fuseRequests(t, d)
	for _, m := range mnts {
		lsF(t, m)
	}
	second := requestsSince(t, d, before)
	if n := second["OPENDIR"] + second["READDIR"] + second["READDIRPLUS"]; n != 0 {
		t.Errorf("the second ls of each mount: requests %v, want no OPENDIR, READDIR or READDIRPLUS", second)
	}
	before = fuseRequests(t, d)
	for _, m := range mnts {
		lsF(t, m)
		names(t, m)
	}
	if third := requestsSince(t, d, before); len(third) != 0 {
		t.Errorf("ls and getdents of unchanged directories: requests %v, want none", third)
	}

	seen := func(what, dir, name string, want bool) {
		t.Helper()
		if !listedAs(t, dir, name, want) {
			t.Fatalf("%s: %s listed in %s: %v, want %v", what, name, dir, !want, want)
		}
	}
	eventually := func(what, dir, name string, want bool) {
		t.Helper()
		until(t, fmt.Sprintf("%s: %s listed in %s: %v", what, name, dir, want), func() bool { return listedAs(t, dir, name, want) })
	}

	// The control socket: its answer comes once every kernel was told.
	register := func(p string) {
		t.Helper()
		major, minor := int64(1), int64(3)
		if _, err := d.c.Register(ctx, wire.RegisterRequest{Path: p, Type: "char", Major: &major, Minor: &minor}); err != nil {
			t.Fatalf("register %s: %v", p, err)
		}
	}
	register("lc-ctl")
	register("secret-ctl")
	seen("ctl register", d.mnt, "lc-ctl", true)
	seen("ctl register", vdir, "lc-ctl", true)
	seen("ctl register", d.mnt, "secret-ctl", true)
	seen("ctl register (hidden in the view)", vdir, "secret-ctl", false)
	for _, p := range []string{"lc-ctl", "secret-ctl"} {
		if err := d.c.Unregister(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range mnts {
		seen("ctl unregister", m, "lc-ctl", false)
	}
	seen("ctl unregister", d.mnt, "secret-ctl", false)

	// The built-in loader, answering a miss: loop3's module registers
	// its siblings too, which nobody looked up.
	if err := statErr(filepath.Join(d.mnt, "loop3")); err != nil {
		t.Fatalf("loop3: %v", err)
	}
	for _, m := range mnts {
		eventually("the built-in loader", m, "loop3", true)
		eventually("the built-in loader", m, "loop-control", true)
	}

	// Through one mount, seen at once there and in the other once told.
	run := func(prog string, args ...string) {
		t.Helper()
		cmd := exec.Command(prog, args...)
		cmd.Dir = "/"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %q: %v: %s", prog, args, err, out)
		}
	}
	run("mknod", filepath.Join(d.mnt, "m1"), "c", "1", "3")
	seen("mknod", d.mnt, "m1", true)
	eventually("mknod through the main mount", vdir, "m1", true)
	run("mkdir", filepath.Join(vdir, "dd"))
	names(t, filepath.Join(d.mnt, "dd")) // cached empty in the main mount
	run("mv", filepath.Join(vdir, "m1"), filepath.Join(vdir, "dd", "m1"))
	seen("rename", vdir, "m1", false)
	seen("rename", filepath.Join(vdir, "dd"), "m1", true)
	eventually("rename through the view (old directory)", d.mnt, "m1", false)
	eventually("rename through the view (new directory)", filepath.Join(d.mnt, "dd"), "m1", true)

	// rmdir and mkdir of one name: no stale listing of the old one.
	run("mknod", filepath.Join(d.mnt, "dd", "x"), "c", "1", "3")
	eventually("mknod", filepath.Join(vdir, "dd"), "x", true)
	run("rm", filepath.Join(d.mnt, "dd", "x"), filepath.Join(d.mnt, "dd", "m1"))
	run("rmdir", filepath.Join(d.mnt, "dd"))
	run("mkdir", filepath.Join(d.mnt, "dd"))
	newIno := names(t, d.mnt)["dd"]
	until(t, "the view to list the new dd, empty", func() bool {
		ents, err := listing(filepath.Join(vdir, "dd"))
		return err == nil && len(ents) == 0 && names(t, vdir)["dd"] == newIno
	})
	if ents := names(t, filepath.Join(d.mnt, "dd")); len(ents) != 0 {
		t.Errorf("the new dd lists %v in the main mount", ents)
	}

	// A helper over the socket, answering a miss through the view (last:
	// once attached, it answers every miss, mknod's too).
	h := startHelper(t, d)
	if err := statErr(filepath.Join(vdir, "helped0")); err != nil {
		t.Fatalf("helped0 through the helper: %v", err)
	}
	h.waitLine("the helper's registration", func(l string) bool { return l == "registered helped0" })
	for _, m := range mnts {
		eventually("the helper", m, "helped0", true)
	}
}

// The kernel's device source: a loop device made and removed shows in,
// and goes from, the next listings of the main mount and of a view.
func TestListingCacheKernelSource(t *testing.T) {
	loopdev.Need(t)
	vdir := viewDir(t, "kernel")
	vfile := writeFile(t, t.TempDir(), "v.yaml", "mountpoint: "+vdir+"\n")
	d := startCtl(t, "--devices=kernel", "--view="+vfile, "--views-dir="+os.TempDir(),
		"--entry-timeout=1h", "--attr-timeout=1h", "--negative-timeout=1h")
	mnts := []string{d.mnt, vdir}
	// The machine's devices come and go while this runs (other tests
	// make loop devices): the root's listing changes whenever they do.
	// A directory of the test's own does not.
	quiet := "listing-quiet"
	if err := os.Mkdir(filepath.Join(d.mnt, quiet), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range mnts {
		until(t, "the view to show "+quiet, func() bool { return listedAs(t, m, quiet, true) })
		names(t, filepath.Join(m, quiet)) // the kernels cache the listings
	}
	before := fuseRequests(t, d)
	for _, m := range mnts {
		names(t, filepath.Join(m, quiet))
	}
	// No listing request. A GETATTR of the root may come: a device
	// that came or went meanwhile changed the root, whose attributes the
	// path walk (default_permissions) then fetches again.
	if got := requestsSince(t, d, before); got["OPENDIR"]+got["READDIR"]+got["READDIRPLUS"] != 0 || len(got) > 1 {
		t.Errorf("listings of an unchanged directory: requests %v, want none (GETATTR aside)", got)
	}
	for _, m := range mnts {
		names(t, m) // the kernels cache the root's listing
	}
	i := loopdev.Free(t)
	name := fmt.Sprintf("loop%d", i)
	if err := loopdev.Ctl(unix.LOOP_CTL_ADD, i); err != nil {
		t.Fatalf("LOOP_CTL_ADD %d: %v", i, err)
	}
	loopdev.RemoveAtCleanup(t, i)
	for _, m := range mnts {
		harness.Until(t, kernelDeadline, name+" listed in "+m, func() bool { return listedAs(t, m, name, true) })
	}
	if err := loopdev.Ctl(unix.LOOP_CTL_REMOVE, i); err != nil {
		t.Fatalf("LOOP_CTL_REMOVE %d: %v", i, err)
	}
	for _, m := range mnts {
		harness.Until(t, kernelDeadline, name+" gone from "+m, func() bool { return listedAs(t, m, name, false) })
	}
}
