package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The keeper (`devfsd keeper -- devfsd mount ...`) plays, for a daemon run
// without systemd, the part of systemd a crash needs: it runs the daemon
// with NOTIFY_SOCKET pointing at a socket of its own, keeps the
// descriptors the daemon stores there (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1,
// as sd_notify(3) and systemd's service manager define them), and when
// the daemon dies it starts it again with those descriptors, through
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (sd_listen_fds(3)). The daemon
// cannot tell it from systemd: the same code path serves both.
//
// Restart policy, as systemd's Restart=always with a start limit: the
// daemon is started again after RestartDelay whatever ended it, except a
// clean exit (status 0: it was stopped, and unmounted), which ends the
// keeper too, and failures before READY=1, which end the keeper after
// StartLimit in a row (a daemon that cannot start is not restarted
// forever). SIGTERM and SIGINT are passed to the daemon, whose clean stop
// then ends the keeper; SIGHUP is passed on (reload).

// KeeperOptions configure RunKeeper.
type KeeperOptions struct {
	// Argv is the daemon's command line; Argv[0] is a path or a name
	// looked up in $PATH.
	Argv []string
	// Dir is where the notify socket is made; it must be a directory only
	// the keeper's user can write. Default: a new temporary directory,
	// removed at the end.
	Dir string
	// RestartDelay is the pause before a restart (RestartSec=). Default
	// 100ms.
	RestartDelay time.Duration
	// MaxFDs bounds the descriptors kept (FileDescriptorStoreMax=).
	// Default 64.
	MaxFDs int
	// StartLimit is how many starts in a row may fail before READY=1.
	// Default 5.
	StartLimit int
	// PidFile, if set, is written with the daemon's pid at each start
	// (replaced atomically).
	PidFile string
	// Self is the program that execs the daemon with LISTEN_PID set
	// (ExecListening); default os.Executable, run as `SELF keeper-exec --
	// ARGV...`.
	Self string
	// Logger; nil: none.
	Logger *zap.Logger
}

// keptFD is one descriptor in the keeper's store.
type keptFD struct {
	name string
	f    *os.File
}

// keeper is RunKeeper's state.
type keeper struct {
	o   KeeperOptions
	log *zap.Logger
	ln  *net.UnixConn

	mu    sync.Mutex
	fds   []keptFD // guarded by mu: in the order stored
	pid   int      // guarded by mu: the daemon's pid, 0 between runs
	ready bool     // guarded by mu: the current run said READY=1
	syncs map[string]chan struct{}
}

