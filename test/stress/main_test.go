// Package stress holds the stress tests of issue 4 against a real mount:
// devfsd runs as a separate process (test/harness builds it without the
// race detector and always takes it down), and the load comes from
// separate worker processes acting on the mount through system calls —
// this test binary re-executed with STRESS_ROLE set, never goroutines of
// the test itself. Workers share nothing with the test but their command
// line environment, a shared-memory file outside the mount (where the
// resurrection test publishes what is known to be removed) and one JSON
// summary line each on stdout.
//
//	TestRemovedEntryStaysRemoved   lookups racing unlink/rmdir never bring a
//	                               removed node back (-stress.cycles, 100,000)
//	TestSeedLsRmStress             the devfs deadlock of seeds/003 as a
//	                               stress test: ls & rm -f, mknod & rm, and
//	                               lookups of names a slow loader registers,
//	                               (-stress.iterations, 10,000) x 4 processes
//	TestExpiredMissIsSweptWithoutALookup
//	                               the periodic sweep of expired misses
//	                               tells the kernel without any lookup
//
// The counts are the issue's; the flags exist so that a slow machine can
// be measured, not so that CI can shrink them silently.
package stress

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/test/harness"
)

var (
	flagCycles     = flag.Int("stress.cycles", 100_000, "resurrection test: create/remove cycles in all")
	flagOwners     = flag.Int("stress.owners", 2, "resurrection test: processes that create and remove")
	flagObservers  = flag.Int("stress.observers", 2, "resurrection test: processes that look up and list")
	flagIterations = flag.Int("stress.iterations", 10_000, "seed test: iterations per process")
	flagProcs      = flag.Int("stress.procs", 4, "seed test: worker processes")
	flagDeadline   = flag.Duration("stress.deadline", 30*time.Second, "seed test: bound of one iteration (below the daemon's loader timeout, seedLoaderTimeout, so a deadlock that only the timeout breaks still fails)")
	flagDelay      = flag.Duration("stress.loader-delay", time.Millisecond, "seed test: how long the slow loader takes per lookup")
	flagExecEvery  = flag.Int("stress.exec-every", 50, "seed test: every Nth iteration runs the real ls and rm binaries (0: never)")
	flagBudget     = flag.Duration("stress.budget", 10*time.Minute, "backstop bound of each test's worker phase; past it the workers are killed and the test fails (a hang is caught sooner: -stress.stall)")
	flagStall      = flag.Duration("stress.stall", time.Minute, "a worker that completes no step for this long is hung: the workers are killed and the test fails")
)

// roleEnv names a worker's role; configEnv carries its JSON config.
const (
	roleEnv   = "STRESS_ROLE"
	configEnv = "STRESS_CONFIG"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(workerMain(role))
	}
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Println("stress: skipped, needs root")
		os.Exit(0)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Println("stress: skipped, no /dev/fuse")
		os.Exit(0)
	}
	harness.Main(m)
}

// workerConfig is what a worker is told, as JSON in configEnv.
type workerConfig struct {
	Index  int
	Mount  string // the mount point
	Parent int    // the test's pid: a worker whose parent changed exits
	MaxRun time.Duration

	// Resurrection test.
	Dir           string // directory of the names, under Mount
	Shm           string // the shared-memory file
	Owners        int
	SlotsPerOwner int
	Cycles        int // this owner's cycles

	// Seed test.
	Iterations int
	Deadline   time.Duration
	Daemon     int // the daemon's pid: a worker that sees a hang has it dump its goroutines
	ExecEvery  int
	Delay      time.Duration // loader
	Socket     string        // loader
}

