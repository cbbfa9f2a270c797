package main

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/modload/builtin"
	"github.com/devfsd/devfsd/modload/chain"
	"github.com/devfsd/devfsd/modload/helper"
)

// errUnmountedOutside is serve's error when the mount went away without
// a signal (umount or fusermount3 -u from outside).
var errUnmountedOutside = errors.New("the mount was removed from outside the daemon")

// serve is the wiring point for the FUSE server: everything before it
// (flags, config file, validation, logger, signals, sd_notify) is done.
//
// It builds, in order:
//   - the namespace: dcache.New with MaxNodes, MaxFileSize, MaxBytes from
//     cfg and NegativeTTL = cfg.NegativeTimeout (dcache reads 0 as
//     "default 1s", so a configured 0 is passed as negative: no negative
//     caching), its event sink being a control.Hub that passes every event to the
//     fs.NotifyMux (the notify queue of every mount: the main one and
//     each view's) and fans it out to the control socket's consumers;
//   - the built-in loader over it, builtin.New(nsRegistrar{ns}, log)
//     (wire.go), with cfg.Modules as its extension modules, and its base
//     set, registered before the mount;
//   - the loader chain: the helper loader (modload/helper) first while a
//     helper is attached, else the fallback cfg.Loader (builtin, exec
//     (modload/exec: cfg.ExecProgram per miss) or none);
//   - the lookup path: lookup.New(ns, chain, {Timeout: cfg.LoaderTimeout,
//     IsLoader: the helper and its descendants, and the process groups of
//     the exec loader's running programs});
//   - the fs server with cfg's timeouts, Readdirplus, Debug and the mount
//     options AllowOther, DefaultPermissions, Dev;
//
// then creates the control socket (control.Listen: a live socket of
// another daemon fails the start before anything is mounted), mounts on
// cfg.Mountpoint, mounts the views of --view (views.go), serves the
// socket, calls ready() once all are live (READY=1 to systemd when
// NOTIFY_SOCKET is set), serves until ctx is cancelled (SIGTERM/SIGINT) or
// the mount is taken away, and shuts down: first the control socket
// (bounded, idempotent: streams end, the helper detaches, the socket file
// goes), then every view, then the server: refuse new requests, drain
// live ones for at most cfg.ShutdownTimeout, unmount. It returns nil
// after a clean stop.
//
// Test-only behaviour is switched on by environment variables, never by
// configuration (see testhooks.go).
//
// It is a variable so tests can stand in a fake server.
var serve = func(ctx context.Context, cfg Config, log *zap.Logger, ready func()) error {
	hooks, err := testHooksFromEnv()
	if err != nil {
		return err
	}
	views, err := loadViewFiles(cfg.Views) // --view: read before anything is mounted
	if err != nil {
		return err
	}
	// The state directory, the metrics registry and listener, the audit
	// log: opened before anything else, so that a damaged snapshot or an
	// address in use fails the start before anything is mounted; closed
	// last, once the mount is down.
	x, err := openExtras(cfg, log)
	if err != nil {
		return err
	}
	defer x.close()
	nq := fs.NewNotifyQueue(0)
	mux := fs.NewNotifyMux(nq) // every mount's notify queue: the main one's, and each view's
	// The hub fans events out to the state store (if any), the notify
	// queue (kernel notifies) and the control socket's subscribers; it is
	// the namespace's sink.
	hub := control.NewHub(x.sink(mux))
	negTTL := cfg.NegativeTimeout
	if negTTL == 0 {
		negTTL = -1 // dcache: negative means no negative caching
	}
	ns := dcache.New(dcache.Options{
		MaxNodes:     cfg.MaxNodes,
		MaxFileSize:  int64(cfg.MaxFileSize),
		MaxBytes:     int64(cfg.MaxBytes),
		NegativeTTL:  negTTL,
		Sink:         hub,
		RegisterHook: x.registerHook(), // kept attributes of registered devices
	})
	// What users made comes back before the base set registers, so that
	// a name a user took over stays theirs.
	x.restore(ns)
	bl := builtin.New(nsRegistrar{ns}, log)
	if _, err := bl.SetExtensions(cfg.Modules); err != nil { // modules:, validated
		return err
	}
	if err := bl.RegisterBase(ctx); err != nil {
		return fmt.Errorf("registering the base set: %w", err)
	}
	if err := hooks.populateTree(ns, log); err != nil {
		return err
	}
	stopPprof, err := hooks.startPprof(log)
	if err != nil {
		return err
	}
	defer stopPprof()
	// The fallback (builtin, exec or none) is built by loaders, which a
	// reload asks again (reload.go).
	lds := &loaders{ns: ns, bl: bl, log: log, delay: hooks.loaderDelay}
	fallback, err := lds.fallback(cfg)
	if err != nil {
		return err
	}
	// An attached helper answers every miss; the fallback answers while
	// none is. The helper and its descendants bypass the lookup wait.
	hl := helper.New(log)
	loader := chain.Loader{Helper: hl, Fallback: fallback, FallbackName: cfg.Loader}
	res := lookup.New(ns, namedLoader{loader}, lookup.Options{
		Timeout: cfg.LoaderTimeout,
		// The exec loader's programs (their process groups) bypass too.
		IsLoader: func(c dcache.Caller) bool { return hl.IsHelper(c.Pid) || lds.isExec(c.Pid) },
		// Each load is counted (metrics) and audited.
		Observe: x.observe,
	})
	srv := fs.New(res, nq, fs.Options{
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
	})
	x.wire(ns, res, srv, hub)
	vm := newViewManager(srv, mux, log.Named("views"))
	rl := &reloader{src: configSourceOf(ctx), log: log.Named("reload"), ns: ns, res: res, srv: srv,
		hl: hl, loaders: lds, metrics: x.metrics, cfg: cfg}
	// The socket is made before the mount (a live socket of another
	// daemon fails the start before anything is mounted) and served once
	// the mount is live, before READY=1.
	var ctl *control.Server
	if sock := cfg.SocketPath(cfg.Mountpoint); sock != "" {
		ctl, err = control.Listen(control.Options{
			Path:         sock,
			Mode:         iofs.FileMode(cfg.SocketMode),
			WriteUID:     cfg.ControlUID,
			WriteGID:     cfg.ControlGID,
			Namespace:    ns,
			Hub:          hub,
			Helper:       hl,
			Fallback:     cfg.Loader,
			SyncNotifies: srv.SyncNotifies,
			Metrics:      x.handler,
			Reload:       rl.reload,
			Journal:      x.ctlJournal(),
			Audit:        x.audit,
			Views:        vm,
			Extra: func() map[string]uint64 {
				ls, st := res.Stats(), srv.Stats()
				return map[string]uint64{
					"lookup_in_flight": uint64(ls.InFlight), "lookup_loads": uint64(ls.Loads),
					"notify_sent": st.Notify.Sent, "notify_dropped": st.Notify.Dropped,
					"notify_failed": st.Notify.Failed,
				}
			},
			Logger: log.Named("control"),
		})
		if err != nil {
			return err
		}
		// Closed first at shutdown, so that no change arrives while the
		// mount drains; bounded and idempotent.
		defer stopControl(ctl, log)
	}
	rl.ctl = ctl // before the socket serves: reload may come through it
	if err := srv.Mount(cfg.Mountpoint); err != nil {
		return err
	}
	if err := vm.start(ctx, views, cfg.Views); err != nil { // --view: live before READY=1
		vm.close()
		_ = srv.Shutdown()
		return err
	}
	if ctl != nil {
		ctl.Serve()
		log.Info("control socket is live", zap.String("socket", ctl.Path()))
	}
	x.serveMetrics()
	rl.watchSIGHUP(ctx)
	// The test hook's signal handler is installed before READY=1, so a
	// test that signals as soon as the daemon is ready is never ignored.
	stopHooks := hooks.start(ns, srv.SyncNotifies, log)
	defer stopHooks()
	ready()

	// The shutdown order: the socket first (no change arrives while the
	// mounts drain), then every view (drained and unmounted, concurrently,
	// bounded), then the main mount.
	stop := func() error {
		if ctl != nil {
			stopControl(ctl, log)
		}
		vm.close()
		return srv.Shutdown()
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("shutdown_timeout", cfg.ShutdownTimeout))
	case <-srv.Served():
		log.Warn("the mount is gone; shutting down")
		_ = stop()
		return errUnmountedOutside
	}
	start := time.Now()
	if err := stop(); err != nil {
		return err
	}
	st := srv.Stats()
	log.Info("server stopped", zap.Duration("took", time.Since(start)),
		zap.Uint64("notifies_sent", st.Notify.Sent), zap.Uint64("notifies_dropped", st.Notify.Dropped))
	return nil
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
