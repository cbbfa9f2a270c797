package integration

// `devfsd helper` with a devfsd.conf, and the exec loader, over a real
// mount and a real socket; the helper and every program are separate
// processes. Nothing here sleeps to wait: each wait is on a condition
// with a deadline (until, waitLog), and cleanups stop every process they
// started, even when the test fails.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// confHelper is a running `devfsd helper`.
type confHelper struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    *harness.SyncBuffer
	exited chan struct{}
	err    error
}

// startConfHelper writes conf to a file and runs `devfsd helper -fg -v`
// on it against d, and waits until its start-up scan is done.
func startConfHelper(t *testing.T, d *ctlDaemon, conf string, args ...string) *confHelper {
	t.Helper()
	file := filepath.Join(t.TempDir(), "devfsd.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return startConfHelperFile(t, d, file, args...)
}

func startConfHelperFile(t *testing.T, d *ctlDaemon, file string, args ...string) *confHelper {
	t.Helper()
	h := &confHelper{t: t, log: &harness.SyncBuffer{}, exited: make(chan struct{})}
	all := append([]string{"helper", "-fg", "-v", "--log-format=json", "--config=" + file,
		"--socket=" + d.sock, "--mount=" + d.mnt}, args...)
	h.cmd = exec.Command(devfsdBin, all...)
	h.cmd.Dir = "/"
	h.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=0")
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		h.err = h.cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() {
		h.stop()
		if strings.Contains(h.log.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in devfsd helper")
		}
		if t.Failed() {
			t.Logf("devfsd helper output:\n%s", h.log.String())
		}
	})
	h.waitLog("the start-up scan", `"start-up scan done"`)
	return h
}

// stop sends SIGTERM (the helper kills the programs it runs), waits, and
// kills it if it does not go.
func (h *confHelper) stop() {
	select {
	case <-h.exited:
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(exitDeadline):
		h.t.Errorf("devfsd helper did not exit within %v of SIGTERM; killing it", exitDeadline)
		h.cmd.Process.Kill()
		<-h.exited
	}
}

// waitLog waits until the helper's log holds n lines containing s.
func (h *confHelper) waitLogN(what, s string, n int) {
	h.t.Helper()
	until(h.t, what, func() bool {
		select {
		case <-h.exited:
			h.t.Fatalf("devfsd helper exited (%v) before %s", h.err, what)
		default:
		}
		return strings.Count(h.log.String(), s) >= n
	})
}

func (h *confHelper) waitLog(what, s string) { h.t.Helper(); h.waitLogN(what, s, 1) }

