package fs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// The special-mount tests mount the server for real (root, /dev/fuse)
// and act on the mount from child processes: this test binary re-run
// with SPECIAL_CHILD set (TestMain).

func TestMain(m *testing.M) {
	if what := os.Getenv("SPECIAL_CHILD"); what != "" {
		os.Exit(specialChild(what))
	}
	if os.Getenv("LISTING_CHILD") != "" {
		os.Exit(listingChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// specialChild opens the ptmx at the path given, writes a byte on the
// master and reads it on the slave, and prints the pty's number.
func specialChild(ptmx string) int {
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		return 1
	}
	m, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+ptmx, err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		return fail("TIOCGPTN", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlockpt", err)
	}
	slave := filepath.Join(filepath.Dir(ptmx), "pts", strconv.Itoa(n))
	s, err := unix.Open(slave, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+slave, err)
	}
	if _, err := unix.Write(m, []byte("x\n")); err != nil {
		return fail("write master", err)
	}
	buf := make([]byte, 8)
	k, err := unix.Read(s, buf)
	if err != nil || k < 1 || buf[0] != 'x' {
		return fail("read slave", fmt.Errorf("%q %v", buf[:k], err))
	}
	fmt.Println(n)
	return 0
}

// mountedRig is a rig whose server is mounted on a fresh directory, with
// a ptmx 5:2 and the specials' directories (PrepareSpecials).
func mountedRig(t *testing.T) (*rig, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount(2) of FUSE, devpts, tmpfs)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	mnt := t.TempDir() // before newRig: removed after the server's Shutdown
	r := newRig(t, Options{Dev: true, EntryTimeout: DefaultEntryTimeout, AttrTimeout: DefaultAttrTimeout}, nil)
	if _, err := r.ns.Register("ptmx", dcache.Spec{Type: dcache.TypeChar, Mode: 0o666, Major: 5, Minor: 2}, dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if err := PrepareSpecials(r.ns, SpecialOpts{Pts: SpecialOn, Shm: SpecialOn}); err != nil {
		t.Fatal(err)
	}
	if err := r.s.Mount(mnt); err != nil {
		t.Fatal(err)
	}
	return r, mnt
}

func mountsBelow(t *testing.T, dir string) map[string]*mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := map[string]*mountinfo.Info{}
	for _, m := range ms {
		if m.Mountpoint != dir {
			r[strings.TrimPrefix(m.Mountpoint, dir+"/")] = m
		}
	}
	return r
}

// openPty runs specialChild on ptmx and returns the pty number it got.
func openPty(t *testing.T, ptmx string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SPECIAL_CHILD="+ptmx)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pty through %s: %v: %s", ptmx, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("child said %q", out)
	}
	return n
}

func mountSpecialsT(t *testing.T, s *Server, o SpecialOpts) *Specials {
	t.Helper()
	sp, err := s.MountSpecials(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	})
	return sp
}

