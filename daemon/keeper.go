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

	"github.com/devfsd/devfsd/state"
)

// The keeper (`devfsd keeper -- devfsd mount ...`) plays, for the daemon,
// the part of systemd a crash needs: it runs the daemon with
// NOTIFY_SOCKET pointing at a socket of its own, keeps the descriptors
// the daemon stores there (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1, as
// sd_notify(3) and systemd's service manager define them), and when the
// daemon dies it starts it again with those descriptors, through
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (sd_listen_fds(3)). The daemon
// cannot tell it from systemd: the same code path serves both.
//
// It does what systemd cannot: it starts the next daemon as soon as the
// old one's main thread is dead (watchLeader), not once the whole process
// is, since a thread of a killed daemon can stay stuck in the kernel until
// a daemon answers the mount again.
//
// Under systemd (its own NOTIFY_SOCKET set: the unit runs `devfsd keeper
// -- devfsd mount ...`, Type=notify, the keeper its main process) the
// keeper is the daemon's face to systemd and passes on what a crash of
// the keeper itself needs:
//   - every descriptor it keeps goes to systemd's store too, under the
//     same name (FDSTORE=1, FDNAME=; an O_PATH one, a special mount's
//     root, with FDPOLL=0, as the daemon sends it), and every removal
//     (FDSTOREREMOVE=1);
//   - the descriptors systemd gives the keeper at start (LISTEN_FDS) are
//     its store, handed to the first daemon it starts;
//   - READY=1, RELOADING=1 and STATUS= of the daemon are passed on;
//     STOPPING=1 is the keeper's own, said when it is told to stop (a
//     daemon ending for a restart is not a stop of the unit); MAINPID= is
//     not passed on: the keeper stays the unit's main process.
//
// Upgrades (`devfsd ctl upgrade`): the daemon starts its successor, which
// serves the mounts; the old daemon tells its notify socket the
// successor's pid (MAINPID=) and exits. The keeper is a child subreaper
// (Subreaper), so the successor becomes its child when the old daemon
// exits; on MAINPID= from the daemon it follows the successor: that pid
// is the daemon from then on (its notify messages are heeded, including
// those it sent before MAINPID= came, held until then), and it is
// started again like any daemon when it dies.
//
// Restart policy, as systemd's Restart=always with a start limit: the
// daemon is started again after RestartDelay whatever ended it, except a
// clean exit (status 0: it was stopped, and unmounted), which ends the
// keeper too, and failures before READY=1, which end the keeper after
// StartLimit in a row (a daemon that cannot start is not restarted
// forever). SIGTERM and SIGINT are passed to the daemon, whose clean stop
// then ends the keeper; SIGHUP is passed on (reload). Told to stop while
// no daemon runs (between two starts), the keeper detaches the kept
// mounts itself (the memfd names them), so that a stop never leaves a
// mount without a server.

// KeeperOptions configure RunKeeper.
type KeeperOptions struct {
	// Argv is the daemon's command line; Argv[0] is a path or a name
	// looked up in $PATH.
	Argv []string
	// Dir is where the notify socket is made (made if missing, mode
	// 0700); it must be a directory only the keeper's user can write.
	// Default: a new temporary directory, removed at the end.
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
	// and each upgrade (replaced atomically).
	PidFile string
	// Self is the program that execs the daemon with LISTEN_PID set
	// (ExecListening); default os.Executable, run as `SELF keeper-exec --
	// ARGV...`.
	Self string
	// Subreaper makes the keeper a child subreaper that reaps every
	// child (needed to follow a daemon's successor after an upgrade).
	// `devfsd keeper` sets it; a keeper inside a process with children
	// of its own (a test) must not.
	Subreaper bool
	// Logger; nil: none.
	Logger *zap.Logger
}

// keptFD is one descriptor in the keeper's store.
type keptFD struct {
	name string
	f    *os.File
}

// heldMsg is a notify message of a process that may become the daemon
// (an upgrade's successor, before MAINPID= names it).
type heldMsg struct {
	pid  int
	vars map[string]string
	fds  []int
}

// maxHeld bounds the messages held.
const maxHeld = 64

