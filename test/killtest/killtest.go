// Package killtest is the kill test of DESIGN.md section 9 (the issue
// "Stay up"), shared by the integration test (the daemon under `devfsd
// keeper`) and the run under a real systemd (deploy/systemd): workers
// use a mount and one of its views — stat of existing and missing names,
// readdir, mknod+unlink, open of null, mknod of names that stay — while
// the daemon is killed with SIGKILL at random moments and started again
// by whatever keeps its descriptors. Then it checks that no call failed,
// none took too long, every acknowledged change is there, and that what
// the kernel shows (lstat through the mount and the view) is what the
// control socket's GET /v1/list says.
package killtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/wire"
)

// Target is the daemon under test.
type Target struct {
	// Mount is the main mount; View a view of it showing the top-level
	// names matching ViewAllow (filepath.Match globs).
	Mount     string
	View      string
	ViewAllow []string
	// Current returns the pid of the running daemon, and whether it has
	// said READY=1; 0 while none runs.
	Current func() (pid int, ready bool)
	// List is GET /v1/list?recursive=true of the daemon's socket.
	List func(ctx context.Context) (wire.List, error)
	// Keeper, if set, returns the pid of what keeps the daemon's
	// descriptors and starts it (devfsd keeper under systemd), for the
	// kills of Options.KeeperKills.
	Keeper func() int
}

// Options of Run; zero fields take the values.
type Options struct {
	Workers  int           // 8
	Duration time.Duration // 10 s: the load runs at least this long
	Kills    int           // 20
	// KeeperKills of the Kills go to Target.Keeper rather than to the
	// daemon (spread evenly); the daemon the keeper ran must be dead when
	// the next one serves. 0: none.
	KeeperKills int
	MaxCall     time.Duration // 2 s
	// Ready bounds the wait for a successor's READY=1. Default 20 s.
	Ready time.Duration
	// OnStall, if set, is called (from a goroutine of its own, at most
	// once a second) while a call has been running longer than
	// MaxCall/2: a chance to look at where the daemon and the callers
	// wait (DumpStacks) before it ends.
	OnStall func(running time.Duration)
	Seed    int64
}

// Report is what Run saw.
type Report struct {
	Kills       int
	KeeperKills int // of Kills, those of the keeper
	Elapsed     time.Duration
	Downtime    []time.Duration // from each kill to the successor's READY=1, sorted
	// KeeperDowntime is Downtime for the keeper's kills alone, sorted.
	KeeperDowntime []time.Duration
	Longest        time.Duration // the longest call
	Calls          map[string]int
	// Resent counts mknod answered EEXIST and unlink answered ENOENT for
	// names the worker had not yet made or had not yet removed: a request
	// the killed daemon carried out and did not answer, resent to its
	// successor (FUSE_NOTIFY_RESEND), which finds it done.
	Resent   map[string]int
	Failures []string // calls that failed
	Slow     []string // calls longer than MaxCall
	Lost     []string // acknowledged changes not there at the end
	Mismatch []string // the kernel's view against GET /v1/list
	// Survivors are daemons still running when the next one served after
	// their keeper was killed (two daemons serving one mount).
	Survivors []string
}

// Problems lists everything that makes the run a failure.
func (r Report) Problems() []string {
	var out []string
	for _, l := range [][]string{r.Failures, r.Slow, r.Lost, r.Mismatch, r.Survivors} {
		out = append(out, l...)
	}
	return out
}

// Summary is one line of figures.
func (r Report) Summary() string {
	med, mx := time.Duration(0), time.Duration(0)
	if n := len(r.Downtime); n > 0 {
		med, mx = r.Downtime[n/2], r.Downtime[n-1]
	}
	keeper := ""
	if n := len(r.KeeperDowntime); n > 0 {
		keeper = fmt.Sprintf(" (of those, the keeper's: median %v, max %v)",
			r.KeeperDowntime[n/2].Round(time.Millisecond), r.KeeperDowntime[n-1].Round(time.Millisecond))
	}
	return fmt.Sprintf("%d kills (%d of the keeper) in %v; kill to READY=1: median %v, max %v (%d measured)%s; longest call %v; calls %v; resent %v",
		r.Kills, r.KeeperKills, r.Elapsed.Round(time.Millisecond), med.Round(time.Millisecond), mx.Round(time.Millisecond), len(r.Downtime),
		keeper, r.Longest.Round(time.Millisecond), r.Calls, r.Resent)
}

