// Package exec runs module-loading programs for devfsd: the exec loader of
// DESIGN.md section 5 ([Loader], a program per miss, modprobe-style), and
// the [Runner] under it, which the devfsd.conf helper also uses for its
// EXECUTE and MODLOAD actions.
//
// # How a program is run
//
// Every program is started the same way, because it may look names up in
// the mount whose lookup is waiting for it (DESIGN.md section 7):
//
//   - in a process group of its own (Setpgid), so that the deadline kills
//     it and everything it started in that group with one kill(-pgid,
//     SIGKILL), and so that the lookups of the whole group can be
//     recognised ([Runner.InGroup]) and bypass the loader's wait;
//   - with its working directory "/", never inside the mount;
//   - with standard input /dev/null and no other file descriptor than
//     standard output and error: os/exec passes only those, and every
//     descriptor Go opens is close-on-exec — but go-fuse opens /dev/fuse
//     with a raw open(2) without O_CLOEXEC when it mounts directly, so
//     before each start the Runner marks every descriptor above 2 of this
//     process close-on-exec ([CloseOnExecAll]); a FUSE descriptor is never
//     inherited;
//   - with this process's environment minus the variables that belong to
//     the service manager's conversation with this process (NOTIFY_SOCKET,
//     LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, WATCHDOG_USEC, WATCHDOG_PID):
//     a child that inherited NOTIFY_SOCKET could tell systemd READY=1 or
//     STOPPING=1 in our name; plus the variables the caller adds;
//   - bounded in time: past Spec.Timeout (or when the caller's context
//     ends, or [Runner.Stop], whichever is first) the whole process group
//     is killed with SIGKILL, and the wait for its output ends at most
//     WaitDelay later even if a descendant in another group keeps the pipe
//     open;
//   - tied to this process: if this process dies (SIGKILL included) or
//     exits while a program runs, the program is killed by the kernel
//     (Pdeathsig) and its process group by the keeper, a small process of
//     this binary that outlives us only to do that (keeper.go).
//
// Because the keeper is this binary run again, this package's init
// recognises a keeper invocation and runs it instead of the program:
// every binary that uses a Runner carries the keeper without doing
// anything.
package exec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// WaitDelay bounds the wait for a killed (or exited) program's output
// pipes to close, which a descendant outside its process group can hold.
const WaitDelay = 500 * time.Millisecond

// maxLine is the longest output line passed to Spec.Stdout; longer lines
// are cut.
const maxLine = 4096

// Spec is one program to run.
type Spec struct {
	// Argv is the program and its arguments. A program name without a
	// slash is looked up in PATH.
	Argv []string
	// Env is added to the cleaned environment (KEY=value).
	Env []string
	// Timeout bounds the run; 0 means only ctx bounds it.
	Timeout time.Duration
	// Stdout, if not nil, is called with each line of standard output, in
	// order, from one goroutine. Nil: standard output is discarded.
	Stdout func(line string)
	// Stderr, if not nil, is called with each line of standard error.
	// Nil: standard error is discarded.
	Stderr func(line string)
}

// Result is how a run ended.
type Result struct {
	Pid      int           // the program's pid, and its process group id
	ExitCode int           // -1 if killed by a signal or not started
	Killed   bool          // the deadline or ctx ended it
	Elapsed  time.Duration // from start to exit
}

// ErrTimeout is wrapped by Run's error when the program was killed at its
// deadline.
var ErrTimeout = errors.New("exec: killed at its deadline")

// ErrStopped is wrapped by Run's error when Stop killed the program, or
// when Run was called after Stop.
var ErrStopped = errors.New("exec: the runner is stopped")

