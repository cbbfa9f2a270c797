package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

// The mount comes up, says READY=1 only once live (start checks), and
// holds the base set with its catalogue attributes.
func TestMountReadyWithBaseSet(t *testing.T) {
	d := start(t, opts{})
	chr := func(name string, major, minor uint32) {
		st := lstat(t, d.path(name))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != major || unix.Minor(st.Rdev) != minor {
			t.Errorf("%s: mode %o rdev %d:%d, want char %d:%d", name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), major, minor)
		}
	}
	chr("null", 1, 3)
	chr("zero", 1, 5)
	chr("full", 1, 7)
	chr("random", 1, 8)
	chr("urandom", 1, 9)
	chr("kmsg", 1, 11)
	chr("tty", 5, 0)
	chr("console", 5, 1)
	chr("ptmx", 5, 2)
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "fd/0", "stdout": "fd/1", "stderr": "fd/2"} {
		got, err := os.Readlink(d.path(name))
		if err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, target)
		}
	}
	for _, dir := range []string{"pts", "shm"} {
		if st := lstat(t, d.path(dir)); st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("%s: mode %o, want a directory", dir, st.Mode)
		}
	}
	if st := lstat(t, d.path("shm")); st.Mode&07777 != 01777 {
		t.Errorf("shm: mode %o, want 1777", st.Mode&07777)
	}
}