// Run runs the kill test. Its error is the test's own trouble (a kill that
// failed, no successor within o.Ready); what the daemon did wrong is in
// the Report.
func Run(tg Target, o Options) (Report, error) {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Kills <= 0 {
		o.Kills = 20
	}
	if o.MaxCall <= 0 {
		o.MaxCall = 2 * time.Second
	}
	if o.Ready <= 0 {
		o.Ready = 20 * time.Second
	}
	old := unix.Umask(0) // the modes asked for are the modes made
	defer unix.Umask(old)
	st := &stats{maxCall: o.MaxCall, calls: map[string]int{}, resent: map[string]int{}, since: make([]atomic.Int64, o.Workers)}
	stop := make(chan struct{})
	if o.OnStall != nil {
		watchDone := make(chan struct{})
		defer close(watchDone)
		go watchStalls(st, o.MaxCall/2, o.OnStall, watchDone)
	}
	var wg sync.WaitGroup
	kept := make([]map[string]bool, o.Workers)
	for w := range kept {
		kept[w] = map[string]bool{}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			worker(tg, w, o.Seed+int64(w), stop, st, kept[w])
		}(w)
	}
	var stopOnce sync.Once
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	// stopWorkers stops the workers and waits for their calls to end, at
	// most Ready: a call still running then is stuck, and reported.
	stopWorkers := func() bool {
		stopOnce.Do(func() { close(stop) })
		select {
		case <-workersDone:
			return true
		case <-time.After(o.Ready):
			return false
		}
	}
	defer stopWorkers()

	rep := Report{}
	start := time.Now()
	err := killLoop(tg, o, start, &rep)
	if left := o.Duration - time.Since(start); err == nil && left > 0 {
		time.Sleep(left) // the load runs its whole time
	}
	ended := stopWorkers()
	rep.Elapsed = time.Since(start)
	slices.Sort(rep.Downtime)
	slices.Sort(rep.KeeperDowntime)
	st.mu.Lock()
	rep.Longest, rep.Calls, rep.Resent = st.longest, maps.Clone(st.calls), maps.Clone(st.resent)
	rep.Failures, rep.Slow = slices.Clone(st.failures), slices.Clone(st.slow)
	st.mu.Unlock()
	if !ended {
		rep.Slow = append(rep.Slow, fmt.Sprintf("calls still running %v after the load stopped (stuck)", o.Ready))
		return rep, fmt.Errorf("the workers' calls did not end within %v", o.Ready)
	}
	if err != nil {
		return rep, err
	}
	for w := range kept {
		for name, exists := range kept[w] {
			var sb unix.Stat_t
			err := unix.Lstat(filepath.Join(tg.Mount, name), &sb)
			if exists && err != nil {
				rep.Lost = append(rep.Lost, fmt.Sprintf("%s: acknowledged as made, now %v", name, err))
			} else if !exists && !errors.Is(err, unix.ENOENT) {
				rep.Lost = append(rep.Lost, fmt.Sprintf("%s: acknowledged as removed, now lstat says %v", name, err))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := tg.List(ctx)
	if err != nil {
		return rep, fmt.Errorf("GET /v1/list: %w", err)
	}
	rep.Mismatch = append(rep.Mismatch, Compare(l, tg.Mount, nil)...)
	if tg.View != "" {
		rep.Mismatch = append(rep.Mismatch, Compare(l, tg.View, tg.ViewAllow)...)
	}
	return rep, nil
}

// killLoop kills the daemon o.Kills times: at a random moment of each
// kill's share of the time left once the daemon serves, and every fifth
// time as soon as the successor has started, before it serves. Of those
// that wait for the daemon to serve, o.KeeperKills kill the keeper
// instead.
func killLoop(tg Target, o Options, start time.Time, rep *Report) error {
	rng := rand.New(rand.NewSource(o.Seed))
	pid, err := wait(tg, o.Ready, 0, true)
	if err != nil {
		return err
	}
	every := 0
	if o.KeeperKills > 0 && tg.Keeper != nil {
		every = max(o.Kills/o.KeeperKills, 1)
	}
	for k := 0; k < o.Kills; k++ {
		if k%5 != 4 {
			left := o.Duration - time.Since(start)
			share := max(left/time.Duration(o.Kills-k), 10*time.Millisecond)
			time.Sleep(time.Duration(rng.Int63n(int64(share))))
		}
		victim, ofKeeper := pid, every > 0 && k%every == 1%every && rep.KeeperKills < o.KeeperKills
		if ofKeeper {
			if victim = tg.Keeper(); victim <= 0 {
				return fmt.Errorf("kill %d: no keeper", k)
			}
		}
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %d (pid %d): %w", k, victim, err)
		}
		rep.Kills++
		if ofKeeper {
			rep.KeeperKills++
		}
		t0 := time.Now()
		early := (k+1)%5 == 4
		old := pid
		if pid, err = wait(tg, o.Ready, pid, !early); err != nil {
			return fmt.Errorf("after kill %d: %w", k, err)
		}
		if !early {
			rep.Downtime = append(rep.Downtime, time.Since(t0))
			if ofKeeper {
				rep.KeeperDowntime = append(rep.KeeperDowntime, time.Since(t0))
			}
		}
		if ofKeeper {
			if st := liveState(old); st != "" {
				rep.Survivors = append(rep.Survivors, fmt.Sprintf("kill %d (the keeper %d): its daemon %d is still running (state %s) while the next one (%d) serves",
					k, victim, old, st, pid))
			}
		}
	}
	return nil
}

// liveState is the state of process pid's main thread ("R", "S", "D",
// ...), or "" if it is gone or dead (a zombie).
func liveState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X' {
		return ""
	}
	return string(b[i+2])
}