// Runner runs programs and remembers the process groups of those that are
// running, so that their lookups can be told from everyone else's. Safe for
// concurrent use; the zero value is not usable, use NewRunner.
type Runner struct {
	log *zap.Logger

	mu sync.Mutex
	// groups holds the programs running now by process group id (each
	// program leads its own group). Guarded by mu.
	groups map[int]*proc
	// stopped is set by Stop. Guarded by mu.
	stopped bool
	// n mirrors len(groups) for InGroup's lock-free fast path; written
	// under mu.
	n atomic.Int64

	stopc    chan struct{} // closed by Stop
	stopOnce sync.Once
}

// proc is one running program, from its start to its reap.
type proc struct {
	pid int // the program's pid and process group id
	mu  sync.Mutex
	// reaped is set, under mu, once the program has exited and just
	// before it is reaped: from then on its pid may name another process,
	// and its group is killed no more.
	reaped bool
}

// kill kills p's process group unless p has been reaped.
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
	}
}

// NewRunner returns a Runner that logs to log (nil: nowhere).
func NewRunner(log *zap.Logger) *Runner {
	if log == nil {
		log = zap.NewNop()
	}
	return &Runner{log: log, groups: make(map[int]*proc), stopc: make(chan struct{})}
}

// Stop kills the process group of every program running now and makes
// later Runs fail with ErrStopped: for a daemon that stops. The Runs it
// ends return errors wrapping ErrStopped. Idempotent; it does not wait
// for the Runs to return.
func (r *Runner) Stop() {
	r.stopOnce.Do(func() { close(r.stopc) })
	r.mu.Lock()
	r.stopped = true
	ps := make([]*proc, 0, len(r.groups))
	for _, p := range r.groups {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		p.kill()
	}
}

// scrubbed are the variables a child never inherits.
var scrubbed = []string{"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"}

// Environ returns env (os.Environ() if nil) without the service manager's
// variables, with extra appended (later entries override earlier ones of
// the same key, as os/exec does).
func Environ(env []string, extra ...string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+len(extra))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, s := range scrubbed {
			if k == s {
				drop = true
				break
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// CloseOnExecAll sets FD_CLOEXEC on every open descriptor of this process
// above 2 that lacks it. Go opens everything close-on-exec; this catches
// descriptors opened by raw system calls (go-fuse's /dev/fuse on a direct
// mount). It returns how many descriptors it changed.
func CloseOnExecAll() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	changed := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // closed since ReadDir (the directory's own fd), or fine
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err == nil {
			changed++
		}
	}
	return changed, nil
}

