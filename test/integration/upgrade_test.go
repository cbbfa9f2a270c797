package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/killtest"
)

// Issue 19's must-show for upgrades: `devfsd ctl upgrade` 20 times in a
// row while 8 workers use the main mount and a view (stat of existing and
// missing names, readdir, mknod+unlink, open of null): no call fails, none
// takes longer than 2 s, each upgrade's successor is a new process and
// its predecessor exits, the view and the specials stay mounted, inode
// numbers stay, and at the end what the kernel shows (getdents and lstat
// through both mounts) is what GET /v1/list says.
func TestUpgradeUnderLoad(t *testing.T) {
	vmnt := viewDir(t, "v")
	vfile := writeFile(t, t.TempDir(), "v.yaml", fmt.Sprintf("mountpoint: %s\nallow: [null, zero, full, \"u-*\"]\n", vmnt))
	d := startCtl(t, "--view="+vfile, "--views-dir="+filepath.Dir(vmnt))
	cur := &currentDaemon{pid: d.cmd.Process.Pid}
	t.Cleanup(func() { cur.stop(t, d.mnt) }) // before the harness's: the last successor
	drainReady(t, d.ready)

	var null0 unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, "null"), &null0); err != nil {
		t.Fatal(err)
	}
	ld := startLoad(d.mnt, vmnt, 8)
	defer ld.stop()

	const upgrades = 20
	var pauses []float64
	for i := 0; i < upgrades; i++ {
		// Each upgrade comes under load: the workers made progress since
		// the last one.
		from := ld.ops.Load()
		until(t, "the workers' progress", func() bool { return ld.ops.Load() >= from+200 })
		out := d.mustCtl(t, "upgrade", "--json")
		var res wire.Upgrade
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("upgrade %d: %v: %q", i, err, out)
		}
		if res.OldPid != cur.get() || res.NewPid == res.OldPid || res.NewPid <= 0 || res.Mounts != 2 {
			t.Fatalf("upgrade %d: %+v; want the running pid %d replaced, 2 mounts", i, res, cur.get())
		}
		if !exitsWithin(res.OldPid, condDeadline) {
			t.Fatalf("upgrade %d: the old daemon %d did not exit", i, res.OldPid)
		}
		cur.set(res.NewPid)
		pauses = append(pauses, res.PauseMs)
		if !mounted(t, d.mnt) || !mounted(t, vmnt) {
			t.Fatalf("upgrade %d: a mount is gone", i)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(vmnt, "null"), &st); err != nil || st.Ino != null0.Ino {
			t.Fatalf("upgrade %d: null in the view: ino %d, %v; want %d", i, st.Ino, err, null0.Ino)
		}
	}
	from := ld.ops.Load()
	until(t, "the workers' progress after the last upgrade", func() bool { return ld.ops.Load() >= from+200 })
	rep := ld.stop()

	t.Logf("%d upgrades; pause (stop to serving) median %.1f ms, max %.1f ms; %d calls %v, longest %v",
		upgrades, median(pauses), maxOf(pauses), ld.ops.Load(), rep.calls, rep.longest)
	for _, f := range rep.failures {
		t.Errorf("failed call: %s", f)
	}
	if rep.longest > 2*time.Second {
		t.Errorf("a call took %v, more than 2 s: %v", rep.longest, rep.slow)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, "null"), &st); err != nil || st.Ino != null0.Ino {
		t.Errorf("null after the upgrades: ino %d, %v; want %d", st.Ino, err, null0.Ino)
	}
	for _, sp := range []string{"pts", "shm"} { // the view hides them
		if !mounted(t, filepath.Join(d.mnt, sp)) {
			t.Errorf("%s is not mounted after the upgrades", sp)
		}
	}

	// The kernel's view against the namespace's.
	c := client.New(d.sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	l, err := c.List(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range killtest.Compare(l, d.mnt, nil) {
		t.Errorf("main mount: %s", m)
	}
	for _, m := range killtest.Compare(l, vmnt, []string{"null", "zero", "full", "u-*"}) {
		t.Errorf("view: %s", m)
	}
}

// currentDaemon is the pid of the daemon that serves now.
type currentDaemon struct {
	mu  sync.Mutex
	pid int
}

func (c *currentDaemon) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pid
}

func (c *currentDaemon) set(pid int) {
	c.mu.Lock()
	c.pid = pid
	c.mu.Unlock()
}

// stop ends the current daemon: SIGTERM, which unmounts, then SIGKILL if
// it hangs; then any other devfsd still serving mnt (a successor an
// upgrade that failed left behind), which is an error.
func (c *currentDaemon) stop(t *testing.T, mnt string) {
	term := func(pid int) {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return // gone already
		}
		defer unix.Close(fd)
		unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
		if !pidfdExits(fd, exitDeadline) {
			t.Errorf("the daemon %d did not exit within %v of SIGTERM; killing it", pid, exitDeadline)
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			pidfdExits(fd, exitDeadline)
		}
	}
	term(c.get())
	for _, pid := range devfsdServing(mnt) {
		t.Errorf("devfsd %d still serves %s; stopping it", pid, mnt)
		term(pid)
	}
}