// keeper is RunKeeper's state.
type keeper struct {
	o    KeeperOptions
	log  *zap.Logger
	ln   *net.UnixConn
	up   *fdStore // systemd's notify socket, or nil
	reap *reaper

	mu       sync.Mutex
	fds      []keptFD  // guarded by mu: in the order stored
	pid      int       // guarded by mu: the daemon's pid, 0 between runs
	ready    bool      // guarded by mu: the current daemon said READY=1
	readyUp  bool      // guarded by mu: READY=1 was passed on
	held     []heldMsg // guarded by mu
	stopping bool      // guarded by mu: told to stop
	syncs    map[string]chan struct{}
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
	k := &keeper{o: o, log: log, syncs: map[string]chan struct{}{}}
	// systemd's store, and what it kept of a keeper before this one.
	switch up, err := newFDStore(); {
	case errors.Is(err, errNoStore):
	case err != nil:
		return fmt.Errorf("keeper: %w", err)
	default:
		k.up = up
	}
	in := takeInherited()
	for _, n := range in.dups {
		log.Warn("keeper: an inherited descriptor name came twice; the first was kept", zap.String("name", n))
	}
	for name, f := range in.files {
		k.fds = append(k.fds, keptFD{name: name, f: f})
	}
	clear(in.files)
	defer k.closeAll()
	if len(k.fds) > 0 {
		log.Info("keeper: descriptors given back by the service manager", zap.Int("descriptors", len(k.fds)))
	}
	if o.Subreaper {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("keeper: PR_SET_CHILD_SUBREAPER: %w", err)
		}
	}
	k.reap = newReaper(o.Subreaper)
	defer k.reap.close()

	dir := o.Dir
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("keeper: %w", err)
		}
	} else {
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
	k.ln = ln
	go k.receive()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	failures := 0
	pid, err := k.start(sock)
	if err != nil {
		return err
	}
	for {
		exitCh := k.reap.wait(pid)
		reaped := make(chan struct{})
		var status syscall.WaitStatus // once reaped is closed
		go func() { status = <-exitCh; close(reaped) }()
		leaderGone := watchLeader(pid, reaped)
		stuck := false
	wait:
		for {
			select {
			case <-reaped:
				break wait
			case <-leaderGone:
				// Its main thread is dead but the process is not: a
				// thread is stuck in the kernel (see watchLeader). Do
				// not wait for it: the next daemon's answers free it.
				select {
				case <-reaped:
				case <-time.After(leaderGrace):
					stuck = true
				}
				break wait
			case s := <-sigs:
				k.signal(s)
			case <-ctx.Done():
				k.signal(syscall.SIGTERM)
				ctx = context.Background() // once
			}
		}
		// Every datagram the daemon sent before it died is taken in
		// before the next start (a FDSTORE or a MAINPID= sent just before
		// it exited).
		k.flush()
		var ws syscall.WaitStatus
		why := "its main thread is dead and a thread of it is stuck in the kernel"
		if !stuck {
			ws, why = status, describeStatus(status)
		}
		k.mu.Lock()
		next, wasReady, stopping := k.pid, k.ready, k.stopping
		k.mu.Unlock()
		if next != 0 && next != pid {
			// An upgrade: the successor serves; follow it.
			log.Info("keeper: the daemon handed over to its successor; following it",
				zap.Int("pid", pid), zap.Int("successor", next))
			pid = next
			continue
		}
		k.mu.Lock()
		k.pid, k.ready = 0, false
		k.dropHeldLocked()
		k.mu.Unlock()
		switch {
		case !stuck && ws.Exited() && ws.ExitStatus() == 0:
			log.Info("keeper: the daemon stopped cleanly; ending", zap.Int("pid", pid))
			return nil
		case stopping:
			// A daemon told to stop before it served (at its start)
			// fails rather than unmounts: the keeper unmounts for it.
			// (A thread of it stuck in the kernel is freed once the
			// last descriptor of the mount is closed, the keeper's and
			// the service manager's: the connection then ends.)
			if k.detachKept() {
				log.Warn("keeper: the daemon, told to stop, did not stop cleanly; its mounts are unmounted; ending",
					zap.Int("pid", pid), zap.String("status", why))
				return nil
			}
			return fmt.Errorf("keeper: the daemon, told to stop, ended: %s", why)
		case stuck:
			log.Warn("keeper: the daemon's main thread is dead and a thread of it is stuck in the kernel; starting the next daemon without waiting for it",
				zap.Int("pid", pid), zap.Int("kept", k.count()))
		case ws.Signaled():
			log.Warn("keeper: the daemon was killed; starting it again with the kept descriptors",
				zap.Int("pid", pid), zap.String("signal", ws.Signal().String()), zap.Int("kept", k.count()))
		default:
			log.Warn("keeper: the daemon failed; starting it again", zap.Int("pid", pid), zap.String("status", why))
		}
		if wasReady {
			failures = 0
		} else if failures++; failures >= o.StartLimit {
			k.detachKept()
			return fmt.Errorf("keeper: the daemon failed %d times in a row before it was ready; giving up (last: %s)", failures, why)
		}
		select {
		case <-time.After(o.RestartDelay):
		case <-ctx.Done():
			k.stopUp()
			k.detachKept()
			return ctx.Err()
		case s := <-sigs:
			if s != syscall.SIGHUP {
				k.stopUp()
				k.detachKept()
				return nil // asked to stop while nothing runs
			}
		}
		if pid, err = k.start(sock); err != nil {
			k.detachKept()
			return err
		}
	}
}

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Signaled():
		return "killed by " + ws.Signal().String()
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	}
	return "ended"
}

