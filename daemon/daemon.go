// Package daemon is one running devfsd assembled: the namespace, its
// loaders, the lookup path, the FUSE server of the main mount and of each
// view, the control socket, persistence, metrics and the audit log, and
// their lifecycle (readiness, reload, bounded shutdown).
//
// A Daemon is made by New, which does everything that can fail before
// anything is mounted; Run mounts, serves until its context ends and
// stops; Close releases what New opened. The logger is received, never
// built here.
package daemon

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
	"github.com/devfsd/devfsd/modload/chain"
	"github.com/devfsd/devfsd/modload/helper"
	"github.com/devfsd/devfsd/modload/kernel"
)

// ErrUnmountedOutside is Run's error when the main mount went away while
// the daemon served it (umount or fusermount3 -u from outside).
var ErrUnmountedOutside = errors.New("the mount was removed from outside the daemon")

// Options are what a Daemon needs besides its configuration.
type Options struct {
	// Reread returns the configuration as the daemon was given it, read
	// again from the same sources (file and flags), validated. Reload
	// applies what changed. Nil: Reload refuses, there being nothing to
	// read again.
	Reread func() (config.Config, error)
	// AuditLog, if not nil, also receives the audit log of miss
	// decisions (the --audit-log file's JSON lines); the caller made it
	// and closes what it writes to after Close.
	AuditLog *zap.Logger
	// Args are the program's arguments that start this daemon (without
	// the program name), which Upgrade gives its successor. Nil: Upgrade
	// refuses.
	Args []string
	// Handover, if not nil, is the handover socket of a predecessor
	// (HandoverEnv; handover.go): New receives the namespace and the
	// mounts from it, and Run serves them instead of mounting.
	Handover *os.File
}

// Daemon is one devfsd: a namespace served on a mountpoint and its views.
type Daemon struct {
	cfg  config.Config
	log  *zap.Logger
	opts Options
	lc   *lifecycle

	hooks     testHooks
	views     []viewFile // the --view files, read by New
	x         *extras
	events    fanout       // the namespace's event sink
	hub       *control.Hub // nil with socket: none
	ns        *dcache.Namespace
	ks        *kernel.Source // devices kernel: the kernel's device source; else nil
	res       *lookup.Resolver
	srv       *fs.Server
	vm        *viewManager
	keep      *keeping // the descriptor store's side (keep.go)
	rl        *reloader
	ctl       *control.Server // nil with socket: none
	stopPprof func()

	runOnce   sync.Once
	closeOnce sync.Once
	closeErr  error

	// Upgrades (handover.go): ho is what a predecessor handed over (nil
	// unless Options.Handover); up serialises Upgrade; handover is closed
	// once a successor serves; ctlDone, then set, is closed once the
	// control socket answered its last request; ctlOpts are the control
	// socket's options, to serve it again after a failed handover.
	ho       *received
	up       upgrader
	handover chan struct{}
	ctlDone  <-chan struct{}
	ctlOpts  control.Options
}

// New builds the daemon of cfg (validated by config.Config.Validate): it reads
// the view files, opens the state directory, the audit log and the metrics
// listener, builds the namespace (restoring what was kept, registering the
// built-in base set), the loaders, the lookup path, the FUSE server, and
// creates the control socket. Nothing is mounted yet. Whatever fails is
// the error, and what was opened before it is closed again: a failed New
// leaves nothing behind.
func New(cfg config.Config, log *zap.Logger, o Options) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, opts: o, lc: &lifecycle{log: log}, stopPprof: func() {},
		handover: make(chan struct{})}
	if err := d.build(); err != nil {
		if d.ho != nil {
			d.ho.say(err) // the predecessor serves on
			d.ho.close()
			d.ho = nil
		}
		d.release() // what build opened before it failed; nil parts are skipped
		return nil, err
	}
	return d, nil
}