// summary is a worker's last line on stdout.
type summary struct {
	Role          string
	Index         int
	Cycles        int            // owner: create/remove cycles done; seed: iterations
	Lookups       int            // stat calls checked
	Readdirs      int            // directory listings checked
	Execs         int            // real binaries run
	Resurrections int            // see resurrect_test.go
	Samples       []string       // the first few resurrections and errors, described
	Errors        map[string]int // "op errno" -> count, for errors not allowed
	Errnos        map[string]int // "op errno" -> count, for allowed errors
	Loads         int            // loader: lookups answered
	Registered    int            // loader: names registered
	Slowest       time.Duration  // seed: the slowest iteration
}

func (s *summary) sample(format string, a ...any) {
	if len(s.Samples) < 20 {
		s.Samples = append(s.Samples, fmt.Sprintf(format, a...))
	}
}

func (s *summary) errno(allowed bool, op string, err error) {
	key := op + " " + errName(err)
	m := &s.Errnos
	if !allowed {
		m = &s.Errors
		s.sample("%s: %v", op, err)
	}
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[key]++
}

func errName(err error) string {
	var no syscall.Errno
	if e, ok := err.(syscall.Errno); ok {
		no = e
	} else if pe, ok := err.(*os.PathError); ok {
		if e, ok := pe.Err.(syscall.Errno); ok {
			no = e
		}
	}
	if no != 0 {
		if n := unix.ErrnoName(no); n != "" {
			return n
		}
		return strconv.Itoa(int(no))
	}
	return err.Error()
}

// progress counts a worker's completed steps (an iteration, a cycle, a
// checked lookup or listing, a lookup answered); workerMain prints it as
// "PROGRESS n" whenever it has moved, so that the test can tell a worker
// that is slow (a loaded machine) from one that is stuck.
var progress atomic.Int64

// progressEvery is how often a worker reports progress.
const progressEvery = 250 * time.Millisecond

// workerMain runs a worker; its exit status is 0 when it finished its
// work (whatever it found: the summary says), 3 on a hang, 2 on misuse.
func workerMain(role string) int {
	var cfg workerConfig
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "stress worker: bad config:", err)
		return 2
	}
	if err := os.Chdir("/"); err != nil { // never inside the mount
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// An orphaned worker (the test was killed) stops by itself.
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		for range t.C {
			if os.Getppid() != cfg.Parent {
				fmt.Fprintln(os.Stderr, "stress worker: parent gone; exiting")
				os.Exit(4)
			}
		}
	}()
	go func() {
		var last int64
		for range time.Tick(progressEvery) {
			if n := progress.Load(); n != last {
				last = n
				fmt.Printf("PROGRESS %d\n", n)
			}
		}
	}()
	time.AfterFunc(cfg.MaxRun, func() {
		fmt.Fprintf(os.Stderr, "stress worker %s/%d: still running after %v; exiting\n", role, cfg.Index, cfg.MaxRun)
		os.Exit(3)
	})
	var s *summary
	switch role {
	case "owner":
		s = ownerMain(cfg)
	case "observer":
		s = observerMain(cfg)
	case "seed":
		s = seedMain(cfg)
	case "loader":
		s = loaderMain(cfg)
	default:
		fmt.Fprintln(os.Stderr, "stress worker: unknown role", role)
		return 2
	}
	s.Role, s.Index = role, cfg.Index
	b, _ := json.Marshal(s)
	fmt.Printf("SUMMARY %s\n", b)
	return 0
}

// worker is a started worker process.
type worker struct {
	name  string
	mount string
	cmd   *exec.Cmd
	out   *harness.SyncBuffer
	done  chan struct{} // closed once waited for
	err   error
}

// startWorker starts this binary as a worker with role and cfg, in its
// own process group, and registers a cleanup that kills that group.
func startWorker(t *testing.T, role string, cfg workerConfig) *worker {
	t.Helper()
	cfg.Parent = os.Getpid()
	if cfg.MaxRun == 0 {
		cfg.MaxRun = *flagBudget + 30*time.Second
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{name: fmt.Sprintf("%s/%d", role, cfg.Index), mount: cfg.Mount, out: &harness.SyncBuffer{}, done: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0])
	w.cmd.Dir = "/"
	w.cmd.Env = append(os.Environ(), roleEnv+"="+role, configEnv+"="+string(b),
		"GORACE=atexit_sleep_ms=0")
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := harness.ForkOnSpawner(w.cmd); err != nil {
		t.Fatalf("start worker %s: %v", w.name, err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		if err := w.kill(cfg.Mount); err != nil {
			t.Error(err)
		}
	})
	return w
}

