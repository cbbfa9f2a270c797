package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// Upgrade without downtime (DESIGN.md section 9): the running daemon
// starts a successor process (the same binary, or another one, with the
// same arguments), which connects back over a socket pair given as
// HandoverEnv. Then:
//
//  1. the successor, configured and ready, says hello;
//  2. the old daemon stops: the control socket stops accepting (its
//     listener is kept), every mount stops reading requests (those being
//     handled are answered, within fs.DefaultStopTimeout; the rest the
//     kernel keeps);
//  3. it exports the namespace with its inode numbers and generation, and
//     sends it with every mount's state (INIT, capabilities, the node ids
//     the kernel holds and their counts, the views' patterns) and the
//     descriptors: each /dev/fuse, each special mount's root, the control
//     and metrics listeners (SCM_RIGHTS);
//  4. the successor imports the namespace, serves every mount from its
//     descriptor, has the kernel resend the requests left unanswered, and
//     says it serves;
//  5. the old daemon lets go of its descriptors, answers the upgrade
//     request, and exits without unmounting anything.
//
// If the successor fails before step 4 (it exits, says why, or takes
// longer than handoverTimeout), the old daemon serves again (the kernel
// resends what it left unanswered) and kills the successor: the upgrade is
// an error and nothing changed. A state directory is written and let go
// of just before step 3's send (extras.releaseStore), opened by the
// successor, and opened again by the old daemon if the successor fails.

// HandoverEnv is the environment variable that tells a successor which
// descriptor is its handover socket (Options.Handover).
const HandoverEnv = "DEVFSD_HANDOVER_FD"

// handoverTimeout bounds each wait on the other process of a handover.
const handoverTimeout = 30 * time.Second

// maxHandoverFiles bounds the descriptors of one handover.
const maxHandoverFiles = 250

// handoverState is what the old daemon sends.
type handoverState struct {
	Pid       int            `json:"pid"`
	StoppedAt time.Time      `json:"stopped_at"` // when the mounts stopped reading
	Namespace *dcache.Export `json:"namespace"`
	Main      fs.MountState  `json:"main"`
	Views     []handoverView `json:"views"`
	Control   bool           `json:"control"` // the control listener's descriptor follows the mounts'
	Metrics   bool           `json:"metrics"` // then the metrics listener's
	Files     int            `json:"files"`
	// KernelOwned are the nodes the kernel device source registered
	// (devices: kernel), which the successor's source takes as its own.
	KernelOwned map[string]uint64 `json:"kernel_owned,omitempty"`
}

// handoverView is one view of a handover.
type handoverView struct {
	Spec  wire.View     `json:"spec"`
	Mount fs.MountState `json:"mount"`
}

// handoverMsg is what the successor says: hello, then serving (or the
// error that keeps it from serving).
type handoverMsg struct {
	Pid     int       `json:"pid"`
	Serving bool      `json:"serving,omitempty"`
	At      time.Time `json:"at"`
	Error   string    `json:"error,omitempty"`
}

// received is a handover as the successor holds it, files split by user.
type received struct {
	state   handoverState
	conn    *net.UnixConn
	main    []*os.File
	views   [][]*os.File
	control *os.File
	metrics *os.File
}

// writeFrame writes one frame: a length, then the JSON of v, with files
// attached to the length (SCM_RIGHTS).
func writeFrame(c *net.UnixConn, v any, files []*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(len(b)))
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(hdr[:], oob, nil); err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