// build is New's work on d; whatever it fails at, the parts of d it
// made stay set for release.
func (d *Daemon) build() (err error) {
	cfg, log, o := d.cfg, d.log, d.opts
	if d.hooks, err = testHooksFromEnv(); err != nil {
		return err
	}
	if d.views, err = loadViewFiles(cfg.Views); err != nil { // read before anything is mounted
		return err
	}
	if o.Handover != nil {
		// A successor: the predecessor's namespace and mounts.
		if d.ho, err = receiveHandover(o.Handover, log); err != nil {
			return err
		}
	}
	// Descriptors kept by the store (LISTEN_FDS): the mounts a killed
	// predecessor served, served again instead of mounted (keep.go).
	d.keep = openKeeping(cfg.Mountpoint, log.Named("keep"))
	if d.ho == nil && !d.keep.resuming() {
		// A dead mount left on the mountpoint is cleared, a live one
		// refused, before anything is opened; a kept or handed over one
		// is ours.
		if err := clearMountpoint(cfg.Mountpoint, cfg.MountOver, log); err != nil {
			return err
		}
	}
	if err := checkSocketDir(cfg); err != nil {
		return err
	}
	// The state directory, the metrics registry and listener, the audit
	// log: a damaged snapshot or an address in use fails the start.
	mln, err := d.ho.metricsListener()
	if err != nil {
		return err
	}
	if d.x, err = openExtras(cfg, log, o.AuditLog, mln); err != nil {
		return err
	}
	x := d.x
	nq := fs.NewNotifyQueue(0)
	mux := fs.NewNotifyMux(nq) // every mount's notify queue: the main one's, and each view's
	// The namespace's events go to the store (if any), the kernel
	// notifies and, with a socket, its subscribers: peers of one fan-out.
	sock := cfg.SocketPath(cfg.Mountpoint)
	if x.store != nil {
		d.events = append(d.events, x.ref)
	}
	d.events = append(d.events, mux)
	if d.keep.store != nil {
		d.events = append(d.events, ceilingWatch{k: d.keep}) // ids stay below a kept ceiling
	}
	if sock != "" {
		d.hub = control.NewHub(nil) // a peer: it forwards to nothing
		d.events = append(d.events, d.hub)
	}
	negTTL := cfg.NegativeTimeout
	if negTTL == 0 {
		negTTL = -1 // dcache: negative means no negative caching
	}
	// Serving a kept mount: its generation, ids above its ceiling, and
	// the kept nodes' numbers if the state directory has them (keep.go).
	gen, floor, useKept := d.keep.ids(x.store)
	nsOpts := dcache.Options{
		Generation:   gen,
		MaxNodes:     cfg.MaxNodes,
		MaxFileSize:  int64(cfg.MaxFileSize),
		MaxBytes:     int64(cfg.MaxBytes),
		NegativeTTL:  negTTL,
		Sink:         d.events,
		RegisterHook: x.registerHook(), // kept attributes of registered devices
	}
	var ns *dcache.Namespace
	if d.ho != nil {
		// The predecessor's tree, inode numbers and generation: the
		// kernel's node ids stay valid.
		if ns, err = dcache.Import(nsOpts, d.ho.state.Namespace); err != nil {
			return err
		}
	} else {
		ns = dcache.New(nsOpts)
	}
	d.ns = ns
	ns.RaiseLastIno(floor)
	d.keep.watchIDs(ns, x.store)
	if useKept {
		x.store.UseKeptIDs()
	}
	// What users made comes back before the base set registers, so that
	// a name a user took over stays theirs.
	x.restore(ns, d.ho != nil)
	bl := builtin.New(nsRegistrar{ns}, log)
	if _, err := bl.SetExtensions(modules(cfg.Modules)); err != nil { // modules:, validated
		return err
	}
	devices, why := chooseDevices(cfg)
	log.Info("device source", zap.String("devices", devices), zap.String("why", why))
	var owned map[string]uint64 // the kernel source's nodes, from a predecessor
	if d.ho != nil {
		owned = d.ho.state.KernelOwned
	}
	if d.ks, err = startDevices(devices, cfg, ns, bl, d.ho != nil, owned, log); err != nil {
		return err
	}
	if d.ho == nil { // a successor's tree has them
		if err := d.hooks.populateTree(ns, log); err != nil {
			return err
		}
	}
	// pts and shm are in the namespace before its first mount
	// (fs.PrepareSpecials says why).
	if err := fs.PrepareSpecials(ns, specialOpts(cfg)); err != nil {
		return err
	}
	if d.stopPprof, err = d.hooks.startPprof(log); err != nil {
		d.stopPprof = func() {}
		return err
	}
	// The fallback (builtin, exec or none) is built by loaders, which a
	// reload asks again (reload.go).
	lds := &loaders{ns: ns, bl: bl, ks: d.ks, devices: devices, log: log, wrap: func(l modload.Loader) modload.Loader { return d.hooks.wrapLoader(l, log) }}
	fallback, err := lds.fallback(cfg)
	if err != nil {
		return err
	}
	// An attached helper answers every miss; the fallback answers while
	// none is. The helper and its descendants bypass the lookup wait.
	hl := helper.New(log)
	loader := chain.Loader{Helper: hl, Fallback: fallback, FallbackName: lds.fallbackName(cfg)}
	d.res = lookup.New(ns, loader, lookup.Options{
		Timeout: cfg.LoaderTimeout,
		// The exec loader's programs (their process groups) bypass too.
		// Asked only on misses and changes that would wait (package
		// lookup), the cheap question first: a getpgid(2) against the
		// helper's walk of parent links.
		IsLoader: func(c dcache.Caller) bool { return lds.isExec(c.Pid) || hl.IsHelper(c.Pid) },
		// Each load is counted (metrics) and audited.
		Observe: x.observe,
	})
	if d.hooks.noResend() {
		log.Warn("TEST HOOK: the main mount does without HAS_RESEND (DEVFSD_TEST_NO_RESEND)")
	}
	d.srv = fs.New(d.res, nq, fs.Options{
		EntryTimeout:       cfg.EntryTimeout,
		AttrTimeout:        cfg.AttrTimeout,
		NegativeTimeout:    cfg.NegativeTimeout,
		Readdirplus:        cfg.Readdirplus,
		AllowOther:         cfg.AllowOther,
		DefaultPermissions: cfg.DefaultPermissions,
		Dev:                cfg.Dev,
		ShutdownTimeout:    cfg.ShutdownTimeout,
		Debug:              cfg.Debug,
		Logger:             log.Named("fs"),
		Observer:           x,             // request latency (metrics), once wired
		Journal:            x.fsJournal(), // changes are answered once kept
		NoResend:           d.hooks.noResend(),
	})
	x.wire(ns, d.res, d.srv, d.hub, d.ks)
	d.vm = newViewManager(d.srv, mux, cfg.ViewsDir, specialOpts(cfg), log.Named("views"))
	d.vm.keep = d.keep
	d.rl = &reloader{reread: o.Reread, log: log.Named("reload"), ns: ns, res: d.res, srv: d.srv,
		hl: hl, loaders: lds, metrics: x.metrics, cfg: cfg}
	// The socket is made before the mount (a live socket of another
	// daemon fails the start before anything is mounted) and served once
	// the mount is live, before READY=1.
	if sock != "" {
		res, srv, ks := d.res, d.srv, d.ks
		var kc control.Kernel // nil unless devices is kernel
		if ks != nil {
			kc = kernelControl{ks}
		}
		d.ctlOpts = control.Options{
			Path:         sock,
			Mode:         iofs.FileMode(cfg.SocketMode),
			WriteUID:     cfg.ControlUID,
			WriteGID:     cfg.ControlGID,
			Namespace:    ns,
			Hub:          d.hub,
			Helper:       hl,
			Fallback:     lds.fallbackName(cfg),
			SyncNotifies: srv.SyncNotifies,
			MustNotWait:  res.MustNotWaitForNotify, // the loader's changes, and those of names being loaded
			Metrics:      x.handler,
			Reload:       d.rl.reload,
			Journal:      x.ctlJournal(),
			Audit:        x.audit,
			Views:        d.vm,
			Kernel:       kc,
			Extra: func() map[string]uint64 {
				ls, st := res.Stats(), srv.Stats()
				m := map[string]uint64{
					"lookup_in_flight": uint64(ls.InFlight), "lookup_loads": uint64(ls.Loads),
					"notify_sent": st.Notify.Sent, "notify_dropped": st.Notify.Dropped,
					"notify_failed": st.Notify.Failed,
				}
				kernelStats(ks, m)
				return m
			},
			Logger:  log.Named("control"),
			Upgrade: d.Upgrade,
		}
		opts := d.ctlOpts
		if opts.Listener, err = d.ho.controlListener(); err != nil {
			return err
		}
		if d.ctl, err = control.Listen(opts); err != nil {
			return err
		}
	}
	d.rl.ctl = d.ctl // before the socket serves: reload may come through it
	return nil
}