// Bounds of ending a worker.
const (
	reapDeadline  = 5 * time.Second
	abortDeadline = 10 * time.Second
)

// kill ends the worker's whole process group (it and any ls or rm it
// runs) and waits for it, bounded. A process whose FUSE request the daemon
// already received cannot die before it is answered, even by SIGKILL; if
// the daemon cannot answer any more (it died with a thread stuck in a
// kernel notify, waiting on a directory lock such a process holds), only
// aborting the FUSE connection of mnt ends the wait, so kill does that.
func (w *worker) kill(mnt string) error {
	select {
	case <-w.done:
		return nil
	default:
	}
	syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-w.done:
		return nil
	case <-time.After(reapDeadline):
	}
	aerr := abortFUSE(mnt)
	select {
	case <-w.done:
		return fmt.Errorf("worker %s survived SIGKILL until the FUSE connection of %s was aborted (abort: %v)", w.name, mnt, aerr)
	case <-time.After(abortDeadline):
		return fmt.Errorf("worker %s (pid %d) survived SIGKILL and the abort of the FUSE connection of %s (abort: %v)", w.name, w.cmd.Process.Pid, mnt, aerr)
	}
}

// abortFUSE aborts the FUSE connection mounted on mnt (fusectl's abort
// file): every request pending on it fails at once.
func abortFUSE(mnt string) error {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mnt))
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return fmt.Errorf("%s is not mounted", mnt)
	}
	const ctl = "/sys/fs/fuse/connections"
	abort := filepath.Join(ctl, strconv.Itoa(ms[0].Minor), "abort")
	if _, err := os.Stat(abort); os.IsNotExist(err) {
		if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount fusectl: %w", err)
		}
	}
	return os.WriteFile(abort, []byte("1"), 0o200)
}

// summary parses the worker's SUMMARY line.
func (w *worker) summary() (*summary, error) {
	for _, l := range strings.Split(w.out.String(), "\n") {
		if j, ok := strings.CutPrefix(l, "SUMMARY "); ok {
			var s summary
			if err := json.Unmarshal([]byte(j), &s); err != nil {
				return nil, err
			}
			return &s, nil
		}
	}
	return nil, fmt.Errorf("worker %s wrote no summary (exit: %v); output:\n%s", w.name, w.err, w.out.Tail(4000))
}

// waitWorkers waits for every worker to finish. A worker whose output
// (its PROGRESS lines) has not moved for -stress.stall is hung; a phase
// still running after budget is past the backstop. Either way it kills
// them all and fails the test. A slow machine only makes the phase
// longer: the work is the issue's, whatever it costs.
func waitWorkers(t *testing.T, budget time.Duration, ws ...*worker) {
	t.Helper()
	start := time.Now()
	// Fail cleanly, with the workers' story, before go test's -timeout
	// panics.
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - 30*time.Second; left < budget {
			budget = max(left, time.Second)
		}
	}
	seen := make([]int, len(ws))        // output length last seen
	moved := make([]time.Time, len(ws)) // when it last changed
	for i := range moved {
		moved[i] = start
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	killAll := func(format string, a ...any) {
		t.Helper()
		for _, w := range ws {
			if err := w.kill(w.mount); err != nil {
				t.Error(err)
			}
		}
		t.Fatalf(format, a...)
	}
	for {
		running := 0
		now := time.Now()
		for i, w := range ws {
			select {
			case <-w.done:
				continue
			default:
			}
			running++
			if n := len(w.out.String()); n != seen[i] {
				seen[i], moved[i] = n, now
			} else if stalled := now.Sub(moved[i]); stalled > *flagStall {
				killAll("worker %s made no progress for %v (a hang?); killed; its output:\n%s",
					w.name, stalled.Round(100*time.Millisecond), w.out.Tail(2000))
			}
		}
		if running == 0 {
			break
		}
		if el := now.Sub(start); el > budget {
			killAll("workers still running after %v, all making progress (-stress.budget); killed", el.Round(time.Second))
		}
		<-tick.C
	}
	for _, w := range ws {
		if w.err != nil {
			t.Errorf("worker %s: %v; output:\n%s", w.name, w.err, w.out.Tail(4000))
		}
	}
}