// readFrame reads one frame into v and returns the files attached.
func readFrame(c *net.UnixConn, r *bufio.Reader, v any) ([]*os.File, error) {
	var hdr [8]byte
	oob := make([]byte, unix.CmsgSpace(4*maxHandoverFiles))
	n, oobn, _, _, err := c.ReadMsgUnix(hdr[:], oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				return nil, err
			}
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), "handover"))
			}
		}
	}
	if n < len(hdr) {
		if _, err := io.ReadFull(c, hdr[n:]); err != nil {
			closeFiles(files)
			return nil, err
		}
	}
	size := binary.LittleEndian.Uint64(hdr[:])
	if size > 1<<31 {
		closeFiles(files)
		return nil, fmt.Errorf("handover: a frame of %d bytes", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c, body); err != nil {
		closeFiles(files)
		return nil, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		closeFiles(files)
		return nil, fmt.Errorf("handover: %w", err)
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// receiveHandover is the successor's first steps: hello, then the state
// and descriptors. f is the handover socket (HandoverEnv).
func receiveHandover(f *os.File, log *zap.Logger) (*received, error) {
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handover socket: %w", err)
	}
	c, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil, errors.New("handover socket: not a Unix socket")
	}
	c.SetDeadline(time.Now().Add(handoverTimeout))
	if err := writeFrame(c, handoverMsg{Pid: os.Getpid(), At: time.Now()}, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("handover: hello: %w", err)
	}
	rd := &received{conn: c}
	files, err := readFrame(c, nil, &rd.state)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handover: receiving the state: %w", err)
	}
	c.SetDeadline(time.Time{})
	st := &rd.state
	if len(files) != st.Files || st.Namespace == nil {
		closeFiles(files)
		c.Close()
		return nil, fmt.Errorf("handover: %d descriptors, the state says %d", len(files), st.Files)
	}
	take := func(k int) []*os.File {
		out := files[:k]
		files = files[k:]
		return out
	}
	rd.main = take(1 + len(st.Main.Specials))
	for _, v := range st.Views {
		if len(files) < 1+len(v.Mount.Specials) {
			closeFiles(files)
			c.Close()
			return nil, errors.New("handover: descriptors missing for the views")
		}
		rd.views = append(rd.views, take(1+len(v.Mount.Specials)))
	}
	if st.Control && len(files) > 0 {
		rd.control = take(1)[0]
	}
	if st.Metrics && len(files) > 0 {
		rd.metrics = take(1)[0]
	}
	log.Info("handover received", zap.Int("from_pid", st.Pid), zap.Int("nodes", len(st.Namespace.Nodes)),
		zap.Int("views", len(st.Views)), zap.Int("descriptors", st.Files))
	return rd, nil
}

// say tells the predecessor how the successor did (serving, or why not).
func (rd *received) say(err error) {
	m := handoverMsg{Pid: os.Getpid(), Serving: err == nil, At: time.Now()}
	if err != nil {
		m.Error = err.Error()
	}
	rd.conn.SetDeadline(time.Now().Add(handoverTimeout))
	writeFrame(rd.conn, m, nil) //nolint:errcheck // the predecessor's wait ends either way
	rd.conn.Close()
}

// close releases whatever descriptors of the handover were not taken.
func (rd *received) close() {
	closeFiles(rd.main)
	for _, v := range rd.views {
		closeFiles(v)
	}
	closeFiles([]*os.File{rd.control, rd.metrics})
}