// Run mounts the namespace on the configured mountpoint and the views of
// the --view files, serves the control socket and the metrics listener,
// and reports readiness (READY=1 to systemd when NOTIFY_SOCKET is set)
// once all are live. It serves until ctx ends, then stops: the control
// socket first (no change arrives while the mounts drain), then every
// view, then the main mount, each drain bounded by shutdown_timeout. It
// returns nil after a clean stop, ErrUnmountedOutside if the main mount
// was taken away, or the error that kept it from mounting (nothing is
// then left mounted). Run may be called once; Close is still needed after
// it.
func (d *Daemon) Run(ctx context.Context) error {
	err := errors.New("daemon: Run called twice")
	d.runOnce.Do(func() { err = d.run(ctx) })
	return err
}

func (d *Daemon) run(ctx context.Context) error {
	defer func() {
		if !d.handedOver() {
			d.lc.Stopping()
		}
	}()
	stopNotify := context.AfterFunc(ctx, d.lc.Stopping)
	defer stopNotify()
	// The ids handed out from now on are below a ceiling a successor
	// will know (keep.go), before the kernel sees any of them.
	if err := d.keep.reserve(ctx, d.ns, d.x.store); err != nil {
		return fmt.Errorf("keeping the id ceiling: %w", err)
	}
	d.hooks.afterReserve(d.log)
	switch {
	case d.ho != nil:
		if err := d.runHandedOver(); err != nil {
			return err
		}
		// Kept in the store as well, under the names the predecessor
		// stored them by (keep.go).
		d.keep.added(d.cfg.Mountpoint, nil, d.srv)
		for _, vm := range d.vm.list() {
			d.keep.added(vm.spec.Mountpoint, &vm.spec, vm.srv)
		}
	case d.keep.main != nil:
		if err := d.resumeMain(d.keep.main); err != nil {
			return err
		}
		if err := d.vm.start(d.views); err != nil { // the kept views, and the --view files
			d.keep.release()
			d.stop()
			return err
		}
	default:
		if err := d.srv.Mount(d.cfg.Mountpoint); err != nil {
			return err
		}
		// Its pts and shm, once it serves; its Shutdown detaches them first.
		if _, err := d.srv.MountSpecials(specialOpts(d.cfg)); err != nil {
			d.stop()
			return err
		}
		d.keep.added(d.cfg.Mountpoint, nil, d.srv)
		if err := d.vm.start(d.views); err != nil { // --view: live before READY=1
			d.keep.release()
			d.stop()
			return err
		}
	}
	if d.ctl != nil {
		d.ctl.Serve()
		d.log.Info("control socket is live", zap.String("socket", d.ctl.Path()))
	}
	d.x.serveMetrics()
	// The test hook's signal handler is installed before READY=1, so a
	// test that signals as soon as the daemon is ready is never ignored.
	stopHooks := d.hooks.start(d.ns, d.srv.SyncNotifies, d.log)
	defer stopHooks()
	d.lc.Ready()

	select {
	case <-ctx.Done():
		d.log.Info("shutting down", zap.Duration("shutdown_timeout", d.cfg.ShutdownTimeout))
	case <-d.handover:
		return d.endHandedOver()
	case <-d.srv.Served():
		if d.handedOver() {
			return d.endHandedOver()
		}
		d.log.Warn("the mount is gone; shutting down")
		d.keep.release()
		d.stop()
		return ErrUnmountedOutside
	}
	// A clean stop unmounts: nothing is left in the store for a
	// successor, which mounts afresh.
	d.keep.release()
	start := time.Now()
	if err := d.stop(); err != nil {
		return err
	}
	st := d.srv.Stats()
	d.log.Info("server stopped", zap.Duration("took", time.Since(start)),
		zap.Uint64("notifies_sent", st.Notify.Sent), zap.Uint64("notifies_dropped", st.Notify.Dropped))
	return nil
}

