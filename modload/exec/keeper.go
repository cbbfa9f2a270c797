package exec

// Programs die with their parent
//
// A program's process group must not outlive the process that runs it
// (devfsd, or `devfsd helper`), whether that process exits, is ended by
// a signal, or is killed with SIGKILL: nothing would be left to bound the
// program in time, and nothing would ever kill it. Two mechanisms do it,
// because neither is enough alone:
//
//   - PR_SET_PDEATHSIG (SysProcAttr.Pdeathsig = SIGKILL): the kernel kills
//     the program the moment its parent dies, with no window at all. But it
//     reaches only the program itself, not what the program started in its
//     group, and "parent" means the thread that forked it (prctl(2)): a Go
//     thread can exit (a goroutine that returns while locked to its thread
//     takes it along) and would take the program with it. So every program
//     is forked from one goroutine locked to its thread for the life of the
//     process (spawn), which never exits while the process lives. (The
//     kernel also clears it when a program executes a set-user-ID or
//     set-group-ID file; the keeper still reaches that program's group.)
//
//   - the keeper: a small process (this binary again, re-executed through
//     /proc/self/exe and caught by this package's init before main runs)
//     that holds the read end of a pipe whose write end only this process
//     has. The Runner tells it each group it starts ("+PGID") and each
//     group whose leader has exited ("-PGID"). When the pipe reaches end of
//     file — which the kernel makes happen when the last descriptor of the
//     write end closes, that is when this process is gone, however it went
//     (a thread's exit does not close descriptors) — or when it is sent
//     SIGTERM, the keeper kills every group it still knows with
//     kill(-PGID, SIGKILL) and exits.
//
// Pid reuse. A group is announced right after its leader is forked and
// withdrawn after the leader has exited but before it is reaped (waitid
// with WNOWAIT): while announced, the leader's pid is held by the leader or
// its zombie, so the number cannot name any other process group. The
// keeper reads in order, so a kill at end of file never reaches a group
// withdrawn before. The Runner's own kills (deadline, context, Stop) are
// made only before the reap, under the same guard (proc.kill).
//
// What is left. A group the program's leader starts in the microseconds
// between its fork and its announcement is killed only through the
// leader's Pdeathsig, not with its group; a descendant that leaves the
// group (setsid, setpgid) is out of reach of both, as it is of the
// deadline's kill. Members left in a group after its leader exited are
// killed neither at the deadline nor at our death: the tie ends with the
// leader.
//
// Alternatives weighed. PR_SET_CHILD_SUBREAPER makes this process the
// reaper of orphaned descendants, which helps nothing once this process is
// the one that died. A cgroup (cgroup.kill) needs someone alive to write it
// and a delegated hierarchy outside systemd. A PID namespace per program
// (CLONE_NEWPID + Pdeathsig) kills every descendant in the kernel, but
// needs CAP_SYS_ADMIN (a non-root `devfsd helper` has none), makes each
// program pid 1 (which ignores signals it has no handler for), and kills
// what a program backgrounds as soon as the program exits.

import (
	"bufio"
	"fmt"
	"os"
	osexec "os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The keeper is this binary run with argv[0] keeperArg0 and keeperEnv set
// to keeperEnvValue, and nothing else on its command line.
const (
	keeperArg0     = "devfsd-exec-keeper"
	keeperEnv      = "DEVFSD_EXEC_KEEPER"
	keeperEnvValue = "1"
)

func init() {
	if len(os.Args) == 1 && os.Args[0] == keeperArg0 && os.Getenv(keeperEnv) == keeperEnvValue {
		os.Exit(keeperMain(os.Stdin))
	}
}

// keeperMain is the keeper process: it reads "+PGID" and "-PGID" lines
// from in until end of file or SIGTERM, then kills every group it holds.
func keeperMain(in *os.File) int {
	// Its own process group (Setpgid) keeps terminal signals away; a
	// hangup must not end it before its parent.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	groups := make(map[int]int)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				killGroups(groups)
				return 0
			}
			if len(l) < 2 {
				continue
			}
			g, err := strconv.Atoi(l[1:])
			if err != nil || g <= 1 {
				continue
			}
			switch l[0] {
			case '+':
				groups[g]++
			case '-':
				if groups[g]--; groups[g] <= 0 {
					delete(groups, g)
				}
			}
		case <-term:
			killGroups(groups)
			return 0
		}
	}
}

func killGroups(groups map[int]int) {
	for g := range groups {
		_ = unix.Kill(-g, unix.SIGKILL)
	}
}