// controlListener is the control socket handed over, or nil.
func (rd *received) controlListener() (*net.UnixListener, error) {
	if rd == nil || rd.control == nil {
		return nil, nil
	}
	ln, err := net.FileListener(rd.control)
	rd.control.Close()
	rd.control = nil
	if err != nil {
		return nil, fmt.Errorf("handover: the control socket: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New("handover: the control socket is not a Unix socket")
	}
	return ul, nil
}

// metricsListener is the metrics listener handed over, or nil.
func (rd *received) metricsListener() (net.Listener, error) {
	if rd == nil || rd.metrics == nil {
		return nil, nil
	}
	ln, err := net.FileListener(rd.metrics)
	rd.metrics.Close()
	rd.metrics = nil
	if err != nil {
		return nil, fmt.Errorf("handover: the metrics listener: %w", err)
	}
	return ln, nil
}

// resumeMounts serves the main mount and every view of the handover.
func (d *Daemon) resumeMounts(rd *received) error {
	files := rd.main
	rd.main = nil
	if err := d.srv.Resume(rd.state.Main, files); err != nil {
		return err
	}
	for i, v := range rd.state.Views {
		files := rd.views[i]
		rd.views[i] = nil
		if err := d.vm.resume(v.Spec, v.Mount, files); err != nil {
			return fmt.Errorf("view %s: %w", v.Spec.Mountpoint, err)
		}
	}
	for _, s := range append([]*fs.Server{d.srv}, d.vm.servers()...) {
		s.ResendLate() // mutant U1 only: a no-op otherwise
	}
	d.log.Info("serving the mounts handed over", zap.Int("views", len(rd.state.Views)),
		zap.Duration("pause", time.Since(rd.state.StoppedAt)))
	return nil
}

// specOfWire is the viewpath.Spec of a view as the control API carries it.
func specOfWire(w wire.View) (viewpath.Spec, error) {
	spec := viewpath.Spec{Allow: w.Allow, Deny: w.Deny}
	u32 := func(x int64) *uint32 { y := uint32(x); return &y }
	for _, o := range w.Overrides {
		fo := viewpath.Override{Glob: o.Glob}
		if o.Mode != "" {
			m, err := config.ParseMode(o.Mode)
			if err != nil {
				return spec, err
			}
			mm := uint32(m)
			fo.Mode = &mm
		}
		if o.Uid != nil {
			fo.Uid = u32(*o.Uid)
		}
		if o.Gid != nil {
			fo.Gid = u32(*o.Gid)
		}
		spec.Overrides = append(spec.Overrides, fo)
	}
	return spec, nil
}

// resume serves a view handed over.
func (m *viewManager) resume(v wire.View, st fs.MountState, files []*os.File) error {
	spec, err := specOfWire(v)
	if err != nil {
		closeFiles(files)
		return err
	}
	view, err := compile(spec)
	if err != nil {
		closeFiles(files)
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	log := m.log.With(zap.String("view", v.Mountpoint))
	srv, err := m.main.NewView(m.mux, view, log.Named("fs"))
	if err != nil {
		closeFiles(files)
		return err
	}
	if err := srv.Resume(st, files); err != nil {
		srv.Shutdown()
		return err
	}
	vm := &viewMount{spec: v, srv: srv}
	m.views[v.Mountpoint] = vm
	go m.watch(vm)
	return nil
}

// servers returns the views' servers.
func (m *viewManager) servers() []*fs.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*fs.Server, 0, len(m.views))
	for _, vm := range m.views {
		out = append(out, vm.srv)
	}
	return out
}

// views returns the views, for a handover.
func (m *viewManager) list() []*viewMount {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*viewMount, 0, len(m.views))
	for _, vm := range m.views {
		out = append(out, vm)
	}
	return out
}

// upgrader is the old daemon's side of an upgrade.
type upgrader struct {
	mu   sync.Mutex // one upgrade at a time
	done bool       // a successor serves: this daemon is ending (guarded by mu)
}

// handedOver reports whether a successor serves the mounts now.
func (d *Daemon) handedOver() bool {
	select {
	case <-d.handover:
		return true
	default:
		return false
	}
}

// Upgrade replaces this daemon by a successor running binary ("": this
// one's) with this daemon's arguments (Options.Args), serving the same
// mounts with the same node ids, without the mounts ever failing a
// request; see the top of this file. It returns once the successor
// serves (Run then returns ErrHandedOver), or with why not (this daemon
// then serves as before).
func (d *Daemon) Upgrade(ctx context.Context, binary string) (wire.Upgrade, error) {
	d.up.mu.Lock()
	defer d.up.mu.Unlock()
	if d.up.done {
		return wire.Upgrade{}, errors.New("already handed over")
	}
	if d.opts.Args == nil {
		return wire.Upgrade{}, errors.New("the daemon was not told its arguments (Options.Args)")
	}
	if binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return wire.Upgrade{}, err
		}
		binary = exe
	}
	log := d.log.Named("upgrade").With(zap.String("binary", binary))
	res, err := d.upgrade(binary, log)
	if err != nil {
		log.Error("upgrade failed; this daemon goes on serving", zap.Error(err))
		return wire.Upgrade{}, err
	}
	d.up.done = true
	log.Info("upgraded: the successor serves the mounts", zap.Int("pid", res.NewPid),
		zap.Float64("pause_ms", res.PauseMs))
	return res, nil
}