// resumeMain serves the kept main mount (keep.go) instead of mounting:
// its specials are still mounted, and the kernel resends what the
// killed predecessor had read and not answered. A kept mount this
// daemon cannot serve (its options negotiate other capabilities) is
// taken out of the store, so that it ends (ENOTCONN for its callers)
// and the next start mounts afresh, rather than hang its callers.
func (d *Daemon) resumeMain(km *keptMount) error {
	files := km.files
	km.files = nil
	if err := d.srv.Resume(km.server, files); err != nil {
		d.keep.forget(km)
		d.keep.release()
		return fmt.Errorf("serving the kept mount %s: %w (its descriptors are dropped: the next start mounts afresh)", km.Mountpoint, err)
	}
	d.keep.resumed(km) // Resume asked the kernel to resend before it read
	return nil
}

// stop takes the mounts down in shutdown order: the socket, the views,
// the main mount. Each step is idempotent and bounded.
func (d *Daemon) stop() error {
	if d.ctl != nil {
		stopControl(d.ctl, d.log)
	}
	d.vm.close()
	return d.srv.Shutdown()
}

// Reload reads the configuration again (Options.Reread) and applies what
// changed without unmounting; see reload.go for what may change. An
// invalid or unreloadable configuration changes nothing and is an error
// wrapping control.ErrInvalidConfig.
func (d *Daemon) Reload(ctx context.Context) (wire.Reload, error) {
	return d.rl.reload(ctx)
}