// ExecListening is the keeper's helper (`devfsd keeper-exec -- ARGV`): it
// sets LISTEN_PID to its own pid, which is what sd_listen_fds(3) checks,
// and execs argv in its place, so that the daemon has that pid. Go cannot
// run code between fork and exec; this is the step systemd takes there.
func ExecListening(argv []string) error {
	if len(argv) == 0 {
		return errors.New("keeper-exec: no command")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("keeper-exec: %w", err)
	}
	env := os.Environ()
	if os.Getenv("LISTEN_FDS") != "" {
		env = append(withoutEnv(env, "LISTEN_PID"), "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	}
	return fmt.Errorf("keeper-exec: %s: %w", path, syscall.Exec(path, argv, env))
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// RunKeeper runs the daemon of o.Argv under a descriptor keeper until the
// daemon stops cleanly (nil), fails to start StartLimit times in a row,
// or ctx ends (the daemon is then sent SIGTERM and waited for).
func RunKeeper(ctx context.Context, o KeeperOptions) error {
	if len(o.Argv) == 0 {
		return errors.New("keeper: no daemon command given")
	}
	if o.RestartDelay <= 0 {
		o.RestartDelay = 100 * time.Millisecond
	}
	if o.MaxFDs <= 0 {
		o.MaxFDs = 64
	}
	if o.StartLimit <= 0 {
		o.StartLimit = 5
	}
	if o.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("keeper: %w", err)
		}
		o.Self = self
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "devfsd-keeper-")
		if err != nil {
			return fmt.Errorf("keeper: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	sock := filepath.Join(dir, "notify.sock")
	os.Remove(sock) // a socket left by a keeper that died: nothing listens on it
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	defer os.Remove(sock)
	defer ln.Close()
	if err := setPassCred(ln); err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	k := &keeper{o: o, log: log, ln: ln, syncs: map[string]chan struct{}{}}
	defer k.closeAll()
	go k.receive()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	failures := 0
	for {
		cmd, err := k.start(sock)
		if err != nil {
			return err
		}
		exited := make(chan error, 1)
		reaped := make(chan struct{})
		go func() { exited <- cmd.Wait(); close(reaped) }()
		leaderGone := watchLeader(cmd.Process.Pid, reaped)
		stopping, stuck := false, false
		var werr error
	wait:
		for {
			select {
			case werr = <-exited:
				break wait
			case <-leaderGone:
				// Its main thread is dead but the process is not: a
				// thread is stuck in the kernel (see watchLeader). Do
				// not wait for it: the next daemon's answers free it.
				select {
				case werr = <-exited:
				case <-time.After(leaderGrace):
					stuck = true
					werr = errors.New("killed; a thread of it is still stuck in the kernel")
				}
				break wait
			case s := <-sigs:
				if s != syscall.SIGHUP {
					stopping = true
				}
				cmd.Process.Signal(s)
			case <-ctx.Done():
				if !stopping {
					stopping = true
					cmd.Process.Signal(syscall.SIGTERM)
				}
			}
		}
		// Every datagram the daemon sent before it died is taken in
		// before the next start (a FDSTORE sent just before a kill).
		k.flush()
		k.mu.Lock()
		wasReady := k.ready
		k.pid, k.ready = 0, false
		k.mu.Unlock()
		var st syscall.WaitStatus
		if !stuck {
			st, _ = cmd.ProcessState.Sys().(syscall.WaitStatus)
		}
		switch {
		case stuck:
			log.Warn("keeper: the daemon's main thread is dead and a thread of it is stuck in the kernel; starting the next daemon without waiting for it",
				zap.Int("pid", cmd.Process.Pid), zap.Int("kept", k.count()))
		case werr == nil:
			log.Info("keeper: the daemon stopped cleanly; ending", zap.Int("pid", cmd.Process.Pid))
			return nil
		case stopping:
			return fmt.Errorf("keeper: the daemon, told to stop, ended: %v", werr)
		case st.Signaled():
			log.Warn("keeper: the daemon was killed; starting it again with the kept descriptors",
				zap.Int("pid", cmd.Process.Pid), zap.String("signal", st.Signal().String()), zap.Int("kept", k.count()))
		default:
			log.Warn("keeper: the daemon failed; starting it again", zap.Int("pid", cmd.Process.Pid), zap.Error(werr))
		}
		if wasReady {
			failures = 0
		} else if failures++; failures >= o.StartLimit {
			return fmt.Errorf("keeper: the daemon failed %d times in a row before it was ready; giving up (last: %v)", failures, werr)
		}
		select {
		case <-time.After(o.RestartDelay):
		case <-ctx.Done():
			return ctx.Err()
		case s := <-sigs:
			if s != syscall.SIGHUP {
				return nil // asked to stop while nothing runs
			}
		}
	}
}

// start starts the daemon with the kept descriptors.
func (k *keeper) start(sock string) (*exec.Cmd, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cmd := exec.Command(k.o.Self, append([]string{"keeper-exec", "--"}, k.o.Argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	env := withoutEnv(os.Environ(), "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
	env = append(env, "NOTIFY_SOCKET="+sock)
	if len(k.fds) > 0 {
		names := make([]string, len(k.fds))
		for i, kf := range k.fds {
			names[i] = kf.name
			cmd.ExtraFiles = append(cmd.ExtraFiles, kf.f)
		}
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(k.fds)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("keeper: starting %s: %w", k.o.Argv[0], err)
	}
	k.pid = cmd.Process.Pid
	k.log.Info("keeper: started the daemon", zap.Int("pid", k.pid), zap.Int("descriptors", len(k.fds)))
	if k.o.PidFile != "" {
		if err := writeAtomicFile(k.o.PidFile, []byte(strconv.Itoa(k.pid)+"\n")); err != nil {
			k.log.Warn("keeper: writing the pid file", zap.Error(err))
		}
	}
	return cmd, nil
}

func writeAtomicFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (k *keeper) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.fds)
}

func (k *keeper) closeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, kf := range k.fds {
		kf.f.Close()
	}
	k.fds = nil
}

// flush returns once every datagram sent to the socket before it was
// called has been handled: it sends one of its own and waits for it
// (datagrams on a Unix socket arrive in order).
func (k *keeper) flush() {
	tag := "KEEPER_FLUSH=" + strconv.FormatInt(time.Now().UnixNano(), 10)
	ch := make(chan struct{})
	k.mu.Lock()
	k.syncs[tag] = ch
	k.mu.Unlock()
	c, err := net.DialUnix("unixgram", nil, k.ln.LocalAddr().(*net.UnixAddr))
	if err == nil {
		_, err = c.Write([]byte(tag))
		c.Close()
	}
	if err != nil {
		k.log.Warn("keeper: flushing the notify socket", zap.Error(err))
		return
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		k.log.Warn("keeper: the notify socket did not flush")
	}
}

// receive reads the notify socket until it is closed.
func (k *keeper) receive() {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*k.o.MaxFDs)+unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, flags, _, err := k.ln.ReadMsgUnix(buf, oob)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				k.log.Warn("keeper: reading the notify socket", zap.Error(err))
			}
			return
		}
		fds, cred := parseOOB(oob[:oobn])
		if flags&unix.MSG_CTRUNC != 0 {
			k.log.Warn("keeper: a message carried more descriptors than the store may hold; dropped it")
			closeFDs(fds)
			continue
		}
		k.handle(string(buf[:n]), fds, cred)
	}
}