// groupID is the host's gid of group name.
func groupID(t *testing.T, name string) uint32 {
	t.Helper()
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Skipf("no group %s on this host: %v", name, err)
	}
	id, _ := strconv.Atoi(g.Gid)
	return uint32(id)
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prog.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// processGone reports whether pid has exited (gone or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// killPidsFrom kills, at cleanup, every pid listed in file (whatever the
// test did): programs that a failing test would leave behind.
func killPidsFrom(t *testing.T, file string) {
	t.Cleanup(func() {
		b, _ := os.ReadFile(file)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// waitPidsGone waits for the pids listed in file to be written and then
// to be gone.
func waitPidsGone(t *testing.T, file string, n int) {
	t.Helper()
	var pids []int
	until(t, "the program's pids in "+file, func() bool {
		b, _ := os.ReadFile(file)
		pids = nil
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return len(pids) >= n
	})
	for _, pid := range pids {
		until(t, fmt.Sprintf("pid %d to be killed", pid), func() bool { return processGone(pid) })
	}
}

func statRdev(t *testing.T, p string) (os.FileInfo, uint32, uint32, uint32) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return st, unix.Major(sys.Rdev), unix.Minor(sys.Rdev), sys.Gid
}

// LOOKUP ^dsp$ MODLOAD: stat MNT/dsp succeeds through the built-in sound
// module, loaded by the helper (the daemon's own fallback is off), and a
// name no rule sends to MODLOAD stays missing.
func TestConfLookupModloadDsp(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	startConfHelper(t, d, "# OSS sound on demand\nLOOKUP ^dsp$ MODLOAD\n")

	st, major, minor, _ := statRdev(t, d.path("dsp"))
	if st.Mode()&os.ModeCharDevice == 0 || major != 14 || minor != 3 {
		t.Fatalf("dsp: %v %d:%d, want char 14:3", st.Mode(), major, minor)
	}
	// The whole module came with it.
	if _, ma, mi, _ := statRdev(t, d.path("mixer")); ma != 14 || mi != 0 {
		t.Errorf("mixer: %d:%d, want 14:0", ma, mi)
	}
	// No rule for loop0: the helper loads nothing, the lookup is ENOENT.
	if _, err := os.Stat(d.path("loop0")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("loop0 without a MODLOAD rule: %v, want ENOENT", err)
	}
}

// REGISTER ^tty.* PERMISSIONS root.tty 0620: every node registered under
// such a name gets that mode and group — those there at start (the
// start-up scan), those the helper's own MODLOAD registers (before the
// lookup that loaded them answers), and those others register.
func TestConfRegisterPermissionsTTY(t *testing.T) {
	tty := groupID(t, "tty")
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	// Registered before the helper starts, 0666 root:root.
	d.mustCtl(t, "register", "--mode", "0666", "ttyUSB0", "char", "188", "0")
	startConfHelper(t, d, "REGISTER ^tty.* PERMISSIONS root.tty 0620\nLOOKUP ^ttyS[0-9]+$ MODLOAD\n")

	check := func(name string) bool {
		st, err := os.Lstat(d.path(name))
		if err != nil {
			return false
		}
		return st.Mode().Perm() == 0o620 && st.Sys().(*syscall.Stat_t).Gid == tty && st.Sys().(*syscall.Stat_t).Uid == 0
	}
	for _, n := range []string{"ttyUSB0", "tty"} { // tty: the daemon's base set
		if !check(n) {
			st, _ := os.Lstat(d.path(n))
			t.Errorf("%s after the start-up scan: %v, want crw--w---- root:tty", n, st.Mode())
		}
	}
	// The serial module registers ttyS0-3 as 0660 dialout; the REGISTER
	// rules run before the lookup answers, so the first stat sees 0620.
	for _, n := range []string{"ttyS1", "ttyS3"} {
		if !check(n) {
			st, _ := os.Lstat(d.path(n))
			t.Errorf("%s loaded by MODLOAD: %v, want crw--w---- root:tty", n, st.Mode())
		}
	}
	// Someone else registers: the REGISTER event reaches the helper.
	d.mustCtl(t, "register", "--mode", "0666", "--gid", "0", "ttyACM0", "char", "166", "0")
	until(t, "ttyACM0 to become 0620 root:tty", func() bool { return check("ttyACM0") })
	// Other names are left alone.
	d.mustCtl(t, "register", "--mode", "0666", "other", "char", "1", "3")
	if st, err := d.c.Stat(t.Context(), "other"); err != nil || st.Mode != "0666" {
		t.Errorf("other: %+v, %v", st, err)
	}
}

// A chmod by root through the mount survives a restart of the daemon and
// the helper, through COPY and RESTORE, as do a node root made by hand
// (CREATE: saved with devfsd's sticky marker, made again by RESTORE) and
// a symlink.
func TestConfCopyRestoreSurvivesRestart(t *testing.T) {
	video := groupID(t, "video")
	state := filepath.Join(t.TempDir(), "dev-state")
	conf := fmt.Sprintf(`
REGISTER ^pt[sy] IGNORE
CHANGE   ^pt[sy] IGNORE
REGISTER .* COPY %[1]s/$devname $devpath
CREATE   .* COPY $devpath %[1]s/$devname
CHANGE   .* COPY $devpath %[1]s/$devname
DELETE   .* EXECUTE /bin/rm -f %[1]s/$devname
RESTORE  %[1]s
`, state)

	// First life.
	d1 := startCtl(t)
	h1 := startConfHelper(t, d1, conf)
	if err := os.Chmod(d1.path("zero"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d1.path("zero"), 0, int(video)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(d1.path("mine"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 7))); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("zero", d1.path("nothing")); err != nil {
		t.Fatal(err)
	}
	saved := func(name string, mode uint32, gid uint32) func() bool {
		return func() bool {
			var st unix.Stat_t
			return unix.Lstat(filepath.Join(state, name), &st) == nil && st.Mode == mode && st.Gid == gid
		}
	}
	until(t, "zero saved as crw-r----- root:video", saved("zero", unix.S_IFCHR|0o640, video))
	until(t, "mine saved with the sticky marker", saved("mine", unix.S_IFCHR|unix.S_ISVTX|0o600, 0))
	until(t, "the symlink saved", func() bool { t, err := os.Readlink(filepath.Join(state, "nothing")); return err == nil && t == "zero" })
	h1.stop()
	d1.stop()

	// Second life: a new daemon (zero is 0666 root:root again) and helper.
	d2 := startCtl(t)
	startConfHelper(t, d2, conf)
	st, major, minor, gid := statRdev(t, d2.path("zero"))
	if st.Mode().Perm() != 0o640 || gid != video || major != 1 || minor != 5 {
		t.Errorf("zero after the restart: %v gid %d %d:%d, want crw-r----- gid %d 1:5", st.Mode(), gid, major, minor, video)
	}
	st, major, minor, _ = statRdev(t, d2.path("mine"))
	if st.Mode()&os.ModeCharDevice == 0 || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSticky != 0 || major != 1 || minor != 7 {
		t.Errorf("mine after the restart: %v %d:%d, want crw------- 1:7 (no sticky bit in the mount)", st.Mode(), major, minor)
	}
	if tg, err := os.Readlink(d2.path("nothing")); err != nil || tg != "zero" {
		t.Errorf("the symlink after the restart: %q, %v", tg, err)
	}
	// Removing the made node removes its saved copy (DELETE ... rm -f).
	if err := os.Remove(d2.path("mine")); err != nil {
		t.Fatal(err)
	}
	until(t, "the saved copy of mine to go", func() bool {
		_, err := os.Lstat(filepath.Join(state, "mine"))
		return errors.Is(err, os.ErrNotExist)
	})
}

// An EXECUTE that hangs is killed (with what it started in its process
// group) at --exec-timeout, and the lookup waiting for it is answered
// then, long before the daemon's loader timeout; the helper goes on.
func TestConfExecuteHangIsKilledAtItsDeadline(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	killPidsFrom(t, pids)
	prog := writeScript(t, "sleep 1000 &\necho $$ $! > "+pids+"\nwait\n")
	d := startCtl(t, "--loader=none", "--negative-timeout=0s", "--loader-timeout=20s")
	startConfHelper(t, d, "LOOKUP ^hang$ EXECUTE "+prog+" $devname\nLOOKUP ^dsp$ MODLOAD\n", "--exec-timeout=500ms")

	start := time.Now()
	_, err := os.Stat(d.path("hang"))
	took := time.Since(start)
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat of the name whose EXECUTE hangs: %v, want ENOENT", err)
	}
	if took < 400*time.Millisecond || took > 10*time.Second {
		t.Errorf("the lookup was answered after %v; want about the 500ms exec deadline, well before the 20s loader timeout", took)
	}
	waitPidsGone(t, pids, 2)
	if _, err := os.Stat(d.path("dsp")); err != nil {
		t.Errorf("the helper after a killed EXECUTE: %v", err)
	}
}

// An EXECUTE that itself stats a missing name in the mount does not
// deadlock: the program is the helper's descendant, so its lookup sees
// the tree as it is instead of queueing behind the LOOKUP it serves.
func TestConfExecuteStatsMissingNameDoesNotDeadlock(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	d := startCtl(t, "--loader=none", "--negative-timeout=0s", "--loader-timeout=20s")
	prog := writeScript(t, `stat "$MNTPNT/not-there" >/dev/null 2>&1; echo "other=$?" > `+out+".tmp\n"+
		`echo "register-me" >> `+out+".tmp\nmv "+out+".tmp "+out+"\n")
	startConfHelper(t, d, "LOOKUP ^probe$ EXECUTE "+prog+"\n", "--exec-timeout=15s")

	start := time.Now()
	_, err := os.Stat(d.path("probe"))
	took := time.Since(start)
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat probe: %v, want ENOENT", err)
	}
	// A wait would last the 15 s exec deadline; 12 s leaves a loaded
	// machine room.
	if took > 12*time.Second {
		t.Errorf("the lookup took %v: the EXECUTE's own lookup waited (exec deadline 15s, loader 20s)", took)
	}
	b, err := os.ReadFile(out)
	if err != nil || !strings.HasPrefix(string(b), "other=1\n") {
		t.Errorf("the EXECUTE's stat of a missing name: %q, %v; want it to fail (ENOENT) and go on", b, err)
	}
}

// A malformed line is reported with file:line and the rest of the file
// still applies.
func TestConfMalformedLineRestApplies(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startConfHelper(t, d, "REGISTER ^a PERMISSIONS root.tty\nREGISTER ^x$ CFUNCTION /lib/libx.so f $devname\nLOOKUP ^dsp$ MODLOAD\n")
	h.waitLog("line 1 reported", `devfsd.conf:1: PERMISSIONS takes USER.GROUP and MODE`)
	h.waitLog("line 2 reported", `devfsd.conf:2: CFUNCTION /lib/libx.so f calls a function in a shared object`)
	if _, err := os.Stat(d.path("dsp")); err != nil {
		t.Errorf("line 3 after two bad lines: %v", err)
	}
}

// SIGHUP reloads: a configuration that reads replaces the old one; one
// that cannot be read keeps it.
func TestConfSighupReload(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	file := filepath.Join(t.TempDir(), "devfsd.conf")
	if err := os.WriteFile(file, []byte("LOOKUP ^nothing$ MODLOAD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startConfHelperFile(t, d, file)
	if _, err := os.Stat(d.path("dsp")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("dsp before the reload: %v", err)
	}
	if err := os.WriteFile(file, []byte("LOOKUP ^dsp$ MODLOAD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.cmd.Process.Signal(syscall.SIGHUP)
	h.waitLogN("the second start-up scan", `"start-up scan done"`, 2)
	if _, err := os.Stat(d.path("dsp")); err != nil {
		t.Fatalf("dsp after the reload: %v", err)
	}
	// A configuration that cannot be read (it includes itself, without
	// end) keeps the one in force. (A missing INCLUDE does not make it
	// unreadable: that line is left out and the rest loads.)
	if err := os.WriteFile(file, []byte("INCLUDE "+file+"\nLOOKUP ^kvm$ MODLOAD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.cmd.Process.Signal(syscall.SIGHUP)
	h.waitLog("the failed reload", `reload failed; the old configuration stays`)
	if _, err := os.Stat(d.path("kvm")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("kvm from a configuration that failed to load: %v", err)
	}
	if _, err := os.Stat(d.path("audio")); err != nil {
		t.Errorf("the old configuration after a failed reload: %v", err)
	}
}

// Without -fg the helper puts itself in the background and returns only
// once its start-up scan is done; -np runs the scan and exits.
func TestConfBackgroundAndNoPolling(t *testing.T) {
	tty := groupID(t, "tty")
	d := startCtl(t, "--loader=none")
	dir := t.TempDir()
	file := filepath.Join(dir, "devfsd.conf")
	if err := os.WriteFile(file, []byte("REGISTER ^null$ PERMISSIONS root.tty 0620\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// -np: nothing attaches; the scan's change is made and it exits 0.
	out, err := exec.Command(devfsdBin, "helper", "-np", "--config="+file, "--socket="+d.sock, "--mount="+d.mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("helper -np: %v\n%s", err, out)
	}
	if st, err := d.c.Stat(t.Context(), "null"); err != nil || st.Mode != "0620" || st.Gid != tty {
		t.Fatalf("null after helper -np: %+v, %v", st, err)
	}
	if s, err := d.c.Stats(t.Context()); err != nil || s.Helper.Attached {
		t.Fatalf("helper -np attached: %+v, %v", s.Helper, err)
	}
	// In the background.
	if err := os.WriteFile(file, []byte("LOOKUP ^dsp$ MODLOAD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(devfsdBin, "helper", "--config="+file, "--socket="+d.sock, "--mount="+d.mnt)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	logf, err := os.Create(filepath.Join(dir, "helper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper in the background: %v", err)
	}
	s, err := d.c.Stats(t.Context())
	if err != nil || !s.Helper.Attached || s.Helper.Pid == 0 {
		t.Fatalf("after the parent returned, no helper is attached: %+v, %v", s.Helper, err)
	}
	pid := int(s.Helper.Pid)
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGTERM)
		until(t, "the background helper to exit", func() bool { return processGone(pid) })
	})
	if pid == cmd.Process.Pid {
		t.Errorf("the attached helper is the parent, pid %d", pid)
	}
	if _, err := os.Stat(d.path("dsp")); err != nil {
		t.Errorf("dsp through the background helper: %v", err)
	}
}

// The exec loader (loader: exec) runs its program per miss: what it
// prints is registered, its exit is done, and its descriptors hold no
// FUSE device.
func TestExecLoaderRegistersWhatItPrints(t *testing.T) {
	fds := filepath.Join(t.TempDir(), "fds")
	prog := writeScript(t, fmt.Sprintf(`
ls -l /proc/$$/fd > %s
[ "$ACTION" = lookup ] && [ "$DEVNAME" = "$1" ] && [ "$DEVPATH" = "$MNTPNT/$1" ] || exit 2
case "$1" in
widget) echo "loading widget"; echo "register char widget 10 200 0660 0 0" ;;
*) exit 1 ;;
esac
`, fds))
	d := startCtl(t, "--loader=exec", "--exec-program="+prog, "--exec-timeout=5s", "--negative-timeout=0s")
	st, major, minor, _ := statRdev(t, d.path("widget"))
	if st.Mode()&os.ModeCharDevice == 0 || st.Mode().Perm() != 0o660 || major != 10 || minor != 200 {
		t.Fatalf("widget: %v %d:%d", st.Mode(), major, minor)
	}
	if _, err := os.Stat(d.path("gadget")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("gadget (exit 1): %v, want ENOENT", err)
	}
	b, err := os.ReadFile(fds)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[len(f)-2] != "->" {
			continue
		}
		// dash keeps its own descriptors (the script, saved ones) at 10
		// and above; anything from 3 to 9 was inherited.
		n, _ := strconv.Atoi(f[len(f)-3])
		if (n > 2 && n < 10) || strings.Contains(l, "fuse") {
			t.Errorf("the exec loader's program has descriptor %s", strings.Join(f[len(f)-3:], " "))
		}
	}
}

// The exec loader kills a program that hangs, with its process group, at
// exec_timeout, and the lookup is answered then.
func TestExecLoaderKillsAtDeadline(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	killPidsFrom(t, pids)
	prog := writeScript(t, "sleep 1000 &\necho $$ $! > "+pids+"\nwait\n")
	d := startCtl(t, "--loader=exec", "--exec-program="+prog, "--exec-timeout=500ms", "--loader-timeout=20s")
	start := time.Now()
	_, err := os.Stat(d.path("hang"))
	took := time.Since(start)
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat hang: %v, want ENOENT", err)
	}
	if took < 400*time.Millisecond || took > 10*time.Second {
		t.Errorf("answered after %v; want about the 500ms exec deadline", took)
	}
	waitPidsGone(t, pids, 2)
}

// The exec loader's program may stat names in the mount, even missing
// ones, without waiting on the loader or starting a load: its process
// group bypasses the loader, so only the name it was run for was loaded.
func TestExecLoaderProgramLookupsBypass(t *testing.T) {
	dir := t.TempDir()
	out, runs := filepath.Join(dir, "out"), filepath.Join(dir, "runs")
	prog := writeScript(t, fmt.Sprintf(`
echo "$1" >> %s
[ "$1" = probe ] || exit 1
stat "$MNTPNT/not-there" >/dev/null 2>&1; a=$?
echo "register char probe 1 3"
echo "other=$a" > %s
`, runs, out))
	d := startCtl(t, "--loader=exec", "--exec-program="+prog, "--exec-timeout=15s", "--loader-timeout=20s")
	start := time.Now()
	if _, err := os.Stat(d.path("probe")); err != nil {
		t.Fatalf("stat probe: %v", err)
	}
	if took := time.Since(start); took > 12*time.Second { // a wait lasts the 15 s exec deadline
		t.Errorf("the load took %v: its program's lookup waited on the loader", took)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "other=1\n" {
		t.Errorf("the program's stat of a missing name: %q, %v", b, err)
	}
	if b, err := os.ReadFile(runs); err != nil || string(b) != "probe\n" {
		t.Errorf("programs run: %q, %v; want only probe (the program's own lookup must not load)", b, err)
	}
}

// Gentoo's and Gooch's sample lines: CFUNCTION GLOBAL mksymlink and
// unlink make and remove links relative to the mount (devfsd ran in its
// mount point), and an INCLUDE of a directory that is not there is
// reported with its file and line while the rest of the file runs.
func TestConfGlobalFunctionsAndMissingInclude(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startConfHelper(t, d, "REGISTER ^tts/0$ CFUNCTION GLOBAL mksymlink $devname modem\n"+
		"INCLUDE /etc/devfs.d-"+strconv.Itoa(os.Getpid())+"-not-there\n"+
		"REGISTER ^cdroms/cdrom0$ CFUNCTION GLOBAL mksymlink $devname misc/cdrom\n"+
		"UNREGISTER ^tts/0$ CFUNCTION GLOBAL unlink modem\n")
	h.waitLog("the missing INCLUDE", `devfsd.conf:2: INCLUDE /etc/devfs.d-`)
	d.mustCtl(t, "register", "tts/0", "char", "4", "64")
	d.mustCtl(t, "register", "cdroms/cdrom0", "block", "11", "0")
	until(t, "modem -> tts/0", func() bool { tg, err := os.Readlink(d.path("modem")); return err == nil && tg == "tts/0" })
	// mksymlink makes the parent directories.
	until(t, "misc/cdrom", func() bool {
		tg, err := os.Readlink(d.path("misc/cdrom"))
		return err == nil && tg == "cdroms/cdrom0"
	})
	d.mustCtl(t, "unregister", "tts/0")
	until(t, "modem to go", func() bool { _, err := os.Lstat(d.path("modem")); return errors.Is(err, os.ErrNotExist) })
}