// signal passes s to the daemon; SIGTERM and SIGINT also mean the keeper
// stops (STOPPING=1 to the service manager).
func (k *keeper) signal(s os.Signal) {
	if s != syscall.SIGHUP {
		k.stopUp()
	}
	k.mu.Lock()
	pid := k.pid
	k.mu.Unlock()
	if pid != 0 {
		syscall.Kill(pid, s.(syscall.Signal))
	}
}

// stopUp marks the keeper stopping and says so upstream, once.
func (k *keeper) stopUp() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopping {
		return
	}
	k.stopping = true
	k.upSendLocked("STOPPING=1\n", nil)
}

// start starts the daemon with the kept descriptors.
func (k *keeper) start(sock string) (int, error) {
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
		return 0, fmt.Errorf("keeper: starting %s: %w", k.o.Argv[0], err)
	}
	k.pid = cmd.Process.Pid
	cmd.Process.Release() // the reaper waits for it
	k.log.Info("keeper: started the daemon", zap.Int("pid", k.pid), zap.Int("descriptors", len(k.fds)))
	k.writePidLocked()
	return k.pid, nil
}

func (k *keeper) writePidLocked() {
	if k.o.PidFile != "" {
		if err := writeAtomicFile(k.o.PidFile, []byte(strconv.Itoa(k.pid)+"\n")); err != nil {
			k.log.Warn("keeper: writing the pid file", zap.Error(err))
		}
	}
}

// detachKept lazily unmounts the mounts the kept memfd lists (views
// first) that are still mounted with their device number, and empties
// the store: the keeper ends with no daemon left to serve them. It
// reports whether none is left mounted.
func (k *keeper) detachKept() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	clean := true
	for _, kf := range k.fds {
		if kf.name != keptFDName {
			continue
		}
		fd, err := unix.FcntlInt(kf.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			break
		}
		f := os.NewFile(uintptr(fd), keptFDName)
		kfile, kept, err := state.ReadKeptFile(f)
		if err != nil {
			f.Close()
			break
		}
		kfile.Close()
		for i := len(kept.Mounts) - 1; i >= 0; i-- {
			m := kept.Mounts[i]
			if ok, _ := stillMounted(m.Mountpoint, m.Dev); !ok {
				continue
			}
			if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil {
				clean = false
				k.log.Warn("keeper: unmounting a kept mount", zap.String("mountpoint", m.Mountpoint), zap.Error(err))
			} else {
				k.log.Info("keeper: no daemon serves a kept mount; unmounted it", zap.String("mountpoint", m.Mountpoint))
			}
		}
		break
	}
	names := map[string]bool{}
	for _, kf := range k.fds {
		if !names[kf.name] {
			names[kf.name] = true
			k.upSendLocked("FDSTOREREMOVE=1\nFDNAME="+kf.name+"\n", nil)
		}
		kf.f.Close()
	}
	k.fds = nil
	return clean
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
	k.dropHeldLocked()
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