// wait waits for a daemon other than old (ready, if asked), and returns
// its pid.
func wait(tg Target, d time.Duration, old int, ready bool) (int, error) {
	deadline := time.Now().Add(d)
	for {
		pid, r := tg.Current()
		if pid != 0 && pid != old && (r || !ready) {
			return pid, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no daemon after pid %d (ready: %v) within %v", old, ready, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type stats struct {
	maxCall time.Duration
	// since[w] is when worker w's current call began (UnixNano), 0
	// between calls.
	since    []atomic.Int64
	mu       sync.Mutex
	calls    map[string]int
	resent   map[string]int
	failures []string
	slow     []string
	longest  time.Duration
}

func (s *stats) record(op string, took time.Duration, err error, allowed ...syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	s.longest = max(s.longest, took)
	if took > s.maxCall {
		s.slow = append(s.slow, fmt.Sprintf("%s took %v (at %s)", op, took, time.Now().Format("15:04:05.000")))
	}
	if err == nil {
		return
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return
		}
	}
	s.failures = append(s.failures, fmt.Sprintf("%s: %v (at %s)", op, err, time.Now().Format("15:04:05.000")))
}

func (s *stats) resend(op string) {
	s.mu.Lock()
	s.resent[op]++
	s.mu.Unlock()
}

// worker runs the mix until stop is closed. kept[name] is the last
// acknowledged state of each name it made.
func worker(tg Target, id int, seed int64, stop <-chan struct{}, st *stats, kept map[string]bool) {
	rng := rand.New(rand.NewSource(seed))
	existing := []string{"null", "zero", "full", "tty", "random", "urandom"}
	var viewNames []string
	for _, n := range existing {
		if matchAny(tg.ViewAllow, n) {
			viewNames = append(viewNames, n)
		}
	}
	timed := func(op string, f func() error, allowed ...syscall.Errno) error {
		t0 := time.Now()
		st.since[id].Store(t0.UnixNano())
		err := f()
		st.since[id].Store(0)
		st.record(op, time.Since(t0), err, allowed...)
		return err
	}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		var sb unix.Stat_t
		switch rng.Intn(7) {
		case 0:
			name := existing[rng.Intn(len(existing))]
			timed("stat", func() error { return unix.Lstat(filepath.Join(tg.Mount, name), &sb) })
		case 1:
			name := fmt.Sprintf("nosuch-%d-%d", id, rng.Intn(64))
			timed("stat-missing", func() error {
				if err := unix.Lstat(filepath.Join(tg.Mount, name), &sb); !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("lstat %s: %v, want ENOENT", name, err)
				}
				return nil
			})
		case 2:
			timed("readdir", func() error { _, err := Listing(tg.Mount); return err })
		case 3, 4:
			name := fmt.Sprintf("k-%d-%d", id, i)
			p := filepath.Join(tg.Mount, name)
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
				fd, err := unix.Open(filepath.Join(tg.Mount, "null"), unix.O_RDWR|unix.O_CLOEXEC, 0)
				if err != nil {
					return err
				}
				_, werr := unix.Write(fd, []byte("x"))
				return errors.Join(werr, unix.Close(fd))
			})
		case 6:
			if rng.Intn(4) == 0 || tg.View == "" || len(viewNames) == 0 {
				name := fmt.Sprintf("p-%d-%d", id, i)
				err := timed("mknod-kept", func() error {
					return unix.Mknod(filepath.Join(tg.Mount, name), unix.S_IFIFO|0o640, 0)
				}, unix.EEXIST)
				if errors.Is(err, unix.EEXIST) {
					st.resend("mknod")
				}
				if err == nil || errors.Is(err, unix.EEXIST) {
					kept[name] = true
				}
			} else {
				name := viewNames[rng.Intn(len(viewNames))]
				timed("stat-view", func() error { return unix.Lstat(filepath.Join(tg.View, name), &sb) })
			}
		}
	}
}