// mountDevfsd mounts devfsd with every kernel cache timeout 0 (every
// access is a request) and returns the mount and a client of its control
// socket.
func mountDevfsd(t *testing.T, o harness.Options) (*harness.Mount, *client.Client, string) {
	t.Helper()
	m := harness.MountT(t, harness.Devfsd(), o)
	sock := controlSocket(t, m)
	c := client.New(sock)
	t.Cleanup(c.Close)
	return m, c, sock
}

// controlSocket finds the daemon's control socket: the listening Unix
// socket among its open files (/proc/PID/fd), named in /proc/net/unix.
// The harness passes no --socket, and the default path is derived inside
// cmd/devfsd; reading it from the process keeps the test independent of
// that derivation. The socket is served just after the mount is live.
func controlSocket(t *testing.T, m *harness.Mount) string {
	t.Helper()
	deadline := time.Now().Add(harness.MountDeadline)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if p := listeningSocket(m.Pid()); p != "" {
			c := client.New(p)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := c.Stats(ctx)
			cancel()
			c.Close()
			if err == nil {
				return p
			}
		}
		if !m.Alive() {
			t.Fatalf("devfsd exited:\n%s", m.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no control socket served by devfsd (pid %d) within %v", m.Pid(), harness.MountDeadline)
		}
		<-tick.C
	}
}

func listeningSocket(pid int) string {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return ""
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	// Num RefCount Protocol Flags Type St Inode Path; St 01 is listening.
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 8 && fl[5] == "01" && inodes[fl[6]] && strings.HasSuffix(fl[7], ".sock") {
			return fl[7]
		}
	}
	return ""
}

// extraStats returns the daemon's /v1/stats "extra" counters.
func extraStats(t *testing.T, c *client.Client) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	return st.Extra
}

// metric returns the value of the Prometheus sample line that starts
// with prefix (a metric name with its labels), if /metrics serves it.
func metric(t *testing.T, c *client.Client, prefix string) (float64, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := c.Metrics(ctx)
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// checkDaemonHealthy: the daemon is alive, serves its mount, and no
// lookup record is left in flight (polled with a deadline: a record whose
// owner was interrupted is finished by a goroutine of its own).
func checkDaemonHealthy(t *testing.T, m *harness.Mount, c *client.Client) {
	t.Helper()
	if !m.Alive() {
		t.Fatalf("devfsd died:\n%s", m.Output())
	}
	var st unix.Stat_t
	if err := unix.Stat(m.Dir, &st); err != nil {
		t.Fatalf("stat of the mount's root: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ex := extraStats(t, c)
		n, ok := ex["lookup_in_flight"]
		if !ok {
			t.Fatalf("/v1/stats has no lookup_in_flight: %v", ex)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d in-flight lookup records left 10s after the last worker exited", n)
		}
		<-tick.C
	}
	if v, ok := metric(t, c, "devfsd_lookup_waiters"); ok && v != 0 {
		t.Errorf("devfsd_lookup_waiters = %v after the run, want 0", v)
	}
}

// inMount is a path under the mount.
func inMount(m *harness.Mount, p ...string) string {
	return filepath.Join(append([]string{m.Dir}, p...)...)
}
