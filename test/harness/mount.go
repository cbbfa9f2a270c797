package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Deadlines of the mount life cycle.
const (
	// MountDeadline bounds the wait for a started server's mount to show
	// in /proc/self/mountinfo.
	MountDeadline = 20 * time.Second
	// TermDeadline is how long a server has to exit after SIGTERM before
	// it gets SIGKILL.
	TermDeadline = 5 * time.Second
	// statsDeadline bounds the wait for a fresh stats dump.
	statsDeadline = 5 * time.Second
)

// Mount is one mounted backend. Close it exactly once (more is harmless).
type Mount struct {
	Backend string // backend name
	Dir     string // the mount point (a real path)
	// ColdPopulate reports that Options.Populate was done without the
	// kernel caching the entries (server-side before mounting, or tmpfs).
	ColdPopulate bool

	proc      *process // the server; nil for tmpfs
	statsPath string   // barefs: where SIGUSR1 dumps the counts
	socket    string   // devfsd: the control socket, whose /metrics has the counts

	closeOnce sync.Once
	closeErr  error
}

// Pid is the server process's id, or 0 for a backend without a process.
func (m *Mount) Pid() int {
	if m.proc == nil {
		return 0
	}
	return m.proc.cmd.Process.Pid
}

// Output is what the server wrote to stdout and stderr so far.
func (m *Mount) Output() string {
	if m.proc == nil {
		return ""
	}
	return m.proc.out.String()
}

// Alive reports whether the server process is still running (always true
// for a backend without a process).
func (m *Mount) Alive() bool {
	if m.proc == nil {
		return true
	}
	select {
	case <-m.proc.done:
		return false
	default:
		return true
	}
}

// Requests returns the requests the server has served so far, by FUSE
// opcode name ("LOOKUP", "GETATTR", ...). FORGET counts forgotten nodes.
// ErrNoStats when the backend does not count.
//
// devfsd counts the requests it answers (its metric
// devfsd_fuse_request_duration_seconds_count{op}); requests without an
// answer (FORGET, BATCH_FORGET, RELEASE, RELEASEDIR, INTERRUPT) and those
// go-fuse answers by itself (INIT, ENOSYS ones) are not in its counts.
func (m *Mount) Requests() (map[string]uint64, error) {
	if m.socket != "" {
		ms, err := m.Metrics()
		if err != nil {
			return nil, err
		}
		const pre = `devfsd_fuse_request_duration_seconds_count{op="`
		r := map[string]uint64{}
		for k, v := range ms {
			if op, ok := strings.CutPrefix(k, pre); ok {
				r[strings.TrimSuffix(op, `"}`)] = uint64(v)
			}
		}
		return r, nil
	}
	if m.statsPath == "" {
		return nil, ErrNoStats
	}
	prev := readStats(m.statsPath)
	if err := m.proc.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	// The dump is asynchronous: wait for one newer than what was there.
	deadline := time.Now().Add(statsDeadline)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if s := readStats(m.statsPath); s != nil && (prev == nil || s.Seq > prev.Seq) {
			return s.Requests, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("stats: no dump in %s within %v", m.statsPath, statsDeadline)
		}
		select {
		case <-m.proc.done:
			return nil, fmt.Errorf("stats: server exited: %s", m.proc.out.String())
		case <-tick.C:
		}
	}
}

// Metrics scrapes a devfsd mount's control socket (GET /metrics) and
// returns every sample by its series ("name{labels}" as the text format
// writes it). ErrNoStats for other backends or without Options.Stats.
func (m *Mount) Metrics() (map[string]float64, error) {
	if m.socket == "" {
		return nil, ErrNoStats
	}
	c := &http.Client{Timeout: statsDeadline, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", m.socket)
		}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://devfsd/metrics")
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s: %s", resp.Status, body)
	}
	r := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		r[l[:i]] = v
	}
	return r, nil
}

type statsDump struct {
	Seq      uint64            `json:"seq"`
	Requests map[string]uint64 `json:"requests"`
}