// Close stops whatever still runs (as Run's stop does) and closes what
// New opened: the test hooks' listener, the metrics listener, the audit
// log, the state store. It is idempotent and bounded; every call returns
// the first call's result.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.release() })
	return d.closeErr
}

// release closes whatever of d exists; New calls it on failure, when
// only part of d was built.
func (d *Daemon) release() error {
	var err error
	if d.srv != nil {
		err = d.stop()
	} else if d.ctl != nil {
		stopControl(d.ctl, d.log)
	}
	if d.ks != nil {
		d.ks.Close() // hotplug stops once the mounts are down
	}
	if d.keep != nil {
		d.keep.unused()
	}
	if d.stopPprof != nil {
		d.stopPprof()
	}
	if d.x != nil {
		d.x.close()
	}
	return err
}

// controlShutdown bounds closing the control socket.
const controlShutdown = time.Second

// stopControl closes the control socket: streams end, helpers detach
// (their pending lookups are answered at once), the socket file goes.
func stopControl(ctl *control.Server, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), controlShutdown)
	defer cancel()
	if err := ctl.Shutdown(ctx); err != nil {
		log.Warn("control socket: connections closed by force", zap.Error(err))
	}
}

// checkSocketDir refuses, with what to do instead, a default socket that
// a user other than root cannot make (SocketDir is root's, and there is
// no XDG_RUNTIME_DIR to fall back on).
func checkSocketDir(cfg config.Config) error {
	sock := cfg.SocketPath(cfg.Mountpoint)
	if cfg.Socket != "" || sock == "" || os.Geteuid() == 0 {
		return nil
	}
	dir := filepath.Dir(sock)
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		err = unix.Access(dir, unix.W_OK)
	}
	if err != nil {
		return config.Error{Err: fmt.Errorf("socket: the default control socket %s cannot be made as uid %d (%v): "+
			"set XDG_RUNTIME_DIR for a socket of your own, or pass --socket PATH, or --socket none", sock, os.Geteuid(), err)}
	}
	return nil
}

// specialOpts are the special mounts of every mount of cfg's daemon.
func specialOpts(cfg config.Config) fs.SpecialOpts {
	return fs.SpecialOpts{Pts: fs.SpecialMode(cfg.Pts), Shm: fs.SpecialMode(cfg.Shm), ShmSize: int64(cfg.ShmSize)}
}
