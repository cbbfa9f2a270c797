package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
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
//     caching), its event sink being the fs notify queue;
//   - the built-in loader over it, builtin.New(nsRegistrar{ns}, log)
//     (wire.go), and its base set, registered before the mount;
//   - the lookup path: lookup.New(ns, loader, {Timeout: cfg.LoaderTimeout});
//   - the fs server with cfg's timeouts, Readdirplus, Debug and the mount
//     options AllowOther, DefaultPermissions, Dev;
//
// then mounts on cfg.Mountpoint, calls ready() once the mount is live
// (READY=1 to systemd when NOTIFY_SOCKET is set), serves until ctx is
// cancelled (SIGTERM/SIGINT) or the mount is taken away, and shuts the
// server down: refuse new requests, drain live ones for at most
// cfg.ShutdownTimeout, unmount. It returns nil after a clean stop.
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
	nq := fs.NewNotifyQueue(0)
	negTTL := cfg.NegativeTimeout
	if negTTL == 0 {
		negTTL = -1 // dcache: negative means no negative caching
	}
	ns := dcache.New(dcache.Options{
		MaxNodes:    cfg.MaxNodes,
		MaxFileSize: int64(cfg.MaxFileSize),
		MaxBytes:    int64(cfg.MaxBytes),
		NegativeTTL: negTTL,
		Sink:        nq,
	})
	bl := builtin.New(nsRegistrar{ns}, log)
	if err := bl.RegisterBase(ctx); err != nil {
		return fmt.Errorf("registering the base set: %w", err)
	}
	var loader modload.Loader = bl
	if hooks.loaderDelay > 0 {
		log.Warn("TEST HOOK: every load is delayed", zap.Duration("delay", hooks.loaderDelay))
		loader = delayedLoader{bl, hooks.loaderDelay}
	}
	res := lookup.New(ns, lookup.LoaderFunc(loaderFunc(loader)), lookup.Options{Timeout: cfg.LoaderTimeout})
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
	})
	if err := srv.Mount(cfg.Mountpoint); err != nil {
		return err
	}
	ready()
	stopHooks := hooks.start(ns, srv.SyncNotifies, log)
	defer stopHooks()

	select {
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("shutdown_timeout", cfg.ShutdownTimeout))
	case <-srv.Served():
		log.Warn("the mount is gone; shutting down")
		_ = srv.Shutdown()
		return errUnmountedOutside
	}
	start := time.Now()
	if err := srv.Shutdown(); err != nil {
		return err
	}
	st := srv.Stats()
	log.Info("server stopped", zap.Duration("took", time.Since(start)),
		zap.Uint64("notifies_sent", st.Notify.Sent), zap.Uint64("notifies_dropped", st.Notify.Dropped))
	return nil
}