func readStats(path string) *statsDump {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var s statsDump
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return &s
}

// CPU is the server process's CPU time so far: the sum over its threads
// of the time they ran (the first field of /proc/PID/task/TID/schedstat,
// in nanoseconds), or, where schedstat is missing, utime+stime of
// /proc/PID/stat (in clock ticks of 10 ms, too coarse for a short phase).
// The schedstat sum leaves out threads that have exited; Go servers
// keep theirs. Zero for tmpfs.
func (m *Mount) CPU() (time.Duration, error) {
	if m.proc == nil {
		return 0, nil
	}
	if d, err := schedCPU(m.Pid()); err == nil {
		return d, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.Pid()))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from
	// after its closing parenthesis. utime and stime are fields 14, 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/PID/stat: %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/PID/stat: %q", s)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const hz = 100 // USER_HZ, fixed at 100 on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// schedCPU sums the run time of pid's threads from schedstat.
func schedCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range tids {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread exited meanwhile
			}
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return 0, fmt.Errorf("bad schedstat %q", b)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += ns
	}
	return time.Duration(sum), nil
}

// RSS is the server's resident set size in bytes (VmRSS), 0 for tmpfs.
func (m *Mount) RSS() (int64, error) {
	if m.proc == nil {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.Pid()))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// Close stops the server (SIGTERM to it, SIGKILL to its process group after
// TermDeadline), detaches the mount if it is still there
// (umount2(MNT_DETACH): never blocks on a busy or dead mount) and removes
// the mount point. It is idempotent and safe to call on every path.
func (m *Mount) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Mount) close() error {
	var errs []error
	if m.proc != nil {
		if err := m.proc.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if mounted, err := IsMounted(m.Dir); err != nil {
		errs = append(errs, err)
	} else if mounted {
		// A FUSE server that unmounted on SIGTERM leaves nothing; a
		// killed one or tmpfs leaves the mount: detach it.
		if err := unix.Unmount(m.Dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			errs = append(errs, fmt.Errorf("detach %s: %w", m.Dir, err))
		}
	}
	if err := os.Remove(m.Dir); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	if m.statsPath != "" {
		os.Remove(m.statsPath)
		os.Remove(m.statsPath + ".tmp")
	}
	if m.socket != "" {
		os.Remove(m.socket) // the daemon removes it at a clean stop
	}
	return errors.Join(errs...)
}

// IsMounted reports whether dir is a mount point in this mount namespace.
func IsMounted(dir string) (bool, error) {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		return false, err
	}
	return len(ms) > 0, nil
}

// MountsUnder lists the mount points at or below dir.
func MountsUnder(dir string) ([]string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	var r []string
	for _, m := range ms {
		r = append(r, m.Mountpoint+" ("+m.FSType+")")
	}
	return r, nil
}

// FUSEMountsUnder lists the FUSE mount points at or below dir.
func FUSEMountsUnder(dir string) ([]string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	var r []string
	for _, m := range ms {
		if m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.") {
			r = append(r, m.Mountpoint+" ("+m.FSType+")")
		}
	}
	return r, nil
}

// process is a started server.
type process struct {
	cmd  *exec.Cmd
	conn string // the FUSE connection's number (the mount's device minor), once mounted
	out  *SyncBuffer
	done chan struct{} // closed when the process has been waited for
	err  error         // Wait's result, set before done is closed
}