// devfsdServing lists the devfsd processes whose command line names mnt.
func devfsdServing(mnt string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && args[0] == devfsdBin && args[1] == "mount" && slices.Contains(args, mnt) {
			out = append(out, pid)
		}
	}
	return out
}

// exitsWithin reports whether process pid ends within d.
func exitsWithin(pid int, d time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	return pidfdExits(fd, d)
}

func pidfdExits(fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 1
	}
}

// load is the workers of TestUpgradeUnderLoad.
type load struct {
	ops  atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu       sync.Mutex
	calls    map[string]int
	failures []string
	slow     []string
	longest  time.Duration
}

type loadReport struct {
	calls    map[string]int
	failures []string
	slow     []string
	longest  time.Duration
}

// startLoad starts n workers: each does, in turn, lstat of an existing
// name, lstat of a missing one, a readdir, a mknod and its unlink, and an
// open of null, the first three through the view for every other worker.
func startLoad(mnt, view string, n int) *load {
	ld := &load{done: make(chan struct{}), calls: map[string]int{}}
	for w := 0; w < n; w++ {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			ld.worker(w, mnt, view)
		}()
	}
	return ld
}

func (ld *load) timed(op string, f func() error) {
	t0 := time.Now()
	err := f()
	took := time.Since(t0)
	ld.ops.Add(1)
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.calls[op]++
	ld.longest = max(ld.longest, took)
	if took > 2*time.Second {
		ld.slow = append(ld.slow, fmt.Sprintf("%s %v at %s", op, took, time.Now().Format("15:04:05.000")))
	}
	if err != nil && len(ld.failures) < 50 {
		ld.failures = append(ld.failures, fmt.Sprintf("%s: %v at %s", op, err, time.Now().Format("15:04:05.000")))
	}
}

func (ld *load) worker(w int, mnt, view string) {
	root := mnt
	if w%2 == 1 {
		root = view
	}
	existing := []string{"null", "zero", "full"}
	for i := 0; ; i++ {
		select {
		case <-ld.done:
			return
		default:
		}
		var st unix.Stat_t
		switch i % 5 {
		case 0:
			name := existing[i%len(existing)]
			ld.timed("stat", func() error { return unix.Lstat(filepath.Join(root, name), &st) })
		case 1:
			name := fmt.Sprintf("nosuch-%d-%d", w, i)
			ld.timed("stat-missing", func() error {
				if err := unix.Lstat(filepath.Join(root, name), &st); !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("lstat %s: %v, want ENOENT", name, err)
				}
				return nil
			})
		case 2:
			ld.timed("readdir", func() error { _, err := listing(root); return err })
		case 3:
			p := filepath.Join(mnt, fmt.Sprintf("u-%d-%d", w, i))
			ld.timed("mknod", func() error { return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) })
			ld.timed("unlink", func() error { return unix.Unlink(p) })
		case 4:
			ld.timed("open-null", func() error {
				fd, err := unix.Open(filepath.Join(root, "null"), unix.O_RDWR|unix.O_CLOEXEC, 0)
				if err != nil {
					return err
				}
				_, werr := unix.Write(fd, []byte("x"))
				return errors.Join(werr, unix.Close(fd))
			})
		}
	}
}

