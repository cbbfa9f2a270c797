// Package helperd is `devfsd helper`, the reference helper daemon
// (DESIGN.md section 5): it attaches to a daemon's control socket as the
// module loader and runs a devfsd.conf against the namespace's events, as
// devfsd did against devfs's. The parser and rules engine are
// modload/devfsdconf; this file is the run loop, host.go what the rules
// act through.
package helperd

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload/devfsdconf"
	mexec "github.com/devfsd/devfsd/modload/exec"
)

// readyFD names the descriptor on which a helper started in the
// background says it is ready (set by the parent for its child only).
const readyFD = "DEVFSD_HELPER_READY_FD"

// Options are the settings of `devfsd helper` (its flags).
type Options struct {
	Config       string        // the devfsd.conf file
	Socket       string        // the daemon's control socket ("": $DEVFSD_SOCKET, else Mount's default)
	Mount        string        // the daemon's mount point: $mntpnt, and the default socket
	Foreground   bool          // stay in the foreground
	NoPoll       bool          // restore and run the REGISTER rules for what exists, then exit
	ExecTimeout  time.Duration // bound on each EXECUTE and modprobe program
	Modprobe     string        // MODLOAD runs this program instead of the built-in catalogue
	ModprobeConf string        // the -C file of Modprobe (omitted when missing)
	Aliases      string        // a modules.devfs-style file of 'alias /dev/NAME MODULE' lines
}

// Check validates o and reads its devfsd.conf, so that a bad one is an
// error before the helper goes to the background. Its errors are the
// user's (daemon.ConfigError).
func (o Options) Check() error {
	if o.ExecTimeout <= 0 || o.ExecTimeout > 10*time.Minute {
		return config.Error{Err: fmt.Errorf("helper: --exec-timeout %v is out of range (0, 10m]", o.ExecTimeout)}
	}
	if _, err := devfsdconf.Load(o.Config, devfsdconf.Options{Mountpoint: o.Mount}); err != nil {
		return config.Error{Err: fmt.Errorf("helper: config: %w", err)}
	}
	return nil
}

// Lint writes to w, for each line of o.Config and the files it
// includes, what the line runs or why it is left out (devfsdconf.Check).
// It reports false when devfsd 1.3.25 itself would have refused the
// configuration, and an error when the file cannot be read at all.
func Lint(w io.Writer, o Options) (bool, error) {
	return devfsdconf.Check(w, o.Config, devfsdconf.Options{Mountpoint: o.Mount})
}

// GoesToBackground reports whether a helper started with o puts itself in
// the background (Background) rather than running here (Run).
func (o Options) GoesToBackground() bool {
	return !o.NoPoll && !o.Foreground && os.Getenv(readyFD) == ""
}

// Run is the helper in the foreground, until ctx ends: it attaches to
// the daemon's socket, restores, scans and serves.
func Run(ctx context.Context, o Options, log *zap.Logger) error {
	abs, err := filepath.Abs(o.Mount)
	if err != nil {
		return config.Error{Err: err}
	}
	o.Mount = abs
	if o.Socket == "" {
		o.Socket = os.Getenv("DEVFSD_SOCKET")
	}
	if o.Socket == "" {
		o.Socket = config.ClientSocket(o.Mount)
	}
	h, err := newHelper(ctx, o, log)
	if err != nil {
		return err
	}
	return h.run(ctx)
}

// Background starts the helper again in the foreground as a child
// in a session of its own and returns once it is ready (its start-up scan
// is done, so boot scripts see the finished product, as with devfsd), or
// fails if it exits first.
func Background(ctx context.Context, args []string, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{"helper", "-fg"}, args...)...)
	cmd.Dir = "/"
	cmd.Env = append(mexec.Environ(nil), readyFD+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan bool, 1)
	go func() {
		b, _ := io.ReadAll(r)
		ready <- strings.TrimSpace(string(b)) == "ready"
	}()
	select {
	case ok := <-ready:
		if ok {
			fmt.Fprintf(stderr, "devfsd: helper: running in the background, pid %d\n", cmd.Process.Pid)
			return nil
		}
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return ctx.Err()
	}
	// Not ready: the child closed its end, normally by exiting. A signal
	// still ends the wait should it linger.
	select {
	case err := <-exited:
		return fmt.Errorf("helper: the background helper failed: %v", err)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return ctx.Err()
	}
}