// MountSpecials mounts a devpts instance of its own on pts (which the
// ptmx 5:2 beside it opens) and a tmpfs on shm, whose directories
// PrepareSpecials made; Close takes both away, before the FUSE mount.
func TestSpecialsMountAndClose(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "fsmount", true: "mount(2)"}[legacy], func(t *testing.T) {
			legacyMount = legacy
			t.Cleanup(func() { legacyMount = false })
			r, mnt := mountedRig(t)
			gid := uint32(7)
			sp := mountSpecialsT(t, r.s, SpecialOpts{Pts: SpecialOn, Shm: SpecialRequired, ShmSize: 1 << 20, PtsGid: &gid})
			ms := mountsBelow(t, mnt)
			pts, shm := ms["pts"], ms["shm"]
			if pts == nil || pts.FSType != "devpts" || shm == nil || shm.FSType != "tmpfs" || len(ms) != 2 {
				b, _ := os.ReadFile("/proc/self/mountinfo")
				t.Fatalf("mounts below %s: %v\n%s", mnt, ms, b)
			}
			for _, o := range []string{"gid=7", "mode=620", "ptmxmode=666"} {
				if !strings.Contains(pts.VFSOptions, o) {
					t.Errorf("devpts options %q lack %s", pts.VFSOptions, o)
				}
			}
			if !strings.Contains(pts.Options, "nosuid") || !strings.Contains(pts.Options, "noexec") {
				t.Errorf("devpts mount options %q", pts.Options)
			}
			if !strings.Contains(shm.VFSOptions, "size=1024k") ||
				!strings.Contains(shm.Options, "nodev") || !strings.Contains(shm.Options, "nosuid") {
				t.Errorf("tmpfs options %q %q", shm.Options, shm.VFSOptions)
			}
			if n, err := r.ns.Resolve("shm"); err != nil || !n.IsDir() || n.Attr().Mode&07777 != 0o1777 {
				t.Errorf("shm in the namespace: %v", err)
			}
			if got := sp.Mounted(); len(got) != 2 || got[0].Name != "pts" || got[1].FSType != "tmpfs" {
				t.Errorf("Mounted() = %+v", got)
			}
			if n := openPty(t, filepath.Join(mnt, "ptmx")); n != 0 {
				t.Errorf("first pty of a new instance is %d, want 0", n)
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(mnt, "shm"), &st); err != nil || st.Mode&07777 != 0o1777 {
				t.Errorf("stat shm: %v mode %o", err, st.Mode)
			}
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			if ms := mountsBelow(t, mnt); len(ms) != 0 {
				t.Fatalf("after Close: %v", ms)
			}
			if err := sp.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

// Each mount's pty numbers are its own: two servers over one namespace
// both hand out pts/0 first.
func TestSpecialsPtyNumbersPerMount(t *testing.T) {
	r, mnt := mountedRig(t)
	mountSpecialsT(t, r.s, SpecialOpts{Pts: SpecialRequired})
	v, err := viewpath.Compile(viewpath.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := r.s.NewView(NewNotifyMux(), v, zapNop())
	if err != nil {
		t.Fatal(err)
	}
	vmnt := t.TempDir()
	t.Cleanup(func() { vs.Shutdown() })
	if err := vs.Mount(vmnt); err != nil {
		t.Fatal(err)
	}
	mountSpecialsT(t, vs, SpecialOpts{Pts: SpecialRequired})
	// A held pty on the first mount would make the next one there 1.
	if a, b := openPty(t, filepath.Join(mnt, "ptmx")), openPty(t, filepath.Join(vmnt, "ptmx")); a != 0 || b != 0 {
		t.Fatalf("first ptys %d and %d, want 0 and 0", a, b)
	}
}

// While mounted, pts and shm refuse rmdir and rename at the server too
// (what a process in another mount namespace would reach), on every
// mount of the namespace; once unmounted they are ordinary directories.
func TestSpecialsBusy(t *testing.T) {
	r, mnt := mountedRig(t)
	sp := mountSpecialsT(t, r.s, SpecialOpts{Pts: SpecialOn, Shm: SpecialOn})
	if err := unix.Rmdir(filepath.Join(mnt, "pts")); err != unix.EBUSY {
		t.Errorf("rmdir pts in this mount namespace: %v, want EBUSY", err)
	}
	h := hdr(1)
	if st := r.s.Rmdir(nil, &h, "shm"); st != fuse.Status(syscall.EBUSY) {
		t.Errorf("RMDIR shm at the server: %v, want EBUSY", st)
	}
	if _, err := r.ns.Register("d", dcache.Spec{Type: dcache.TypeDir, Mode: 0o755}, dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"pts", "pts2"}, {"d", "shm"}} {
		in := fuse.RenameIn{InHeader: hdr(1), Newdir: 1}
		if st := r.s.Rename(nil, &in, c[0], c[1]); st != fuse.Status(syscall.EBUSY) {
			t.Errorf("RENAME %s to %s: %v, want EBUSY", c[0], c[1], st)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if st := r.s.Rmdir(nil, &h, "shm"); st != fuse.OK {
		t.Errorf("RMDIR shm once unmounted: %v", st)
	}
}

// A special that cannot be mounted is left out when on, and fails the
// whole call, undoing the others, when required.
func TestSpecialsFailure(t *testing.T) {
	r, mnt := mountedRig(t)
	if err := r.ns.Unregister("shm", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.MountSpecials(SpecialOpts{Pts: SpecialOn, Shm: SpecialRequired}); err == nil || !strings.Contains(err.Error(), "shm is required") {
		t.Fatalf("required shm without its directory: %v", err)
	}
	if ms := mountsBelow(t, mnt); len(ms) != 0 {
		t.Fatalf("a failed MountSpecials left %v", ms)
	}
	sp := mountSpecialsT(t, r.s, SpecialOpts{Pts: SpecialOn, Shm: SpecialOn})
	if got := sp.Mounted(); len(got) != 1 || got[0].Name != "pts" {
		t.Fatalf("with shm on and not mountable: %+v", got)
	}
	if _, err := r.s.MountSpecials(SpecialOpts{Pts: "sometimes"}); err == nil {
		t.Fatal("a bad mode was accepted")
	}
	if err := PrepareSpecials(r.ns, SpecialOpts{Shm: SpecialOn, ShmSize: -1}); err == nil {
		t.Fatal("a negative shm size was accepted")
	}
}

// PrepareSpecials makes what is missing, as directories of the usual
// modes, and leaves what is there.
func TestPrepareSpecials(t *testing.T) {
	ns := dcache.New(dcache.Options{})
	if _, err := ns.Register("pts", dcache.Spec{Type: dcache.TypeDir, Mode: 0o700}, dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if err := PrepareSpecials(ns, SpecialOpts{Pts: SpecialOn, Shm: SpecialRequired}); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]uint32{"pts": 0o700, "shm": 0o1777} {
		n, err := ns.Resolve(name)
		if err != nil || !n.IsDir() || n.Attr().Mode&07777 != mode {
			t.Errorf("%s: %v, want a directory of mode %o", name, err, mode)
		}
	}
	ns2 := dcache.New(dcache.Options{})
	if err := PrepareSpecials(ns2, SpecialOpts{Pts: SpecialOff}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns2.Resolve("pts"); err == nil {
		t.Error("pts made while off")
	}
}

// A view that hides pts gets no pts mount.
func TestSpecialsViewHides(t *testing.T) {
	r, _ := mountedRig(t)
	v, err := viewpath.Compile(viewpath.Spec{Deny: []string{"pts"}})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := r.s.NewView(NewNotifyMux(), v, zapNop())
	if err != nil {
		t.Fatal(err)
	}
	vmnt := t.TempDir()
	t.Cleanup(func() { vs.Shutdown() })
	if err := vs.Mount(vmnt); err != nil {
		t.Fatal(err)
	}
	if _, err := vs.MountSpecials(SpecialOpts{Pts: SpecialRequired}); err == nil || !strings.Contains(err.Error(), "hides pts") {
		t.Fatalf("pts required in a view that hides it: %v", err)
	}
}

// DetachBelow clears what a killed daemon left: every mount below the
// directory, not the directory's own.
func TestDetachBelow(t *testing.T) {
	r, mnt := mountedRig(t)
	sp, err := r.s.MountSpecials(SpecialOpts{Pts: SpecialRequired, Shm: SpecialRequired})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	done, err := DetachBelow(mnt)
	if err != nil || len(done) != 2 {
		t.Fatalf("DetachBelow: %v %v", done, err)
	}
	if ms := mountsBelow(t, mnt); len(ms) != 0 {
		t.Fatalf("left: %v", ms)
	}
	if ok, _ := mountinfo.Mounted(mnt); !ok {
		t.Fatal("DetachBelow took the mount itself")
	}
	if err := sp.Close(); err != nil { // already gone: EINVAL, not an error
		t.Fatalf("Close after DetachBelow: %v", err)
	}
}

// Shutdown detaches the specials before the FUSE mount, without a Close;
// MountSpecials is refused twice and after Shutdown.
func TestSpecialsShutdownDetaches(t *testing.T) {
	r, mnt := mountedRig(t)
	if _, err := r.s.MountSpecials(SpecialOpts{Pts: SpecialRequired, Shm: SpecialRequired}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.MountSpecials(SpecialOpts{Pts: SpecialOn}); err == nil {
		t.Fatal("a second MountSpecials was accepted")
	}
	if err := r.s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(mnt)); err != nil || len(ms) != 0 {
		t.Fatalf("after Shutdown: %v %v", ms, err)
	}
	if _, err := r.s.MountSpecials(SpecialOpts{Pts: SpecialOn}); err == nil {
		t.Fatal("MountSpecials after Shutdown was accepted")
	}
}