// Run runs spec and returns when the program has exited or been killed.
// The error is nil for exit status 0; an *osexec.ExitError for another
// status; wraps ErrTimeout when the deadline killed it; wraps ctx.Err()
// when ctx ended it; other errors mean it could not be started.
func (r *Runner) Run(ctx context.Context, spec Spec) (Result, error) {
	res := Result{ExitCode: -1}
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return res, errors.New("exec: no program")
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if n, err := CloseOnExecAll(); err != nil {
		r.log.Warn("cannot check inherited descriptors", zap.Error(err))
	} else if n > 0 {
		r.log.Debug("marked descriptors close-on-exec", zap.Int("count", n))
	}
	cmd := osexec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = Environ(nil, spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if tieToParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	cmd.WaitDelay = WaitDelay
	var outDone, errDone chan struct{}
	if spec.Stdout != nil {
		pr, pw := io.Pipe()
		cmd.Stdout = pw
		outDone = lines(pr, spec.Stdout)
		defer pw.Close()
	}
	if spec.Stderr != nil {
		pr, pw := io.Pipe()
		cmd.Stderr = pw
		errDone = lines(pr, spec.Stderr)
		defer pw.Close()
	}
	// Start under mu, and record the group before releasing it: a lookup
	// the program makes as soon as it runs calls InGroup, which takes mu
	// and so sees the group recorded.
	// n is raised before the start so that such a lookup cannot take the
	// fast path of a Runner with nothing running.
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return res, fmt.Errorf("exec: %s: %w", spec.Argv[0], ErrStopped)
	}
	r.n.Add(1)
	var err error
	if tieToParent {
		err = spawn(cmd, r.log) // announces the group to the keeper
	} else {
		err = cmd.Start()
	}
	p := &proc{}
	if err == nil {
		res.Pid = cmd.Process.Pid
		p.pid = res.Pid
		r.groups[res.Pid] = p
	} else {
		r.n.Add(-1)
	}
	r.mu.Unlock()
	if err != nil {
		return res, fmt.Errorf("exec: starting %s: %w", spec.Argv[0], err)
	}
	start := time.Now()
	defer func() {
		r.mu.Lock()
		delete(r.groups, res.Pid)
		r.n.Add(-1)
		r.mu.Unlock()
	}()
	// The group was announced by spawn, before the waiter can withdraw
	// it (keeper.go).

	waited := make(chan error, 1)
	go func() {
		waitExited(p.pid)
		p.mu.Lock()
		p.reaped = true
		p.mu.Unlock()
		keeper.withdraw(p.pid)
		waited <- cmd.Wait()
	}()
	var timer <-chan time.Time
	if spec.Timeout > 0 {
		t := time.NewTimer(spec.Timeout)
		defer t.Stop()
		timer = t.C
	}
	var why error
	select {
	case err = <-waited:
	case <-timer:
		why = fmt.Errorf("%w (%v)", ErrTimeout, spec.Timeout)
	case <-ctx.Done():
		why = ctx.Err()
	case <-r.stopc:
		why = ErrStopped
	}
	if why != nil {
		// The whole group: the program and whatever it started.
		p.kill()
		res.Killed = true
		err = <-waited
	}
	res.Elapsed = time.Since(start)
	// Close the write ends (deferred above would be too late for the
	// readers we wait on) and let the readers drain.
	if w, ok := cmd.Stdout.(*io.PipeWriter); ok {
		w.Close()
	}
	if w, ok := cmd.Stderr.(*io.PipeWriter); ok {
		w.Close()
	}
	if outDone != nil {
		<-outDone
	}
	if errDone != nil {
		<-errDone
	}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if why != nil {
		return res, fmt.Errorf("exec: %s: %w", spec.Argv[0], why)
	}
	if errors.Is(err, osexec.ErrWaitDelay) {
		err = nil // exited; a descendant kept the pipe open, and lost it
	}
	return res, err
}

// lines calls f with each line read from r until EOF, then closes done.
// Lines longer than maxLine are cut; the rest is skipped.
func lines(r *io.PipeReader, f func(string)) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer r.Close()
		br := bufio.NewReaderSize(r, maxLine)
		for {
			line, isPrefix, err := br.ReadLine()
			if len(line) > 0 || (err == nil && !isPrefix) {
				f(string(bytes.TrimRight(line, "\r")))
			}
			for isPrefix && err == nil { // skip the rest of a long line
				_, isPrefix, err = br.ReadLine()
			}
			if err != nil {
				return
			}
		}
	}()
	return done
}

// Running returns the process group ids of the programs running now.
func (r *Runner) Running() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, 0, len(r.groups))
	for g := range r.groups {
		out = append(out, g)
	}
	return out
}

// InGroup reports whether pid (a process or thread id, as a FUSE request
// carries it) belongs to the process group of a program running now. It
// costs nothing while none runs, one getpgid(2) otherwise (no /proc file:
// a thread id is answered as its process). Pid reuse cannot make a
// stranger's group look like a program's: a group id is its leader's pid,
// and the program (the leader) is looked at only until it is marked
// reaped, which is before its pid is freed; so a group id read while the
// program is not yet marked names the program's group and no other.
func (r *Runner) InGroup(pid uint32) bool {
	if r.n.Load() == 0 || pid == 0 {
		return false
	}
	pgrp, err := unix.Getpgid(int(pid))
	if err != nil {
		return false
	}
	r.mu.Lock()
	p := r.groups[pgrp]
	r.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.reaped
}