// watchStalls calls onStall while a worker's call has run longer than
// after, at most once a second, until done is closed.
func watchStalls(st *stats, after time.Duration, onStall func(time.Duration), done <-chan struct{}) {
	t := time.NewTicker(after / 4)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		oldest := time.Duration(0)
		for w := range st.since {
			if b := st.since[w].Load(); b != 0 {
				oldest = max(oldest, time.Since(time.Unix(0, b)))
			}
		}
		if oldest > after && time.Since(last) > time.Second {
			last = time.Now()
			onStall(oldest)
		}
	}
}

// DumpStacks returns, for each process whose command line contains
// match, and for this process, the state and kernel stack of every
// thread (/proc/PID/task/TID/stack: root only): where the daemon and the
// callers wait.
func DumpStacks(match string) string {
	var b strings.Builder
	pids := []int{os.Getpid()}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if c, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(strings.ReplaceAll(string(c), "\x00", " "), match) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		fmt.Fprintf(&b, "== pid %d: %s\n", pid, strings.ReplaceAll(string(c), "\x00", " "))
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, t := range tasks {
			stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stack", pid, t.Name()))
			state := liveState(pid)
			if sb, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name())); err == nil {
				if i := bytes.LastIndexByte(sb, ')'); i >= 0 && i+2 < len(sb) {
					state = string(sb[i+2])
				}
			}
			top := strings.TrimSpace(string(stack))
			if top == "" || state == "S" && !strings.Contains(top, "fuse") && !strings.Contains(top, "rwsem") && !strings.Contains(top, "inode") {
				continue // an idle thread: not where anything waits on the mount
			}
			fmt.Fprintf(&b, "-- tid %s state %s\n%s\n", t.Name(), state, top)
		}
	}
	return b.String()
}

// Compare checks that dir (the mount; or, with allow, a view showing the
// top-level names that match allow) shows what l says: every name, by
// getdents and no other, each with the type, mode, owner, device number
// and inode number of its node by lstat. A name another file system is
// mounted on (pts, shm) is checked for its presence only.
func Compare(l wire.List, dir string, allow []string) []string {
	var bad []string
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
	var top unix.Stat_t
	if err := unix.Stat(dir, &top); err != nil {
		return []string{fmt.Sprintf("stat %s: %v", dir, err)}
	}
	var walk func(rel string)
	walk = func(rel string) {
		names, err := Listing(filepath.Join(dir, rel))
		if err != nil {
			bad = append(bad, fmt.Sprintf("getdents %s: %v", filepath.Join(dir, rel), err))
			return
		}
		for name := range names {
			p := filepath.Join(rel, name)
			seen[p] = true
			n, ok := want[p]
			if !ok {
				bad = append(bad, fmt.Sprintf("%s: in %s but not in GET /v1/list", p, dir))
				continue
			}
			var sb unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, p), &sb); err != nil {
				bad = append(bad, fmt.Sprintf("lstat %s: %v", filepath.Join(dir, p), err))
				continue
			}
			if sb.Dev != top.Dev {
				continue // a special mount on the node (pts, shm): not the node's attributes
			}
			mode, _ := strconv.ParseUint(n.Mode, 8, 32)
			got := fmt.Sprintf("%s ino %d mode %o uid %d gid %d rdev %d:%d", typeName(sb.Mode), sb.Ino, sb.Mode&07777, sb.Uid, sb.Gid, unix.Major(sb.Rdev), unix.Minor(sb.Rdev))
			exp := fmt.Sprintf("%s ino %d mode %o uid %d gid %d rdev %d:%d", n.Type, n.Ino, mode, n.Uid, n.Gid, n.Major, n.Minor)
			if got != exp {
				bad = append(bad, fmt.Sprintf("%s through %s: %s; GET /v1/list: %s", p, dir, got, exp))
			}
			if n.Type == "dir" && allow == nil {
				walk(p)
			}
		}
	}
	walk("")
	for p := range want {
		if !seen[p] {
			bad = append(bad, fmt.Sprintf("%s: in GET /v1/list but not in %s", p, dir))
		}
	}
	sort.Strings(bad)
	return bad
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

// Listing lists dir with getdents64 (no lookup, so no load): each name
// but "." and ".." with its d_ino.
func Listing(dir string) (map[string]uint64, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	out := map[string]uint64{}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		for off := 0; off < n; {
			ino := binary.NativeEndian.Uint64(buf[off:])
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out[s] = ino
			}
			off += reclen
		}
	}
}