// The mount has the dev option: device nodes open the real drivers.
func TestDeviceNodesOpenTheirDrivers(t *testing.T) {
	d := start(t, opts{})
	f, err := os.Open(d.path("urandom"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := f.Read(buf)
	f.Close()
	if err != nil || n != 16 || bytes.Equal(buf, make([]byte, 16)) {
		t.Fatalf("read urandom: %d %v %x", n, err, buf)
	}
	if err := os.WriteFile(d.path("null"), []byte("into the void"), 0); err != nil {
		t.Fatalf("write null: %v", err)
	}
	z, err := os.Open(d.path("zero"))
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if n, err := z.Read(buf); err != nil || n != 16 || !bytes.Equal(buf, make([]byte, 16)) {
		t.Fatalf("read zero: %d %v %x", n, err, buf)
	}
}

// A miss loads the module that provides the name; a name no module
// provides is ENOENT.
func TestMissLoadsModule(t *testing.T) {
	d := start(t, opts{})
	st := lstat(t, d.path("loop3"))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != 7 || unix.Minor(st.Rdev) != 3 {
		t.Fatalf("loop3: mode %o rdev %d:%d, want block 7:3", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	// The module registered its siblings; the kernel hears of them.
	if st := lstat(t, d.path("loop-control")); st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("loop-control: mode %o", st.Mode)
	}
	var st2 unix.Stat_t
	if err := unix.Lstat(d.path("no-such-device"), &st2); err != unix.ENOENT {
		t.Fatalf("stat of a name no module provides: %v, want ENOENT", err)
	}
	if err := unix.Lstat(d.path("net/tun"), &st2); err != nil || unix.Major(st2.Rdev) != 10 || unix.Minor(st2.Rdev) != 200 {
		t.Fatalf("net/tun: %v %d:%d", err, unix.Major(st2.Rdev), unix.Minor(st2.Rdev))
	}
}

// Namespace and file operations through the mount, as on tmpfs.
func TestOperationsThroughMount(t *testing.T) {
	d := start(t, opts{args: []string{"--entry-timeout=0", "--attr-timeout=0", "--max-file-size=1MiB"}})
	p := d.path
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("mkdir", unix.Mkdir(p("dir"), 0o750))
	must("mknod char", unix.Mknod(p("dir/mychar"), unix.S_IFCHR|0o640, int(unix.Mkdev(1, 3))))
	must("mknod fifo", unix.Mknod(p("dir/fifo"), unix.S_IFIFO|0o600, 0))
	must("symlink", unix.Symlink("mychar", p("dir/link")))
	must("link", unix.Link(p("dir/mychar"), p("hard")))
	if st := lstat(t, p("hard")); st.Nlink != 2 || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("hard link: nlink %d rdev %d:%d", st.Nlink, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if st := lstat(t, p("dir")); st.Nlink != 2 {
		t.Errorf("dir nlink %d, want 2", st.Nlink)
	}
	must("mkdir sub", unix.Mkdir(p("dir/sub"), 0o755))
	if st := lstat(t, p("dir")); st.Nlink != 3 {
		t.Errorf("dir nlink %d after a subdirectory, want 3", st.Nlink)
	}
	must("rename", unix.Rename(p("dir/mychar"), p("dir/renamed")))
	if err := unix.Lstat(p("dir/mychar"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Errorf("old name after rename: %v", err)
	}
	must("renameat2 noreplace", unix.Renameat2(unix.AT_FDCWD, p("dir/renamed"), unix.AT_FDCWD, p("dir/again"), unix.RENAME_NOREPLACE))
	if err := unix.Renameat2(unix.AT_FDCWD, p("dir/again"), unix.AT_FDCWD, p("hard"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Errorf("RENAME_NOREPLACE onto a name: %v, want EEXIST", err)
	}
	must("renameat2 exchange", unix.Renameat2(unix.AT_FDCWD, p("dir/fifo"), unix.AT_FDCWD, p("dir/link"), unix.RENAME_EXCHANGE))
	if st := lstat(t, p("dir/fifo")); st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("after exchange dir/fifo is %o, want the symlink", st.Mode)
	}
	must("chmod", unix.Chmod(p("hard"), 0o604))
	must("chown", unix.Lchown(p("hard"), 1234, 5678))
	if st := lstat(t, p("hard")); st.Mode&07777 != 0o604 || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("after chmod/chown: mode %o owner %d:%d", st.Mode&07777, st.Uid, st.Gid)
	}
	// A regular file: write, read back, truncate.
	must("write", os.WriteFile(p("dir/file"), []byte("hello, devfs"), 0o644))
	data, err := os.ReadFile(p("dir/file"))
	if err != nil || string(data) != "hello, devfs" {
		t.Fatalf("read back %q %v", data, err)
	}
	must("truncate", unix.Truncate(p("dir/file"), 5))
	if data, _ := os.ReadFile(p("dir/file")); string(data) != "hello" {
		t.Errorf("after truncate %q", data)
	}
	if err := unix.Truncate(p("dir/file"), 1<<40); err != unix.EFBIG {
		t.Errorf("truncate past --max-file-size: %v, want EFBIG", err)
	}
	f, err := os.OpenFile(p("dir/file"), os.O_WRONLY|os.O_APPEND, 0)
	must("open append", err)
	_, err = f.WriteString(", world")
	must("append", err)
	f.Close()
	if data, _ := os.ReadFile(p("dir/file")); string(data) != "hello, world" {
		t.Errorf("after append %q", data)
	}
	// set-user-id is cleared by a write from a non-root user, and by chown.
	must("chmod suid", unix.Chmod(p("dir/file"), 0o4777))
	must("chown suid", unix.Chown(p("dir/file"), 1000, 1000))
	if st := lstat(t, p("dir/file")); st.Mode&unix.S_ISUID != 0 {
		t.Errorf("chown kept set-user-id: %o", st.Mode)
	}
	// Removals.
	must("unlink", unix.Unlink(p("hard")))
	if st := lstat(t, p("dir/again")); st.Nlink != 1 {
		t.Errorf("nlink after unlinking the other name: %d", st.Nlink)
	}
	if err := unix.Rmdir(p("dir")); err != unix.ENOTEMPTY {
		t.Errorf("rmdir of a non-empty dir: %v", err)
	}
	must("rmdir", unix.Rmdir(p("dir/sub")))
	for _, n := range []string{"again", "fifo", "link", "file"} {
		must("unlink "+n, unix.Unlink(p("dir/"+n)))
	}
	must("rmdir", unix.Rmdir(p("dir")))
	if err := unix.Lstat(p("dir"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Errorf("removed dir: %v", err)
	}
}

// Mode 0000 is reported as 0000: nobody rewrites permissions.
func TestMode0000StaysZero(t *testing.T) {
	d := start(t, opts{})
	if err := unix.Mknod(d.path("zero-mode"), unix.S_IFREG, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(d.path("zero-mode"), 0); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, d.path("zero-mode")); st.Mode != unix.S_IFREG {
		t.Fatalf("mode %o, want 0100000", st.Mode)
	}
	if err := unix.Mkdir(d.path("zero-dir"), 0); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, d.path("zero-dir")); st.Mode != unix.S_IFDIR {
		t.Fatalf("dir mode %o, want 040000", st.Mode)
	}
}

// Names over 255 bytes are ENAMETOOLONG in every operation.
func TestNameTooLong(t *testing.T) {
	d := start(t, opts{})
	long := strings.Repeat("x", 256)
	ok255 := strings.Repeat("y", 255)
	if err := unix.Mknod(d.path(ok255), unix.S_IFREG|0o644, 0); err != nil {
		t.Fatalf("255-byte name: %v", err)
	}
	for what, err := range map[string]error{
		"stat":    unix.Lstat(d.path(long), new(unix.Stat_t)),
		"mknod":   unix.Mknod(d.path(long), unix.S_IFREG|0o644, 0),
		"mkdir":   unix.Mkdir(d.path(long), 0o755),
		"symlink": unix.Symlink("null", d.path(long)),
		"link":    unix.Link(d.path("null"), d.path(long)),
		"rename":  unix.Rename(d.path(ok255), d.path(long)),
		"unlink":  unix.Unlink(d.path(long)),
		"rmdir":   unix.Rmdir(d.path(long)),
		"open":    func() error { _, err := unix.Open(d.path(long), unix.O_CREAT|unix.O_WRONLY, 0o644); return err }(),
	} {
		if err != unix.ENAMETOOLONG {
			t.Errorf("%s of a 256-byte name: %v, want ENAMETOOLONG", what, err)
		}
	}
}

// STATFS reports a real name limit and block and file figures.
func TestStatfs(t *testing.T) {
	d := start(t, opts{})
	var st unix.Statfs_t
	if err := unix.Statfs(d.mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Namelen != 255 || st.Bsize == 0 || st.Blocks == 0 || st.Files == 0 || st.Ffree == 0 || st.Ffree >= st.Files {
		t.Fatalf("statfs %+v", st)
	}
}

// readdir lists "." and ".." first, with the right inode numbers.
func TestReaddirDotAndDotDot(t *testing.T) {
	for _, rdp := range []string{"never", "always", "auto"} {
		t.Run(rdp, func(t *testing.T) {
			d := start(t, opts{args: []string{"--readdirplus=" + rdp}})
			if err := unix.Mkdir(d.path("sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mknod(d.path("sub/a"), unix.S_IFREG|0o644, 0); err != nil {
				t.Fatal(err)
			}
			names, inos := readdirRaw(t, d.path("sub"))
			if len(names) != 3 || names[0] != "." || names[1] != ".." || names[2] != "a" {
				t.Fatalf("entries %q", names)
			}
			if self := lstat(t, d.path("sub")); inos[0] != self.Ino {
				t.Errorf(". has ino %d, want %d", inos[0], self.Ino)
			}
			if parent := lstat(t, d.mnt); inos[1] != parent.Ino {
				t.Errorf(".. has ino %d, want %d", inos[1], parent.Ino)
			}
			root, _ := readdirRaw(t, d.mnt)
			for _, want := range []string{".", "..", "null", "pts", "shm", "sub"} {
				found := false
				for _, n := range root {
					found = found || n == want
				}
				if !found {
					t.Errorf("root listing %q lacks %q", root, want)
				}
			}
		})
	}
}

// readdirRaw lists dir with getdents64, keeping "." and "..".
func readdirRaw(t *testing.T, dir string) (names []string, inos []uint64) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		for off := 0; off < n; {
			// struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name
			ino := *(*uint64)(unsafePointer(&buf[off]))
			reclen := int(buf[off+16]) | int(buf[off+17])<<8
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			names = append(names, string(name))
			inos = append(inos, ino)
			off += reclen
		}
	}
}

// An unlinked file that is still open stays readable (and writable).
func TestUnlinkedOpenFileReadable(t *testing.T) {
	d := start(t, opts{})
	p := d.path("shm/tmpfile")
	if err := os.WriteFile(p, []byte("still here"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("name still there: %v", err)
	}
	buf := make([]byte, 32)
	n, err := f.ReadAt(buf, 0)
	if string(buf[:n]) != "still here" {
		t.Fatalf("read %q (%v) from the unlinked file", buf[:n], err)
	}
	if _, err := f.WriteAt([]byte("STILL"), 0); err != nil {
		t.Fatal(err)
	}
	n, _ = f.ReadAt(buf, 0)
	if string(buf[:n]) != "STILL here" {
		t.Fatalf("read %q after a write to the unlinked file", buf[:n])
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 {
		t.Fatalf("fstat of the unlinked file: nlink %d, %v", st.Nlink, err)
	}
}

// SIGTERM while 100 goroutines look names up (present, loadable, missing)
// unmounts cleanly within 5 s.
func TestSIGTERMDuringConcurrentLookups(t *testing.T) {
	d := start(t, opts{args: []string{"--entry-timeout=0", "--attr-timeout=0", "--negative-timeout=0"}})
	var started sync.WaitGroup
	var stop atomic.Bool
	var ops atomic.Int64
	var wg sync.WaitGroup
	names := []string{"null", "zero", "tty5", "ttyS1", "sda", "nope", "input/event3", "missing/x"}
	for i := 0; i < 100; i++ {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for !stop.Load() {
				var st unix.Stat_t
				unix.Lstat(d.path(names[i%len(names)]), &st)
				ops.Add(1)
				if first {
					started.Done()
					first = false
				}
			}
		}()
	}
	started.Wait()
	begin := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		stop.Store(true)
		t.Fatalf("devfsd still running 5s after SIGTERM")
	}
	took := time.Since(begin)
	stop.Store(true)
	wg.Wait()
	if d.err != nil {
		t.Errorf("devfsd exit after SIGTERM: %v", d.err)
	}
	if mounted(t, d.mnt) {
		t.Fatalf("still mounted after devfsd exited")
	}
	if !strings.Contains(d.out.String(), `"msg":"unmounted"`) {
		t.Errorf("no clean unmount in the log")
	}
	t.Logf("%d lookups; stopped %v after SIGTERM", ops.Load(), took)
}

// A stat killed while it waits on a slow loader ends at once (the kernel
// sends INTERRUPT, the lookup answers EINTR), and the daemon stays
// healthy: the load completes for later callers, other names still work.
func TestKilledStatLeavesDaemonHealthy(t *testing.T) {
	const delay = 3 * time.Second
	d := start(t, opts{env: []string{"DEVFSD_TEST_LOADER_DELAY=" + delay.String()}})
	statBin, err := exec.LookPath("stat")
	if err != nil {
		t.Skip("no stat(1)")
	}
	cmd := exec.Command(statBin, d.path("loop5"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Wait until the stat is blocked in the kernel waiting for our answer.
	if !harness.Poll(delay, time.Millisecond, func() bool { return blockedInFUSE(cmd.Process.Pid) }) {
		t.Fatal("stat never blocked on the lookup")
	}
	killed := time.Now()
	cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(delay - 500*time.Millisecond):
		t.Fatal("killed stat did not exit before the load finished: INTERRUPT was not honoured")
	}
	t.Logf("killed stat exited %v after SIGKILL", time.Since(killed))
	if !d.alive() {
		t.Fatal("devfsd died")
	}
	var st unix.Stat_t
	if err := unix.Lstat(d.path("null"), &st); err != nil {
		t.Fatalf("stat null after the kill: %v", err)
	}
	// The interrupted load still completes: loop5 appears.
	if err := unix.Lstat(d.path("loop5"), &st); err != nil || unix.Major(st.Rdev) != 7 || unix.Minor(st.Rdev) != 5 {
		t.Fatalf("loop5 after the killed stat: %v %d:%d", err, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
}

// blockedInFUSE reports whether pid sleeps in the kernel waiting for a
// FUSE reply.
func blockedInFUSE(pid int) bool {
	wchan, err := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
	if err != nil {
		return false
	}
	w := string(wchan)
	return strings.Contains(w, "request_wait_answer") || strings.Contains(w, "fuse")
}

// The kernel's negative cache is invalidated when a name is registered
// outside FUSE: with a 10 s negative timeout, a miss is cached, the
// daemon registers the name, and the next stat sees it at once; an
// unregistration is seen at once too, with a 10 s entry timeout; and so
// is a registration of a name removed through the mount (unlink, rmdir,
// rename).
func TestRegisterInvalidatesKernelNegativeCache(t *testing.T) {
	d := start(t, opts{hooks: true, args: []string{"--negative-timeout=10s", "--entry-timeout=10s", "--attr-timeout=10s"}})
	var st unix.Stat_t
	for i := 0; i < 2; i++ { // the second one is served from the kernel's negative dentry
		if err := unix.Lstat(d.path("x"), &st); err != unix.ENOENT {
			t.Fatalf("stat x before registration: %v, want ENOENT", err)
		}
	}
	d.hook("register char x 1 3 0666", "register char sub/y 1 5")
	if err := unix.Lstat(d.path("x"), &st); err != nil {
		t.Fatalf("stat x right after registration: %v", err)
	}
	if unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 || st.Mode != unix.S_IFCHR|0o666 {
		t.Fatalf("x: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := unix.Lstat(d.path("sub/y"), &st); err != nil {
		t.Fatalf("stat sub/y: %v", err)
	}
	d.hook("unregister x", "unregister sub")
	if err := unix.Lstat(d.path("x"), &st); err != unix.ENOENT {
		t.Fatalf("stat x right after unregistration: %v, want ENOENT", err)
	}
	if err := unix.Lstat(d.path("sub/y"), &st); err != unix.ENOENT {
		t.Fatalf("stat sub/y right after unregistering sub: %v, want ENOENT", err)
	}
	// And again: registered after its unregistration, seen at once.
	d.hook("register symlink x null")
	if target, err := os.Readlink(d.path("x")); err != nil || target != "null" {
		t.Fatalf("readlink x: %q %v", target, err)
	}
	// Names removed through the mount, which the kernel may keep as
	// negative entries, then registered: seen at once.
	for _, step := range []func() error{
		func() error { return unix.Mknod(d.path("made"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) },
		func() error { return unix.Unlink(d.path("made")) },
		func() error { return unix.Mkdir(d.path("madedir"), 0o755) },
		func() error { return unix.Rmdir(d.path("madedir")) },
		func() error { return unix.Mknod(d.path("from"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) },
		func() error { return unix.Rename(d.path("from"), d.path("to")) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"made", "madedir", "from"} {
		for i := 0; i < 2; i++ {
			if err := unix.Lstat(d.path(name), &st); err != unix.ENOENT {
				t.Fatalf("stat %s once removed: %v, want ENOENT", name, err)
			}
		}
		d.hook("register char " + name + " 1 7")
		if err := unix.Lstat(d.path(name), &st); err != nil || unix.Minor(st.Rdev) != 7 {
			t.Fatalf("stat %s right after its registration: %v (minor %d)", name, err, unix.Minor(st.Rdev))
		}
	}
}

// A write by a user without CAP_FSETID clears set-user-id and
// set-group-id (the kernel asks with a SETATTR, the server applies it).
func TestWriteClearsSetuid(t *testing.T) {
	d := start(t, opts{})
	p := d.path("shm/suid")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, 0o6777); err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cmd := exec.Command(sh, "-c", `echo more >> "$1"`, "sh", p)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write as nobody: %v %s", err, out)
	}
	if st := lstat(t, p); st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 || st.Size != 6 {
		t.Fatalf("after a write by nobody: mode %o size %d, want set-id bits cleared", st.Mode, st.Size)
	}
}

// Times: a change to a directory's entries moves its mtime and ctime; a
// chmod moves the node's ctime and not its mtime; a write moves both.
func TestTimesMove(t *testing.T) {
	d := start(t, opts{args: []string{"--attr-timeout=0", "--entry-timeout=0"}})
	if err := unix.Mkdir(d.path("t"), 0o755); err != nil {
		t.Fatal(err)
	}
	past := []unix.Timespec{{Sec: 1000}, {Sec: 1000}}
	reset := func(p string) {
		t.Helper()
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, past, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	reset(d.path("t"))
	before := lstat(t, d.path("t"))
	if err := unix.Mknod(d.path("t/f"), unix.S_IFREG|0o644, 0); err != nil {
		t.Fatal(err)
	}
	after := lstat(t, d.path("t"))
	if after.Mtim.Sec == 1000 || after.Ctim == before.Ctim {
		t.Errorf("mknod did not move the parent's times: mtime %v ctime %v -> %v", after.Mtim, before.Ctim, after.Ctim)
	}
	reset(d.path("t/f"))
	f0 := lstat(t, d.path("t/f"))
	if err := unix.Chmod(d.path("t/f"), 0o600); err != nil {
		t.Fatal(err)
	}
	f1 := lstat(t, d.path("t/f"))
	if f1.Mtim.Sec != 1000 || f1.Ctim == f0.Ctim {
		t.Errorf("chmod: mtime %v (want 1000), ctime %v -> %v", f1.Mtim, f0.Ctim, f1.Ctim)
	}
	if err := os.WriteFile(d.path("t/f"), []byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if f2 := lstat(t, d.path("t/f")); f2.Mtim.Sec == 1000 || f2.Ctim == f1.Ctim {
		t.Errorf("write: mtime %v ctime %v", f2.Mtim, f2.Ctim)
	}
	reset(d.path("t"))
	if err := unix.Unlink(d.path("t/f")); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, d.path("t")); st.Mtim.Sec == 1000 {
		t.Errorf("unlink did not move the parent's mtime")
	}
}