// stop stops the workers and reports what they saw.
func (ld *load) stop() loadReport {
	ld.once.Do(func() { close(ld.done) })
	ld.wg.Wait()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return loadReport{calls: ld.calls, failures: ld.failures, slow: ld.slow, longest: ld.longest}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// An upgrade whose successor cannot serve (here: its limit of nodes is
// below what the namespace holds, so it refuses the handover after the
// old daemon stopped reading) fails and changes nothing: the old daemon
// serves its mounts and its socket again, the load sees no failed call,
// and the next upgrade succeeds.
func TestUpgradeFailsAndTheDaemonServesOn(t *testing.T) {
	vmnt := viewDir(t, "v")
	vfile := writeFile(t, t.TempDir(), "v.yaml", fmt.Sprintf("mountpoint: %s\nallow: [null, zero, full, \"u-*\"]\n", vmnt))
	// With a state directory: the old daemon lets go of it for the
	// successor, and opens it again when the successor fails.
	d := startCtl(t, "--view="+vfile, "--views-dir="+filepath.Dir(vmnt), "--state-dir="+t.TempDir())
	cur := &currentDaemon{pid: d.cmd.Process.Pid}
	t.Cleanup(func() { cur.stop(t, d.mnt) })
	drainReady(t, d.ready)
	bad := writeFile(t, t.TempDir(), "devfsd-small", "#!/bin/sh\nshift\nexec "+devfsdBin+" mount --max-nodes=3 \"$@\"\n")
	if err := os.Chmod(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	ld := startLoad(d.mnt, vmnt, 8)
	defer ld.stop()
	from := ld.ops.Load()
	until(t, "the workers' progress", func() bool { return ld.ops.Load() >= from+200 })

	_, errOut, code := d.ctl(t, nil, "upgrade", "--binary", bad)
	if code == 0 || !strings.Contains(errOut, "more than the limit") {
		t.Fatalf("upgrade to a successor that cannot serve: exit %d: %s", code, errOut)
	}
	from = ld.ops.Load()
	until(t, "the workers' progress after the failed upgrade", func() bool { return ld.ops.Load() >= from+200 })
	if exitsWithin(cur.get(), 0) {
		t.Fatal("the daemon exited after a failed upgrade")
	}
	// The socket serves again, and the next upgrade works.
	out := d.mustCtl(t, "upgrade", "--json")
	var res wire.Upgrade
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.OldPid != cur.get() {
		t.Fatalf("upgrade after the failed one: %v %q", err, out)
	}
	cur.set(res.NewPid)
	from = ld.ops.Load()
	until(t, "the workers' progress after the upgrade", func() bool { return ld.ops.Load() >= from+200 })
	rep := ld.stop()
	for _, f := range rep.failures {
		t.Errorf("failed call: %s", f)
	}
	if rep.longest > 2*time.Second {
		t.Errorf("a call took %v, more than 2 s: %v", rep.longest, rep.slow)
	}
	if l, err := d.c.List(context.Background(), "", true); err != nil {
		t.Fatal(err)
	} else {
		for _, m := range killtest.Compare(l, d.mnt, nil) {
			t.Errorf("main mount: %s", m)
		}
	}
}

// SIGUSR1 upgrades as `ctl upgrade` does, without a control socket: a
// new process of the binary serves the mount, with the same node ids, and
// the old one exits.
func TestUpgradeBySignal(t *testing.T) {
	d := start(t, opts{args: []string{"--socket=none"}})
	cur := &currentDaemon{pid: d.cmd.Process.Pid}
	t.Cleanup(func() { cur.stop(t, d.mnt) })
	drainReady(t, d.ready)
	var before unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, "null"), &before); err != nil {
		t.Fatal(err)
	}
	old := cur.get()
	if err := syscall.Kill(old, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if !exitsWithin(old, condDeadline) {
		t.Fatal("the daemon did not hand over and exit after SIGUSR1")
	}
	var succ []int
	until(t, "a successor serving the mount", func() bool {
		succ = slices.DeleteFunc(devfsdServing(d.mnt), func(p int) bool { return p == old })
		return len(succ) == 1
	})
	cur.set(succ[0])
	if !mounted(t, d.mnt) {
		t.Fatal("the mount is gone")
	}
	var after unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, "null"), &after); err != nil || after.Ino != before.Ino {
		t.Fatalf("null after the upgrade: ino %d, %v; want %d", after.Ino, err, before.Ino)
	}
	p := filepath.Join(d.mnt, "after-usr2")
	if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unlink(p); err != nil {
		t.Fatal(err)
	}
}

// The state directory goes with an upgrade: changes kept before, during
// and after two upgrades are there when a fresh daemon starts on it.
func TestUpgradeKeepsTheStateDir(t *testing.T) {
	sdir := t.TempDir()
	d := startCtl(t, "--state-dir="+sdir)
	cur := &currentDaemon{pid: d.cmd.Process.Pid}
	t.Cleanup(func() { cur.stop(t, d.mnt) })
	drainReady(t, d.ready)
	old := unix.Umask(0)
	defer unix.Umask(old)
	if err := unix.Chmod(filepath.Join(d.mnt, "null"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(d.mnt, "kept-before"), unix.S_IFIFO|0o604, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		out := d.mustCtl(t, "upgrade", "--json")
		var res wire.Upgrade
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		if !exitsWithin(res.OldPid, condDeadline) {
			t.Fatalf("the old daemon %d did not exit", res.OldPid)
		}
		cur.set(res.NewPid)
		if err := unix.Mknod(filepath.Join(d.mnt, fmt.Sprintf("kept-after-%d", i)), unix.S_IFIFO|0o604, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Chmod(filepath.Join(d.mnt, "zero"), 0o606); err != nil {
		t.Fatal(err)
	}
	cur.stop(t, d.mnt)
	if mounted(t, d.mnt) {
		t.Fatal("still mounted after the last daemon's SIGTERM")
	}
	d2 := start(t, opts{mnt: d.mnt, args: []string{"--socket=none", "--state-dir=" + sdir}})
	for name, mode := range map[string]uint32{"null": unix.S_IFCHR | 0o640, "zero": unix.S_IFCHR | 0o606,
		"kept-before": unix.S_IFIFO | 0o604, "kept-after-0": unix.S_IFIFO | 0o604, "kept-after-1": unix.S_IFIFO | 0o604} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(d2.mnt, name), &st); err != nil || st.Mode != mode {
			t.Errorf("%s in a fresh daemon on the state directory: mode %o, %v; want %o", name, st.Mode, err, mode)
		}
	}
}

// drainReady reads the READY=1 messages on ready (the harness's notify
// socket, which every successor writes to as well) until the test ends,
// so that no successor blocks on a full socket.
func drainReady(t *testing.T, ready <-chan string) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-ready:
			case <-done:
				return
			}
		}
	}()
}