func parseOOB(oob []byte) (fds []int, cred *unix.Ucred) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, nil
	}
	for i := range msgs {
		if r, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, r...)
		} else if c, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			cred = c
		}
	}
	return fds, cred
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// handle applies one message (NotifyAccess=main: only the daemon's own
// are heeded).
func (k *keeper) handle(msg string, fds []int, cred *unix.Ucred) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cred != nil && int(cred.Pid) == os.Getpid() {
		if ch, ok := k.syncs[msg]; ok {
			delete(k.syncs, msg)
			close(ch)
		}
		closeFDs(fds)
		return
	}
	if cred == nil || k.pid == 0 || int(cred.Pid) != k.pid {
		pid := -1
		if cred != nil {
			pid = int(cred.Pid)
		}
		k.log.Warn("keeper: a notify message not from the daemon; ignored", zap.Int("from_pid", pid), zap.Int("daemon_pid", k.pid))
		closeFDs(fds)
		return
	}
	vars := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if key, val, ok := strings.Cut(line, "="); ok {
			vars[key] = val
		}
	}
	if vars["READY"] == "1" {
		k.ready = true
		k.log.Info("keeper: the daemon is ready", zap.Int("pid", k.pid))
	}
	name := vars["FDNAME"]
	if name == "" {
		name = "stored"
	}
	if vars["FDSTOREREMOVE"] == "1" {
		kept := k.fds[:0]
		for _, kf := range k.fds {
			if kf.name == name {
				kf.f.Close()
				continue
			}
			kept = append(kept, kf)
		}
		k.fds = kept
		k.log.Debug("keeper: removed", zap.String("name", name))
	}
	if vars["FDSTORE"] != "1" {
		closeFDs(fds)
		return
	}
	if checkFDName(name) != nil {
		k.log.Warn("keeper: FDSTORE with a bad FDNAME; dropped", zap.String("name", name))
		closeFDs(fds)
		return
	}
	for _, fd := range fds {
		if k.hasLocked(fd) {
			unix.Close(fd) // the same open file is kept once (systemd does likewise)
			continue
		}
		if len(k.fds) >= k.o.MaxFDs {
			k.log.Warn("keeper: the store is full; a descriptor was dropped", zap.String("name", name), zap.Int("max", k.o.MaxFDs))
			unix.Close(fd)
			continue
		}
		k.fds = append(k.fds, keptFD{name: name, f: os.NewFile(uintptr(fd), name)})
		k.log.Debug("keeper: stored", zap.String("name", name))
	}
}

// hasLocked reports whether the store holds fd's open file already.
// Preconditions: k.mu held.
func (k *keeper) hasLocked(fd int) bool {
	self := os.Getpid()
	for _, kf := range k.fds {
		if sameFile(self, fd, int(kf.f.Fd())) {
			return true
		}
	}
	return false
}

// sameFile reports whether two descriptors of process pid refer to the
// same open file description (kcmp(2) KCMP_FILE).
func sameFile(pid, fd1, fd2 int) bool {
	const kcmpFile = 0
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	return errno == 0 && r == 0
}

// leaderGrace is how long a daemon whose main thread is dead may take to
// be gone before the keeper takes it for stuck.
const leaderGrace = 50 * time.Millisecond

// leaderPoll is how often watchLeader looks.
const leaderPoll = 5 * time.Millisecond

// watchLeader returns a channel closed when the main thread of process
// pid has died (its /proc state is Z or X, or it is gone), unless reaped
// is closed first. A killed process is only gone once all its threads
// are, and one thread may be stuck in the kernel for as long as the
// mount has no server: a notify (FUSE_NOTIFY_INVAL_ENTRY) waits
// uninterruptibly for a directory's lock, held by a call such as an
// unlink that waits for the daemon's answer. systemd waits for such a
// process forever; the keeper starts the next daemon, whose answers let
// the call, then the notify, then the old process finish.
func watchLeader(pid int, reaped <-chan struct{}) <-chan struct{} {
	if waitWholeExit {
		return nil // the mutant: wait for the whole process, as systemd does
	}
	gone := make(chan struct{})
	go func() {
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		dir := "/proc/" + strconv.Itoa(pid) + "/"
		execd := false
		for {
			select {
			case <-reaped:
				return
			case <-t.C:
			}
			if !execd {
				// keeper-exec's own exec swaps its threads, which shows
				// the main thread as a zombie for a moment: only the
				// daemon's main thread is watched.
				b, err := os.ReadFile(dir + "cmdline")
				if err != nil {
					continue // gone: reaped shortly
				}
				args := strings.Split(string(b), "\x00")
				if execd = len(args) < 2 || args[1] != "keeper-exec"; !execd {
					continue
				}
			}
			b, err := os.ReadFile(dir + "stat")
			if err != nil || leaderDead(b) {
				close(gone)
				return
			}
		}
	}()
	return gone
}

// leaderDead reports whether /proc/PID/stat content b says the thread is
// a zombie or dead (the state after the command's closing parenthesis).
func leaderDead(b []byte) bool {
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// setPassCred asks for the sender's credentials on every datagram.
func setPassCred(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return serr
}