// helperd is one running `devfsd helper`.
type helperd struct {
	o      Options
	log    *zap.Logger
	c      *client.Client
	host   *helperHost
	engine *devfsdconf.Engine
	cfg    *devfsdconf.Config
}

func newHelper(ctx context.Context, o Options, log *zap.Logger) (*helperd, error) {
	cfg, err := loadHelperConfig(o, log)
	if err != nil {
		return nil, config.Error{Err: err}
	}
	c := client.New(o.Socket)
	host, err := newHelperHost(ctx, o, c, log)
	if err != nil {
		return nil, config.Error{Err: err}
	}
	h := &helperd{o: o, log: log, c: c, host: host,
		engine: &devfsdconf.Engine{Host: host, Mountpoint: o.Mount, Log: log}}
	h.setConfig(cfg)
	return h, nil
}

// setConfig makes cfg the configuration the rules run from.
func (h *helperd) setConfig(cfg *devfsdconf.Config) {
	h.cfg = cfg
	h.host.execOnRegister = func(name string) bool {
		for i := range cfg.Rules {
			r := &cfg.Rules[i]
			if r.Event == devfsdconf.Register && r.Action == devfsdconf.Execute {
				if _, ok := r.Match(name); ok {
					return true
				}
			}
		}
		return false
	}
}

// loadHelperConfig reads the configuration and logs what is wrong with it
// line by line; only an unreadable configuration is an error.
func loadHelperConfig(o Options, log *zap.Logger) (*devfsdconf.Config, error) {
	cfg, err := devfsdconf.Load(o.Config, devfsdconf.Options{Mountpoint: o.Mount})
	if err != nil {
		return nil, fmt.Errorf("helper: config: %w", err)
	}
	for _, d := range cfg.Diags {
		if d.Warning {
			log.Warn("config: " + d.Error())
		} else {
			log.Error("config: line left out: " + d.Error())
		}
	}
	log.Info("config loaded", zap.Strings("files", cfg.Files), zap.Int("rules", len(cfg.Rules)),
		zap.Int("restores", len(cfg.Restores)), zap.Int("lines_left_out", len(cfg.Errors())))
	return cfg, nil
}

// run is the life of the helper: attach, restore, scan, serve. An end
// once ctx has ended (SIGTERM) is a clean stop, wherever it came: while
// attaching, during the start-up scan (a stop of the unit soon after its
// start) or while serving.
func (h *helperd) run(ctx context.Context) error {
	err := h.live(ctx)
	if err != nil && ctx.Err() != nil {
		h.log.Info("stopping")
		return nil
	}
	return err
}

func (h *helperd) live(ctx context.Context) error {
	defer h.c.Close()
	var hs *client.HelperStream
	if !h.o.NoPoll {
		var err error
		hs, err = h.c.AttachHelper(ctx)
		if err != nil {
			return fmt.Errorf("helper: attaching to %s: %w", h.o.Socket, err)
		}
		defer hs.Close()
		h.log.Info("attached", zap.String("socket", h.o.Socket), zap.String("mount", h.o.Mount),
			zap.Uint32("pid", hs.Hello().Pid))
	}
	if err := h.startup(ctx); err != nil {
		return err
	}
	if h.o.NoPoll {
		return nil
	}
	h.host.Prepare()
	h.ready()
	defer sd.SdNotify(false, sd.SdNotifyStopping)
	return h.serve(ctx, hs)
}

// startup restores what RESTORE names and runs the REGISTER rules for
// every node that exists, as devfsd did at start (and after SIGHUP).
func (h *helperd) startup(ctx context.Context) error {
	for _, r := range h.cfg.Restores {
		if err := h.engine.Restore(r.Dir); err != nil {
			h.log.Warn("restore: "+r.Pos.String(), zap.String("dir", r.Dir), zap.Error(err))
		}
	}
	l, err := h.c.List(ctx, "", true)
	if err != nil {
		return fmt.Errorf("helper: listing the namespace: %w", err)
	}
	for _, n := range l.Nodes {
		if ctx.Err() != nil {
			return nil
		}
		_ = h.engine.Handle(ctx, h.cfg, nodeEvent(devfsdconf.Register, n))
	}
	h.log.Info("start-up scan done", zap.Int("nodes", len(l.Nodes)))
	return nil
}

