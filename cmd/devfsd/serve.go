package main

import (
	"context"
	"errors"

	"go.uber.org/zap"
)

// errNoServer is what `devfsd mount` says until the FUSE server exists.
var errNoServer = errors.New("the FUSE server is not built yet (issue 4)")

// serve is the wiring point for the FUSE server: everything before it
// (flags, config file, validation, logger, signals, sd_notify) is done.
//
// Its contract, for the fs engineer:
//   - build the namespace: dcache.New with MaxNodes, MaxFileSize, MaxBytes
//     from cfg and NegativeTTL = cfg.NegativeTimeout (dcache reads 0 as
//     "default 1s": pass a negative TTL when cfg says 0);
//   - the built-in loader over it: l := builtin.New(nsRegistrar{ns}, log)
//     (wire.go), then l.RegisterBase(ctx) before mounting;
//   - the lookup path: lookup.New(ns, lookup.LoaderFunc(loaderFunc(l)),
//     lookup.Options{Timeout: cfg.LoaderTimeout, ...}) (wire.go);
//   - the fs server with cfg's timeouts, Readdirplus, Debug and the mount
//     options AllowOther, DefaultPermissions, Dev;
//   - mount on cfg.Mountpoint, then call ready() once the mount is live
//     (it sends READY=1 to systemd when NOTIFY_SOCKET is set);
//   - serve until ctx is cancelled (SIGTERM/SIGINT; STOPPING=1 is already
//     sent) or the server fails;
//   - then shut down: stop new requests, drain live ones for at most
//     cfg.ShutdownTimeout, unmount; idempotent, and bounded even when the
//     drain is not complete. Return nil after a clean stop.
//
// It is a variable so tests can stand in a fake server.
var serve = func(ctx context.Context, cfg Config, log *zap.Logger, ready func()) error {
	return errNoServer
}