// keeperLink is this process's end of the keeper: one per process, shared
// by every Runner, started at the first announcement.
type keeperLink struct {
	mu sync.Mutex
	// Guarded by mu:
	w      *os.File    // the pipe's write end; nil while no keeper runs
	cmd    *osexec.Cmd // the running keeper
	groups map[int]int // groups announced and not withdrawn (a count each)
	warned bool        // a failure to start was logged
	log    *zap.Logger // the last announcing Runner's
}

var keeper = keeperLink{groups: make(map[int]int), log: zap.NewNop()}

// announce tells the keeper that group g runs now.
func (k *keeperLink) announce(g int, log *zap.Logger) {
	if !tieToParent {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.groups[g]++
	if log != nil {
		k.log = log
	}
	if k.w == nil {
		k.startLocked() // sends every group, g included
		return
	}
	k.sendLocked('+', g)
}

// ensure starts the keeper if none is linked, so that the next group is
// announced with one pipe write.
func (k *keeperLink) ensure(log *zap.Logger) {
	if !tieToParent {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if log != nil {
		k.log = log
	}
	if k.w == nil {
		k.startLocked()
	}
}

// withdraw tells the keeper that group g's leader has exited (and is not
// reaped yet).
func (k *keeperLink) withdraw(g int) {
	if !tieToParent {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.groups[g]--; k.groups[g] <= 0 {
		delete(k.groups, g)
	}
	if k.w != nil {
		k.sendLocked('-', g)
	}
}

// sendLocked writes one line; a keeper that cannot be written to is
// replaced. Precondition: k.mu held.
func (k *keeperLink) sendLocked(op byte, g int) {
	if _, err := fmt.Fprintf(k.w, "%c%d\n", op, g); err != nil {
		k.log.Warn("the exec keeper is gone; starting another", zap.Error(err))
		k.stopLocked()
		k.startLocked()
	}
}

// stopLocked drops the link to the current keeper (which then kills what
// it holds and exits). Precondition: k.mu held.
func (k *keeperLink) stopLocked() {
	if k.w != nil {
		k.w.Close()
		k.w, k.cmd = nil, nil
	}
}

// startLocked starts a keeper and announces every group held. On failure
// the programs are still killed by their Pdeathsig, not with their groups;
// the failure is logged once and tried again at the next announcement.
// Precondition: k.mu held, no keeper linked.
func (k *keeperLink) startLocked() {
	r, w, err := os.Pipe() // both close-on-exec: no program inherits w
	if err != nil {
		k.startFailed(err)
		return
	}
	defer r.Close()
	if _, err := CloseOnExecAll(); err != nil {
		k.log.Warn("cannot check inherited descriptors", zap.Error(err))
	}
	cmd := &osexec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{keeperArg0},
		Env:         Environ(nil, keeperEnv+"="+keeperEnvValue),
		Dir:         "/",
		Stdin:       r,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		k.startFailed(err)
		return
	}
	go func() {
		cmd.Wait()
		k.mu.Lock()
		if k.cmd == cmd { // died on its own: the next announcement restarts it
			k.stopLocked()
		}
		k.mu.Unlock()
	}()
	k.w, k.cmd = w, cmd
	for g, n := range k.groups {
		for i := 0; i < n; i++ {
			if _, err := fmt.Fprintf(w, "+%d\n", g); err != nil {
				k.stopLocked()
				k.startFailed(err)
				return
			}
		}
	}
}

func (k *keeperLink) startFailed(err error) {
	if !k.warned {
		k.warned = true
		k.log.Warn("cannot start the exec keeper: a program's process group will not be killed if this process dies, only the program", zap.Error(err))
	}
}

// spawnReq asks the spawner to start cmd.
type spawnReq struct {
	cmd  *osexec.Cmd
	log  *zap.Logger
	errc chan error
}

var (
	spawnerOnce sync.Once
	spawnReqs   chan spawnReq
)

// spawn starts cmd from the one goroutine of this process that is locked
// to its thread for good, so that the program's Pdeathsig fires when this
// process dies and never when some other thread exits, and announces its
// group to the keeper on that thread as soon as Start returns. The keeper
// is started before the program, so that the program runs unannounced
// only for the length of one pipe write.
func spawn(cmd *osexec.Cmd, log *zap.Logger) error {
	spawnerOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnReqs {
				keeper.ensure(r.log)
				err := r.cmd.Start()
				if err == nil {
					keeper.announce(r.cmd.Process.Pid, r.log)
				}
				r.errc <- err
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReqs <- spawnReq{cmd, log, errc}
	return <-errc
}

// waitExited blocks until process pid has exited, leaving it waitable (a
// zombie holding its pid) for os/exec's Wait.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}