// ready tells whoever waits: the parent that put us in the background,
// and systemd.
func (h *helperd) ready() {
	if s := os.Getenv(readyFD); s != "" {
		os.Unsetenv(readyFD)
		if fd, err := strconv.Atoi(s); err == nil {
			f := os.NewFile(uintptr(fd), "ready")
			fmt.Fprintln(f, "ready")
			f.Close()
		}
	}
	if _, err := sd.SdNotify(false, sd.SdNotifyReady); err != nil {
		h.log.Warn("sd_notify failed", zap.Error(err))
	}
}

// serve handles the helper stream's records, one at a time and in order,
// until ctx ends or the daemon ends the stream (an error either way; run
// takes the first for a clean stop). Each
// record is handled on the goroutine that read it: a LOOKUP's answer is
// on its way with no hand-off between goroutines (each one a wake-up on
// the path of the miss). SIGHUP's reload runs on a goroutine of its own,
// between two records (mu): the rules never run twice at once. An end of
// ctx ends the stream's read (it is the stream's request context).
func (h *helperd) serve(ctx context.Context, hs *client.HelperStream) error {
	var mu sync.Mutex // held while the rules run: a record, or a reload
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-hup:
				mu.Lock()
				h.reload(ctx)
				mu.Unlock()
			}
		}
	})
	for {
		rec, err := hs.Next()
		if err != nil {
			return fmt.Errorf("helper: the daemon ended the helper stream: %w", err) // run: nil once ctx ended
		}
		mu.Lock()
		h.handle(ctx, hs, rec)
		mu.Unlock()
	}
}

// reload is SIGHUP: a configuration that reads replaces the old one and
// the start-up (RESTORE, REGISTER for every node) runs again, as devfsd
// did; one that does not keeps the old one.
func (h *helperd) reload(ctx context.Context) {
	h.log.Info("SIGHUP: reloading", zap.String("config", h.o.Config))
	cfg, err := loadHelperConfig(h.o, h.log)
	if err != nil {
		h.log.Error("reload failed; the old configuration stays", zap.Error(err))
		return
	}
	h.host.reloadAliases()
	h.setConfig(cfg)
	if err := h.startup(ctx); err != nil {
		h.log.Warn("rescan after reload failed", zap.Error(err))
	}
}

func (h *helperd) handle(ctx context.Context, hs *client.HelperStream, rec wire.Record) {
	switch rec.Type {
	case "lookup":
		start := time.Now()
		h.host.startBatch()
		err := h.engine.Handle(ctx, h.cfg, devfsdconf.Event{Kind: devfsdconf.Lookup, Name: rec.Path})
		derr := h.answer(ctx, hs, rec.ID, h.host.endBatch(), err)
		if derr != nil && client.Code(derr) != wire.CodeUnknownLookup {
			h.log.Warn("done failed", zap.Uint64("id", rec.ID), zap.Error(derr))
		}
		h.log.Debug("lookup answered", zap.Uint64("id", rec.ID), zap.String("name", rec.Path),
			zap.Duration("took", time.Since(start)), zap.Bool("late", client.Code(derr) == wire.CodeUnknownLookup))
		h.host.Prepare()
	case "event":
		k, ok := devfsdconf.ParseKind(rec.Kind)
		if !ok || k == devfsdconf.Lookup {
			return
		}
		ev := devfsdconf.Event{Kind: k, Name: rec.Path, Mode: stMode(rec.NodeType, rec.Mode),
			UID: rec.Uid, GID: rec.Gid, Major: rec.Major, Minor: rec.Minor}
		_ = h.engine.Handle(ctx, h.cfg, ev)
	case "overrun":
		h.log.Warn("events lost: the helper fell behind", zap.Uint64("missed", rec.Missed),
			zap.Uint64("first_seq", rec.FirstSeq), zap.Uint64("last_seq", rec.LastSeq))
	}
}

// nodeEvent is the event of kind k for node n.
func nodeEvent(k devfsdconf.Kind, n wire.Node) devfsdconf.Event {
	return devfsdconf.Event{Kind: k, Name: n.Path, Mode: stMode(n.Type, n.Mode), UID: n.Uid, GID: n.Gid,
		Major: n.Major, Minor: n.Minor}
}

// stMode builds st_mode from the wire's node type and octal mode.
func stMode(typ, mode string) uint32 {
	perm, _ := config.ParseMode(mode) // the daemon's own answer: well-formed
	t, _ := dcache.ParseType(typ)     // likewise: a type the daemon names
	return t.ModeBits() | uint32(perm)
}