func (d *Daemon) upgrade(binary string, log *zap.Logger) (res wire.Upgrade, err error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return res, fmt.Errorf("socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "handover"), os.NewFile(uintptr(pair[1]), "handover")
	defer mine.Close()
	cmd := exec.Command(binary, d.opts.Args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), HandoverEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives this process and its group's signals
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return res, fmt.Errorf("starting the successor: %w", err)
	}
	theirs.Close()
	var waitErr error // once exited is closed
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	succeeded := false
	var killOnce sync.Once
	kill := func() { // the successor gone: it holds nothing of ours any more
		killOnce.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	defer func() {
		if !succeeded {
			kill()
		}
	}()
	fc, err := net.FileConn(mine)
	if err != nil {
		return res, err
	}
	c := fc.(*net.UnixConn)
	defer c.Close()

	// 1. Hello: the successor is configured and ready to serve.
	var hello handoverMsg
	if err := d.await(c, exited, &waitErr, &hello); err != nil {
		return res, fmt.Errorf("the successor did not start: %w", err)
	}
	log.Info("successor ready", zap.Int("pid", hello.Pid))

	// 2. Stop: the control socket, then every mount, concurrently.
	var sock *os.File
	var ctlDone <-chan struct{}
	if d.ctl != nil {
		if sock, ctlDone, err = d.ctl.Handover(context.Background()); err != nil {
			return res, err
		}
	}
	vms := d.vm.list()
	servers := []*fs.Server{d.srv}
	for _, vm := range vms {
		servers = append(servers, vm.srv)
	}
	stoppedAt := time.Now()
	var wg sync.WaitGroup
	stopErrs := make([]error, len(servers))
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Without HAS_RESEND a request left unanswered stays so:
			// wait as long as a load may (bounded by the handover's).
			wait := fs.DefaultStopTimeout
			if !s.CanResend() {
				wait = min(max(d.cfg.LoaderTimeout+time.Second, wait), handoverTimeout)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			dropped, err := s.Stop(ctx)
			stopErrs[i] = err
			if dropped > 0 {
				log.Info("requests left to the successor", zap.String("mountpoint", s.Mountpoint()), zap.Int("requests", dropped))
			}
		}()
	}
	wg.Wait()
	rollback := func(cause error) error {
		kill()
		if err := d.x.reopenStore(); err != nil {
			log.Error("the state directory cannot be opened again: changes are not kept", zap.Error(err))
		}
		for i, s := range servers {
			if stopErrs[i] != nil {
				continue
			}
			if err := s.Continue(); err != nil {
				log.Error("cannot serve again after a failed handover", zap.String("mountpoint", s.Mountpoint()), zap.Error(err))
			}
		}
		if sock != nil {
			if err := d.relisten(sock); err != nil {
				log.Error("the control socket cannot serve again", zap.Error(err))
			}
		}
		return cause
	}
	if err := errors.Join(stopErrs...); err != nil {
		return res, rollback(err)
	}

	// 3. The state and the descriptors.
	var unlinked []*dcache.Node
	for _, s := range servers {
		unlinked = append(unlinked, s.Unlinked()...)
	}
	st := handoverState{Pid: os.Getpid(), StoppedAt: stoppedAt, Namespace: d.ns.Export(unlinked)}
	if d.ks != nil {
		st.KernelOwned = d.ks.Owned()
	}
	var files []*os.File
	defer func() { closeFiles(files) }()
	for i, s := range servers {
		ms, fl, err := s.Handover()
		if err != nil {
			return res, rollback(err)
		}
		files = append(files, fl...)
		if i == 0 {
			st.Main = ms
		} else {
			st.Views = append(st.Views, handoverView{Spec: vms[i-1].spec, Mount: ms})
		}
	}
	if sock != nil {
		st.Control = true
		files = append(files, sock)
	}
	if ml := d.x.mln; ml != nil {
		if tl, ok := ml.(interface{ File() (*os.File, error) }); ok {
			if mf, err := tl.File(); err == nil {
				st.Metrics = true
				files = append(files, mf)
			}
		}
	}
	st.Files = len(files)
	if len(files) > maxHandoverFiles {
		return res, rollback(fmt.Errorf("%d descriptors to hand over, more than %d", len(files), maxHandoverFiles))
	}
	// The state directory: the successor opens it (and its lock) once
	// this store has written everything and let go.
	if err := d.x.releaseStore(); err != nil {
		return res, rollback(fmt.Errorf("closing the state directory: %w", err))
	}
	c.SetDeadline(time.Now().Add(handoverTimeout))
	if err := writeFrame(c, st, files); err != nil {
		return res, rollback(fmt.Errorf("sending the state: %w", err))
	}

	// 4. The successor serves, or says why not.
	var ack handoverMsg
	if err := d.await(c, exited, &waitErr, &ack); err != nil {
		return res, rollback(fmt.Errorf("the successor did not take over: %w", err))
	}
	if !ack.Serving {
		return res, rollback(fmt.Errorf("the successor cannot serve: %s", ack.Error))
	}

	// 5. Let go. Run ends once the control socket answered its last
	// request (this upgrade's); a serve loop that ends now is no unmount.
	succeeded = true
	letGo := func() {
		for _, s := range servers {
			if err := s.HandedOver(); err != nil {
				log.Warn("letting go of a mount", zap.String("mountpoint", s.Mountpoint()), zap.Error(err))
			}
		}
	}
	announce := func() {
		d.ctlDone = ctlDone
		d.vm.handedOver.Store(true)
		close(d.handover)
	}
	if letGoFirst { // mutant U2 only
		letGo()
		time.Sleep(u2Window)
		tellMainPid(ack.Pid, log)
		announce()
	} else {
		announce()
		letGo()
		tellMainPid(ack.Pid, log)
	}
	return wire.Upgrade{OldPid: os.Getpid(), NewPid: ack.Pid, Binary: binary, Mounts: len(servers),
		PauseMs: float64(ack.At.Sub(stoppedAt)) / float64(time.Millisecond)}, nil
}

