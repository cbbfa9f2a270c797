package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
	"github.com/devfsd/devfsd/test/killtest"
)

// keptDaemon is `devfsd keeper -- devfsd mount ...`: a daemon whose
// descriptors a keeper holds (the systemd protocol, daemon/keeper.go),
// with a state directory, a control socket and one view.
type keptDaemon struct {
	t       *testing.T
	mnt     string
	view    string
	sock    string
	pidFile string
	cmd     *exec.Cmd
	out     *harness.SyncBuffer
	exited  chan struct{}
	err     error
	c       *client.Client

	mu    sync.Mutex
	ready map[int]bool // daemon pids that said READY=1 (the keeper's log)
	moved chan struct{}
}

// viewAllow is what the test's view shows.
var viewAllow = []string{"null", "zero", "full", "tty", "p-*"}

// startKept starts the keeper and its daemon with a state directory
// (unless withoutState) and extra flags for devfsd mount.
func startKept(t *testing.T, withoutState bool, extra ...string) *keptDaemon {
	t.Helper()
	return startKeptEnv(t, nil, withoutState, extra...)
}

// startKeptEnv is startKept with env added to the keeper's environment
// (which its daemons inherit).
func startKeptEnv(t *testing.T, env []string, withoutState bool, extra ...string) *keptDaemon {
	t.Helper()
	_, mnt := freshMount(t)
	view := viewDir(t, "view")
	base := t.TempDir()
	d := &keptDaemon{t: t, mnt: mnt, view: view, sock: filepath.Join(base, "devfsd.sock"),
		pidFile: filepath.Join(base, "pid"), out: &harness.SyncBuffer{}, exited: make(chan struct{}),
		ready: map[int]bool{}, moved: make(chan struct{})}
	allow, _ := json.Marshal(viewAllow)
	vf := writeFile(t, base, "view.yaml", fmt.Sprintf("mountpoint: %s\nallow: %s\n", view, allow))
	args := []string{"keeper", "--log-format=json", "--restart-delay=10ms", "--pid-file=" + d.pidFile,
		"--runtime-dir=" + base, "--",
		devfsdBin, "mount", "--log-format=json", "--log-level=info", "--devices=catalogue",
		"--socket=" + d.sock, "--views-dir=" + filepath.Dir(view), "--view=" + vf}
	if !withoutState {
		args = append(args, "--state-dir="+filepath.Join(base, "state"))
	}
	args = append(args, extra...)
	args = append(args, mnt)
	d.cmd = exec.Command(devfsdBin, args...)
	d.cmd.Dir = "/"
	d.cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=0"), env...)
	// An os.Pipe, not a writer: Wait returns when the keeper exits,
	// whoever else holds the pipe (a daemon still exiting).
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	// If this test binary dies, the keeper gets SIGTERM and stops the
	// daemon, which unmounts.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := harness.ForkOnSpawner(d.cmd); err != nil {
		t.Fatal(err)
	}
	pw.Close() // the keeper and its daemons have it
	go d.readLog(pr)
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	d.c = client.New(d.sock)
	t.Cleanup(func() {
		d.c.Close()
		d.stop()
		d.reapLeftovers()
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in devfsd")
		}
		if t.Failed() {
			t.Logf("keeper and devfsd output (last 200 lines):\n%s", d.out.Tail(200))
		}
		if f := os.Getenv("DEVFSD_KEEPER_LOG"); f != "" {
			os.WriteFile(f, []byte(d.out.String()), 0o644)
		}
	})
	d.waitReady(0)
	return d
}