// spawn starts cmd in its own process group, with stdout and stderr
// captured. The child gets SIGTERM if this process dies first (so a killed
// test binary does not leave a server behind: the server unmounts on
// SIGTERM). PR_SET_PDEATHSIG fires when the *thread* that forked exits, so
// every child is forked from one goroutine locked to its thread for the life
// of the process.
func spawn(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, out: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := ForkOnSpawner(cmd); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

var (
	spawnerOnce sync.Once
	spawnReqs   chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

// ForkOnSpawner starts cmd (cmd.Start) from the one goroutine of this
// process locked to its thread for good, so that a Pdeathsig in
// cmd.SysProcAttr fires when this process dies, not when whichever thread
// happened to fork exits.
func ForkOnSpawner(cmd *exec.Cmd) error {
	spawnerOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnReqs {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReqs <- spawnReq{cmd, errc}
	return <-errc
}

// stop ends the process: SIGTERM, then SIGKILL to the whole group after
// TermDeadline. It returns an error only if the process could not be ended.
func (p *process) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(TermDeadline)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	t.Reset(TermDeadline)
	select {
	case <-p.done:
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", filepath.Base(p.cmd.Path), TermDeadline)
	case <-t.C:
	}
	// A server that holds a file in its own mount cannot finish exiting:
	// closing it waits for a reply only the server could send. Abort the
	// connection, which fails every pending request.
	aerr := abortConn(p.conn)
	t.Reset(TermDeadline)
	select {
	case <-p.done:
		return fmt.Errorf("%s hung in exit after SIGKILL; FUSE connection %s aborted", filepath.Base(p.cmd.Path), p.conn)
	case <-t.C:
		return fmt.Errorf("%s (pid %d) survived SIGKILL and connection abort (%v)", filepath.Base(p.cmd.Path), p.cmd.Process.Pid, aerr)
	}
}

// abortConn aborts FUSE connection conn through the fusectl file system,
// mounting it at its usual place if it is not there.
func abortConn(conn string) error {
	if conn == "" {
		return errors.New("connection unknown")
	}
	const ctl = "/sys/fs/fuse/connections"
	abort := filepath.Join(ctl, conn, "abort")
	if _, err := os.Stat(abort); os.IsNotExist(err) {
		if ok, _ := IsMounted(ctl); !ok {
			if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
				return fmt.Errorf("mount fusectl: %w", err)
			}
		}
	}
	return os.WriteFile(abort, []byte("1"), 0o200)
}

// waitMounted waits until dir is a mount point, the process exits, or the
// deadline passes. It sleeps in poll(2) on /proc/self/mountinfo, which
// reports POLLPRI when the mount table changes; the 50 ms poll timeout only
// bounds how late an exit of the process is noticed.
func waitMounted(dir string, p *process) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(MountDeadline)
	for {
		// Poll first, then check: a change between the check and the
		// poll is then reported by the next poll.
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		unix.Poll(fds, 0) // consume a pending event
		ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
		if err != nil {
			return err
		}
		if len(ms) > 0 {
			p.conn = strconv.Itoa(ms[0].Minor)
			// Live means served: a stat goes through INIT and GETATTR.
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); err != nil {
				return fmt.Errorf("%s mounted but not served: %w", dir, err)
			}
			return nil
		}
		select {
		case <-p.done:
			return &earlyExit{err: p.err, out: p.out.String()}
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not mounted within %v; server output:\n%s", dir, MountDeadline, p.out.String())
		}
		unix.Poll(fds, 50)
	}
}

// earlyExit: the server exited before its mount appeared.
type earlyExit struct {
	err error
	out string
}

func (e *earlyExit) Error() string {
	return fmt.Sprintf("server exited before mounting (%v); output:\n%s", e.err, e.out)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a child's
// stdout and stderr) and readers. Its zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tail is the last n bytes written, prefixed with "..." when cut.
func (s *SyncBuffer) Tail(n int) string {
	str := s.String()
	if len(str) > n {
		str = "..." + str[len(str)-n:]
	}
	return str
}

// populateBySyscalls makes the Options.Populate tree through the mount.
func populateBySyscalls(dir string, pop []Populate) error {
	for _, p := range pop {
		d := filepath.Join(dir, p.Dir)
		if err := unix.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
		for i := 0; i < p.N; i++ {
			name := filepath.Join(d, PopulateName(i))
			if err := unix.Mknod(name, unix.S_IFREG|0o644, 0); err != nil {
				return fmt.Errorf("mknod %s: %w", name, err)
			}
		}
	}
	return nil
}