// tellMainPid tells systemd the successor's pid: it follows the successor
// (its notify access is the main pid's). A notify socket nobody reads
// blocks the write: bounded.
func tellMainPid(pid int, log *zap.Logger) {
	told := make(chan bool, 1)
	go func() {
		ok, _ := daemon.SdNotify(false, "MAINPID="+strconv.Itoa(pid))
		told <- ok
	}()
	select {
	case ok := <-told:
		if ok {
			log.Info("told systemd the successor's pid", zap.Int("pid", pid))
		}
	case <-time.After(time.Second):
		log.Warn("the notify socket does not take MAINPID=; systemd may not follow the successor", zap.Int("pid", pid))
	}
}

// await reads one message of the successor, or its exit.
func (d *Daemon) await(c *net.UnixConn, exited <-chan struct{}, waitErr *error, m *handoverMsg) error {
	c.SetDeadline(time.Now().Add(handoverTimeout))
	got := make(chan error, 1)
	go func() {
		files, err := readFrame(c, nil, m)
		closeFiles(files)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			select {
			case <-exited:
				return fmt.Errorf("it exited (%v)", *waitErr)
			case <-time.After(time.Second):
			}
		}
		return err
	case <-exited:
		return fmt.Errorf("it exited (%v)", *waitErr)
	}
}

// relisten serves the control socket again after a failed handover.
func (d *Daemon) relisten(sock *os.File) error {
	ln, err := net.FileListener(sock)
	if err != nil {
		return err
	}
	opts := d.ctlOpts
	opts.Listener = ln.(*net.UnixListener)
	ctl, err := control.Listen(opts)
	if err != nil {
		return err
	}
	d.ctl = ctl
	d.rl.ctl = ctl
	ctl.Serve()
	return nil
}

// ErrHandedOver is Run's error once a successor serves the mounts
// (Upgrade): this process ends, leaving them mounted.
var ErrHandedOver = errors.New("the mounts were handed over to a successor")

// runHandedOver is Run's start in a successor: it serves the mounts the
// predecessor handed over, then tells it so (or why not: the predecessor
// then serves on, and this process lets go of every mount without
// unmounting it).
func (d *Daemon) runHandedOver() error {
	rd := d.ho
	defer rd.close()
	if err := d.resumeMounts(rd); err != nil {
		for _, s := range append([]*fs.Server{d.srv}, d.vm.servers()...) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing this process read is answered: the predecessor has it resent
			if _, serr := s.Stop(ctx); serr == nil {
				s.HandedOver()
			}
		}
		close(d.handover) // Close must not unmount them
		rd.say(err)
		return err
	}
	rd.say(nil)
	return nil
}

// endHandedOver ends Run once a successor serves: the control socket's
// last requests (the upgrade's own answer among them) are answered first.
func (d *Daemon) endHandedOver() error {
	if d.ctlDone != nil {
		select {
		case <-d.ctlDone:
		case <-time.After(controlShutdown + time.Second):
			d.log.Warn("the control socket's last requests did not end; exiting anyway")
		}
	}
	d.log.Info("the successor serves the mounts; exiting without unmounting them")
	return ErrHandedOver
}