// readLog copies the output and notes each READY=1 the keeper reports.
func (d *keptDaemon) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		d.out.Write(append(line, '\n'))
		var rec struct {
			Msg string `json:"msg"`
			Pid int    `json:"pid"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "keeper: the daemon is ready" {
			d.mu.Lock()
			d.ready[rec.Pid] = true
			close(d.moved)
			d.moved = make(chan struct{})
			d.mu.Unlock()
		}
	}
	io.Copy(io.Discard, r)
}

// pid returns the daemon's current pid (the keeper's pid file).
func (d *keptDaemon) pid() int {
	b, err := os.ReadFile(d.pidFile)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

// reapLeftovers fails the test for, and ends, any daemon of this test
// still running once the keeper is gone (one stuck in the kernel that
// nothing freed): its mounts' connections are aborted, then it is killed.
func (d *keptDaemon) reapLeftovers() {
	find := func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err == nil && strings.Contains(string(b), "\x00"+d.mnt) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	if harness.Poll(exitDeadline, 10*time.Millisecond, func() bool { return len(find()) == 0 }) {
		return
	}
	d.t.Errorf("daemons of this test still running after the keeper ended: %v; aborting the connections and killing them", find())
	abortFUSE(d.t, d.mnt, d.view)
	for _, pid := range find() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range []string{d.view, d.mnt} {
		if mounted(d.t, m) {
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

// current is killtest.Target.Current: the pid in the keeper's pid file,
// and whether the keeper reported its READY=1.
func (d *keptDaemon) current() (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pid()
	return p, p != 0 && d.ready[p]
}

// waitReady waits until a daemon other than old has said READY=1, and
// returns its pid.
func (d *keptDaemon) waitReady(old int) int {
	d.t.Helper()
	deadline := time.After(mountDeadline)
	for {
		d.mu.Lock()
		moved := d.moved
		d.mu.Unlock()
		if p, ok := d.current(); ok && p != old {
			return p
		}
		select {
		case <-moved:
		case <-time.After(20 * time.Millisecond): // the pid file is written without a signal
		case <-d.exited:
			d.t.Fatalf("the keeper exited: %v", d.err)
		case <-deadline:
			d.t.Fatalf("no daemon after pid %d said READY=1 within %v", old, mountDeadline)
		}
	}
}

// stop ends the keeper with SIGTERM (it stops the daemon, which
// unmounts) and leaves nothing mounted whatever happened.
func (d *keptDaemon) stop() {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(3 * exitDeadline):
			d.t.Errorf("the keeper did not exit within %v of SIGTERM; killing it and its daemon", 3*exitDeadline)
			if p := d.pid(); p != 0 {
				syscall.Kill(p, syscall.SIGKILL)
			}
			d.cmd.Process.Kill()
			select {
			case <-d.exited:
			case <-time.After(exitDeadline):
				// A daemon stuck in the kernel for want of a server holds
				// the output pipe: end the connections, which frees it.
				d.t.Errorf("daemons still hold the keeper's output; aborting the mounts' FUSE connections")
				abortFUSE(d.t, d.mnt, d.view)
				<-d.exited
			}
		}
	}
	for _, m := range []string{d.view, d.mnt} {
		if mounted(d.t, m) {
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

// The kill test (package killtest): 8 workers against the mount
// and a view for 10 s while the daemon is killed with SIGKILL 20 times at
// random moments and started again by the keeper with the kept
// descriptors. No call fails (ENOTCONN, EIO, or anything else but the
// EEXIST/ENOENT of a resent mknod/unlink the killed daemon had carried
// out), none takes longer than 2 s, every acknowledged change is there at
// the end, and what the kernel shows (lstat through the mount, and
// through the view) is GET /v1/list's: the same names, types, modes,
// owners, device numbers and inode numbers. DEVFSD_KILL_SEED replays.
func TestKeeperKillTest(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("DEVFSD_KILL_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (DEVFSD_KILL_SEED replays)", seed)
	d := startKept(t, false)
	d.killTest(killtest.Options{Seed: seed, Ready: mountDeadline, OnStall: func(running time.Duration) {
		t.Logf("a call has run for %v; where the daemons and the callers wait:\n%s", running, killtest.DumpStacks(d.mnt))
	}})
	d.stopCleanly()
}

// killTest runs killtest against the kept mount and its view, and fails
// the test for every problem it reports, and unless the keeper started
// the daemon again once per kill.
func (d *keptDaemon) killTest(o killtest.Options) {
	d.t.Helper()
	rep, err := killtest.Run(killtest.Target{
		Mount: d.mnt, View: d.view, ViewAllow: viewAllow, Current: d.current,
		List: func(ctx context.Context) (wire.List, error) { return d.c.List(ctx, "", true) },
	}, o)
	d.t.Log(rep.Summary())
	if err != nil {
		d.t.Fatal(err)
	}
	for _, p := range rep.Problems() {
		d.t.Error(p)
	}
	if n := d.restarts(); n != rep.Kills {
		d.t.Errorf("the keeper started the daemon again %d times after %d kills", n, rep.Kills)
	}
}

// stopCleanly stops the keeper with SIGTERM and checks that it ended with
// its daemon's clean stop (status 0), leaving nothing mounted: the main
// mount, the view, and their pts and shm.
func (d *keptDaemon) stopCleanly() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(3 * exitDeadline):
		d.t.Fatalf("the keeper did not exit within %v of SIGTERM; where its processes wait:\n%s", 3*exitDeadline, killtest.DumpStacks(d.mnt))
	}
	if d.err != nil {
		d.t.Errorf("the keeper ended with %v, want a clean exit", d.err)
	}
	for _, dir := range []string{d.mnt, d.view} {
		if ms, err := harness.MountsUnder(dir); err != nil || len(ms) > 0 {
			d.t.Errorf("left mounted under %s: %v %v", dir, ms, err)
		}
	}
}

// restarts counts the keeper's restarts after a kill: once the process
// was gone, or once its main thread was (a thread stuck in the kernel).
func (d *keptDaemon) restarts() int {
	out := d.out.String()
	return strings.Count(out, "keeper: the daemon was killed; starting it again with the kept descriptors") +
		strings.Count(out, "keeper: the daemon's main thread is dead and a thread of it is stuck in the kernel")
}

// Without a state directory a crash still keeps the mount and the base
// set: nothing fails with ENOTCONN or EIO, what users made is gone (and
// the daemon says so), and a name the kernel had looked up before the
// crash answers ESTALE at worst, until the kernel looks it up again
// (within the entry timeout), then the new node. (A path's ESTALE is
// retried by the kernel with a fresh lookup, so stat(2) sees none.)
func TestKeeperKillWithoutStateDir(t *testing.T) {
	d := startKept(t, true, "--entry-timeout=1s", "--attr-timeout=0s")
	mine := filepath.Join(d.mnt, "mine")
	if err := unix.Mknod(mine, unix.S_IFIFO|0o644, 0); err != nil {
		t.Fatal(err)
	}
	var sb unix.Stat_t
	for _, p := range []string{mine, filepath.Join(d.mnt, "null")} {
		if err := unix.Lstat(p, &sb); err != nil {
			t.Fatal(err)
		}
	}
	oldNull := sb.Ino
	var before unix.Stat_t
	if err := unix.Stat(d.mnt, &before); err != nil {
		t.Fatal(err)
	}
	pid, _ := d.current()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A stat started while no daemon runs waits for the next one.
	var seen []error
	var nullIno uint64
	harness.Until(t, condDeadline, "null answers through the kept mount", func() bool {
		err := unix.Lstat(filepath.Join(d.mnt, "null"), &sb)
		if err != nil {
			seen = append(seen, err)
			return false
		}
		nullIno = sb.Ino
		return true
	})
	d.waitReady(pid)
	for _, err := range seen {
		if !errors.Is(err, unix.ESTALE) {
			t.Errorf("stat of null after the crash: %v (want success, or ESTALE for an id the new daemon does not know)", err)
		}
	}
	harness.Until(t, condDeadline, "the node a user made is gone", func() bool {
		err := unix.Lstat(mine, &sb)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESTALE) {
			t.Errorf("lstat of the lost node: %v", err)
		}
		return errors.Is(err, unix.ENOENT)
	})
	var after unix.Stat_t
	if err := unix.Stat(d.mnt, &after); err != nil {
		t.Fatal(err)
	}
	if after.Dev != before.Dev {
		t.Errorf("the mount's device changed from %d to %d: it was mounted again, not kept", before.Dev, after.Dev)
	}
	if !strings.Contains(d.out.String(), "no state directory: what users made in the kept mount is lost") {
		t.Error("the daemon did not say what it lost")
	}
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	l, err := d.c.List(ctx, "null", false)
	if err != nil || len(l.Nodes) == 0 || l.Nodes[0].Ino != nullIno {
		t.Errorf("GET /v1/list null: %+v %v; the kernel sees ino %d", l, err, nullIno)
	}
	if nullIno == oldNull {
		t.Errorf("null kept its id %d without a state directory: ids of the base set are not kept there", oldNull)
	}
	t.Logf("null: id %d before the crash, %d after; stat errors seen during the restart: %v", oldNull, nullIno, seen)
	d.stopCleanly()
}

// abortFUSE aborts the FUSE connection of each mount (its
// /sys/fs/fuse/connections entry, found in the mount table: the mount is
// not touched): every request fails, every process waiting on it goes on.
func abortFUSE(t *testing.T, dirs ...string) {
	for _, dir := range dirs {
		ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) { return m.Mountpoint != dir, false })
		if err != nil {
			continue
		}
		for _, m := range ms {
			p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", m.Minor)
			if err := os.WriteFile(p, []byte("1"), 0o200); err != nil {
				t.Logf("abort %s: %v", p, err)
			}
		}
	}
}
