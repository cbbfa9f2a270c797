package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
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

func startKept(t *testing.T, extra ...string) *keptDaemon {
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
		"--pts=off", "--shm=off", "--socket=" + d.sock, "--state-dir=" + filepath.Join(base, "state"),
		"--views-dir=" + filepath.Dir(view), "--view=" + vf}
	args = append(args, extra...)
	args = append(args, mnt)
	d.cmd = exec.Command(devfsdBin, args...)
	d.cmd.Dir = "/"
	d.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=0")
	pr, pw := io.Pipe()
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	// If this test binary dies, the keeper gets SIGTERM and stops the
	// daemon, which unmounts.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := harness.ForkOnSpawner(d.cmd); err != nil {
		t.Fatal(err)
	}
	go d.readLog(pr)
	go func() {
		d.err = d.cmd.Wait()
		pw.Close()
		close(d.exited)
	}()
	d.c = client.New(d.sock)
	t.Cleanup(func() {
		d.c.Close()
		d.stop()
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in devfsd")
		}
		if t.Failed() {
			t.Logf("keeper and devfsd output (last 200 lines):\n%s", d.out.Tail(200))
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

// waitReady waits until a daemon other than old has said READY=1, and
// returns its pid.
func (d *keptDaemon) waitReady(old int) int {
	d.t.Helper()
	deadline := time.After(mountDeadline)
	for {
		d.mu.Lock()
		p := d.pid()
		ok, moved := p != 0 && p != old && d.ready[p], d.moved
		d.mu.Unlock()
		if ok {
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
			<-d.exited
		}
	}
	for _, m := range []string{d.view, d.mnt} {
		if mounted(d.t, m) {
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

// callStats is what the workers saw.
type callStats struct {
	mu       sync.Mutex
	calls    map[string]int
	failures []string // calls that failed other than as allowed
	slow     []string // calls that took longer than maxCall
	resent   map[string]int
	longest  time.Duration
}

// maxCall bounds every call of the kill test.
const maxCall = 2 * time.Second

func (s *callStats) record(op string, took time.Duration, err error, allowed ...syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	s.longest = max(s.longest, took)
	if took > maxCall {
		s.slow = append(s.slow, fmt.Sprintf("%s took %v", op, took))
	}
	if err == nil {
		return
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return
		}
	}
	s.failures = append(s.failures, fmt.Sprintf("%s: %v", op, err))
}

// worker runs the mix against the mount (and its view) until
// stop is closed: stat of existing and missing names, readdir,
// mknod+unlink, open of null; and a mknod of a name it keeps, now and
// then. kept[name] is the last acknowledged state of each name it made.
func (d *keptDaemon) worker(id int, seed int64, stop <-chan struct{}, st *callStats, kept map[string]bool) {
	rng := rand.New(rand.NewSource(seed))
	existing := []string{"null", "zero", "full", "random", "urandom", "tty"}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		timed := func(op string, f func() error, allowed ...syscall.Errno) error {
			t0 := time.Now()
			err := f()
			st.record(op, time.Since(t0), err, allowed...)
			return err
		}
		var sb unix.Stat_t
		switch op := rng.Intn(7); op {
		case 0:
			name := existing[rng.Intn(len(existing))]
			timed("stat", func() error { return unix.Lstat(filepath.Join(d.mnt, name), &sb) })
		case 1:
			name := fmt.Sprintf("nosuch-%d-%d", id, rng.Intn(64))
			timed("stat-missing", func() error {
				if err := unix.Lstat(filepath.Join(d.mnt, name), &sb); !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("lstat %s: %v, want ENOENT", name, err)
				}
				return nil
			})
		case 2:
			timed("readdir", func() error { _, err := listing(d.mnt); return err })
		case 3, 4:
			name := fmt.Sprintf("k-%d-%d", id, i)
			p := filepath.Join(d.mnt, name)
			// A mknod the old daemon made and kept but did not answer is
			// made again when the kernel resends it: EEXIST. Likewise an
			// unlink: ENOENT. The name is then as asked.
			err := timed("mknod", func() error { return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) }, unix.EEXIST)
			if errors.Is(err, unix.EEXIST) {
				st.resend("mknod")
			}
			if err == nil || errors.Is(err, unix.EEXIST) {
				kept[name] = true
			}
			err = timed("unlink", func() error { return unix.Unlink(p) }, unix.ENOENT)
			if errors.Is(err, unix.ENOENT) && kept[name] {
				st.resend("unlink")
			}
			if err == nil || errors.Is(err, unix.ENOENT) {
				kept[name] = false
			}
		case 5:
			timed("open-null", func() error {
				fd, err := unix.Open(filepath.Join(d.mnt, "null"), unix.O_RDWR|unix.O_CLOEXEC, 0)
				if err != nil {
					return err
				}
				_, werr := unix.Write(fd, []byte("x"))
				return errors.Join(werr, unix.Close(fd))
			})
		case 6:
			if rng.Intn(4) == 0 {
				name := fmt.Sprintf("p-%d-%d", id, i)
				err := timed("mknod-kept", func() error {
					return unix.Mknod(filepath.Join(d.mnt, name), unix.S_IFIFO|0o640, 0)
				}, unix.EEXIST)
				if errors.Is(err, unix.EEXIST) {
					st.resend("mknod")
				}
				if err == nil || errors.Is(err, unix.EEXIST) {
					kept[name] = true
				}
			} else {
				name := existing[rng.Intn(4)] // what the view allows
				timed("stat-view", func() error { return unix.Lstat(filepath.Join(d.view, name), &sb) })
			}
		}
	}
}

func (s *callStats) resend(op string) {
	s.mu.Lock()
	s.resent[op]++
	s.mu.Unlock()
}

// The kill test: 8 workers against the mount and a view for 10 s
// while the daemon is killed with SIGKILL 20 times at random moments and
// started again by the keeper with the kept descriptors. No call fails
// (ENOTCONN, EIO, or anything else but the EEXIST/ENOENT of a resent
// mknod/unlink that had been made), none takes longer than 2 s, every
// acknowledged change is there at the end, and what the kernel shows
// (lstat through the mount, and through the view) is GET /v1/list's:
// the same names, types, modes, device numbers and inode numbers.
func TestKeeperKillTest(t *testing.T) {
	const (
		workers  = 8
		duration = 10 * time.Second
		kills    = 20
	)
	seed := time.Now().UnixNano()
	if s := os.Getenv("DEVFSD_KILL_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (DEVFSD_KILL_SEED replays)", seed)
	old := unix.Umask(0)
	t.Cleanup(func() { unix.Umask(old) })
	d := startKept(t)
	st := &callStats{calls: map[string]int{}, resent: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopWorkers := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(stopWorkers) // before the daemon stops, on every path
	kept := make([]map[string]bool, workers)
	for w := 0; w < workers; w++ {
		kept[w] = map[string]bool{}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			d.worker(w, seed+int64(w), stop, st, kept[w])
		}(w)
	}
	rng := rand.New(rand.NewSource(seed))
	start := time.Now()
	pid := d.pid()
	var downtime []time.Duration
	for k := 0; k < kills; k++ {
		// A random moment in this kill's share of the time left, once
		// the daemon serves; every fifth kill lands as soon as the keeper
		// has started the new daemon, while it is still starting.
		if k%5 != 4 {
			left := duration - time.Since(start)
			share := max(left/time.Duration(kills-k), 10*time.Millisecond)
			time.Sleep(time.Duration(rng.Int63n(int64(share))))
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d (pid %d): %v", k, pid, err)
		}
		t0 := time.Now()
		if (k+1)%5 == 4 {
			old := pid
			harness.Until(t, mountDeadline, "the keeper started a new daemon", func() bool {
				pid = d.pid()
				return pid != old && pid != 0
			})
			continue
		}
		pid = d.waitReady(pid)
		downtime = append(downtime, time.Since(t0))
	}
	if left := duration - time.Since(start); left > 0 {
		time.Sleep(left) // the load runs its 10 s
	}
	stopWorkers()
	sort.Slice(downtime, func(i, j int) bool { return downtime[i] < downtime[j] })
	st.mu.Lock()
	t.Logf("%d kills in %v; kill to READY=1: median %v, max %v; longest call %v; calls %v; resent %v",
		kills, time.Since(start).Round(time.Millisecond), downtime[len(downtime)/2], downtime[len(downtime)-1],
		st.longest, st.calls, st.resent)
	for _, f := range st.failures {
		t.Errorf("failed call: %s", f)
	}
	for _, s := range st.slow {
		t.Errorf("slow call: %s", s)
	}
	st.mu.Unlock()
	// Every acknowledged change is there.
	for w := range kept {
		for name, exists := range kept[w] {
			var sb unix.Stat_t
			err := unix.Lstat(filepath.Join(d.mnt, name), &sb)
			if exists && err != nil {
				t.Errorf("%s: acknowledged as made, now %v", name, err)
			} else if !exists && !errors.Is(err, unix.ENOENT) {
				t.Errorf("%s: acknowledged as removed, now lstat says %v", name, err)
			}
		}
	}
	compareWithList(t, d, d.mnt, nil)
	compareWithList(t, d, d.view, viewAllow)
	if n := d.restarts(); n != kills {
		t.Errorf("the keeper started the daemon again %d times, want %d", n, kills)
	}
}

// restarts counts the keeper's restarts after a kill.
func (d *keptDaemon) restarts() int {
	return strings.Count(d.out.String(), "keeper: the daemon was killed; starting it again with the kept descriptors")
}

// compareWithList checks that dir (the mount, or a view of it showing the
// top-level names that match allow) shows what GET /v1/list says, by
// lstat: every name, with its type, mode, owner, device number and inode
// number, and no other name (getdents).
func compareWithList(t *testing.T, d *keptDaemon, dir string, allow []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	l, err := d.c.List(ctx, "", true)
	if err != nil {
		t.Fatalf("GET /v1/list: %v", err)
	}
	want := map[string]wire.Node{}
	for _, n := range l.Nodes {
		if n.Path == "" {
			continue
		}
		if allow != nil && (strings.Contains(n.Path, "/") || !matchAny(allow, n.Path)) {
			continue
		}
		want[n.Path] = n
	}
	seen := map[string]bool{}
	var walk func(rel string)
	walk = func(rel string) {
		names, err := listing(filepath.Join(dir, rel))
		if err != nil {
			t.Errorf("getdents %s: %v", filepath.Join(dir, rel), err)
			return
		}
		for name := range names {
			p := filepath.Join(rel, name)
			seen[p] = true
			n, ok := want[p]
			if !ok {
				t.Errorf("%s: in %s but not in GET /v1/list", p, dir)
				continue
			}
			var sb unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, p), &sb); err != nil {
				t.Errorf("lstat %s: %v", filepath.Join(dir, p), err)
				continue
			}
			mode, _ := strconv.ParseUint(n.Mode, 8, 32)
			got := fmt.Sprintf("ino %d mode %o uid %d gid %d rdev %d:%d", sb.Ino, sb.Mode&07777, sb.Uid, sb.Gid, unix.Major(sb.Rdev), unix.Minor(sb.Rdev))
			exp := fmt.Sprintf("ino %d mode %o uid %d gid %d rdev %d:%d", n.Ino, mode, n.Uid, n.Gid, n.Major, n.Minor)
			if got != exp || typeName(sb.Mode) != n.Type {
				t.Errorf("%s through %s: %s %s; GET /v1/list: %s %s", p, dir, typeName(sb.Mode), got, n.Type, exp)
			}
			if n.Type == "dir" && allow == nil {
				walk(p)
			}
		}
	}
	walk("")
	for p := range want {
		if !seen[p] {
			t.Errorf("%s: in GET /v1/list but not in %s", p, dir)
		}
	}
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "regular"
}