// handle applies one message. Only the daemon's are heeded (systemd's
// NotifyAccess=main); another process's are held, bounded, in case the
// daemon names it its successor next (MAINPID=), and then applied in the
// order they came.
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
	if cred == nil || cred.Pid <= 0 {
		k.log.Warn("keeper: a notify message without its sender's credentials; ignored")
		closeFDs(fds)
		return
	}
	vars := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if key, val, ok := strings.Cut(line, "="); ok {
			vars[key] = val
		}
	}
	if pid := int(cred.Pid); k.pid == 0 || pid != k.pid {
		k.holdLocked(pid, vars, fds)
		return
	}
	k.applyLocked(vars, fds)
}

// holdLocked keeps a message of a process other than the daemon, within
// maxHeld messages and MaxFDs descriptors. Preconditions: k.mu held.
func (k *keeper) holdLocked(pid int, vars map[string]string, fds []int) {
	n := len(fds)
	for _, h := range k.held {
		n += len(h.fds)
	}
	if len(k.held) >= maxHeld || n > k.o.MaxFDs {
		k.log.Warn("keeper: a notify message not from the daemon; ignored", zap.Int("from_pid", pid), zap.Int("daemon_pid", k.pid))
		closeFDs(fds)
		return
	}
	k.log.Debug("keeper: holding a notify message not from the daemon until it names its successor",
		zap.Int("from_pid", pid), zap.Int("daemon_pid", k.pid))
	k.held = append(k.held, heldMsg{pid: pid, vars: vars, fds: fds})
}

// dropHeldLocked forgets the held messages. Preconditions: k.mu held.
func (k *keeper) dropHeldLocked() {
	for _, h := range k.held {
		closeFDs(h.fds)
	}
	k.held = nil
}

// applyLocked applies a message of the daemon. Preconditions: k.mu held.
func (k *keeper) applyLocked(vars map[string]string, fds []int) {
	if vars["READY"] == "1" {
		k.ready = true
		k.log.Info("keeper: the daemon is ready", zap.Int("pid", k.pid))
		if !k.readyUp {
			k.readyUp = k.upSendLocked("READY=1\n", nil) == nil
		}
	}
	for _, key := range []string{"RELOADING", "STATUS"} {
		if v, ok := vars[key]; ok {
			k.upSendLocked(key+"="+v+"\n", nil)
		}
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
		k.upSendLocked("FDSTOREREMOVE=1\nFDNAME="+name+"\n", nil)
		k.log.Debug("keeper: removed", zap.String("name", name))
	}
	switch {
	case vars["FDSTORE"] != "1":
		closeFDs(fds)
	case checkFDName(name) != nil:
		k.log.Warn("keeper: FDSTORE with a bad FDNAME; dropped", zap.String("name", name))
		closeFDs(fds)
	default:
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
			unix.CloseOnExec(fd)
			k.fds = append(k.fds, keptFD{name: name, f: os.NewFile(uintptr(fd), name)})
			k.upSendLocked(fdStoreMessage(name, fd), []int{fd})
			k.log.Debug("keeper: stored", zap.String("name", name))
		}
	}
	if v, ok := vars["MAINPID"]; ok {
		next, err := strconv.Atoi(v)
		if err != nil || next <= 0 || next == k.pid || !followSuccessor {
			return
		}
		k.log.Info("keeper: the daemon names its successor", zap.Int("pid", k.pid), zap.Int("successor", next))
		k.pid, k.ready = next, false
		k.writePidLocked()
		held := k.held
		k.held = nil
		for _, h := range held {
			if h.pid == next {
				k.applyLocked(h.vars, h.fds)
			} else {
				closeFDs(h.fds)
			}
		}
	}
}

// upSendLocked sends a message to the service manager's notify socket,
// if the keeper has one. Preconditions: k.mu held (the messages keep
// their order).
func (k *keeper) upSendLocked(msg string, fds []int) error {
	if k.up == nil {
		return errNoStore
	}
	if err := k.up.send(msg, fds); err != nil {
		k.log.Warn("keeper: passing a message on to the service manager", zap.String("message", firstLine(msg)), zap.Error(err))
		return err
	}
	return nil
}

// isOPath reports whether fd was opened with O_PATH.
func isOPath(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_PATH != 0
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
