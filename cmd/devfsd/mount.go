package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/daemon"
)

func mountUsage(fs *flag.FlagSet) {
	fmt.Fprintf(fs.Output(), "usage: devfsd mount [flags] DIR\n\nflags (override the --config file, which overrides the defaults):\n")
	fs.PrintDefaults()
	fmt.Fprintf(fs.Output(), `
keys of the --config file that have no flag:
  modules
    	extension modules of the builtin loader, loaded on a miss like its
    	catalogue; a list of {name, description, nodes: [{path, type
    	(char, block, dir, symlink), mode, major, minor, uid, gid, target}]}
    	(docs/api.md, "modules"); reloadable
`)
}

// runMount is `devfsd mount`: configuration, logger, signals, then the
// daemon. The first SIGTERM or SIGINT ends the daemon's Run, which
// unmounts cleanly within shutdown_timeout; after it the signals take
// their default action again, so a second one kills a shutdown that
// hangs. SIGHUP reloads the configuration: the same file and flags, read
// again. SIGUSR1 upgrades in place, as `devfsd ctl upgrade` does with the
// running binary.
func runMount(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := loadConfig(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		var u usageError
		if !errors.As(err, &u) {
			err = usageError{err} // a flag syntax error
		}
		return err
	}
	log, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	context.AfterFunc(ctx, stop)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	log.Info("starting",
		zap.String("version", versionString()),
		zap.String("mountpoint", cfg.Mountpoint),
		zap.Object("config", daemon.LoggedConfig(cfg)))
	auditLog, closeAudit, err := openAuditLog(cfg.AuditLog)
	if err != nil {
		return err
	}
	defer closeAudit() // after the daemon's Close: deferred first
	handover, err := handoverFile()
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, log, daemon.Options{
		Reread:   func() (config.Config, error) { return loadConfig(args, io.Discard) },
		AuditLog: auditLog,
		Args:     append([]string{"mount"}, args...),
		Handover: handover,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading the configuration")
				_, _ = d.Reload(ctx) // logged by the daemon
			case <-usr1:
				log.Info("SIGUSR1: upgrading (a new process of the running binary takes the mounts)")
				go d.Upgrade(ctx, "") //nolint:errcheck // logged by the daemon
			}
		}
	}()
	if err := d.Run(ctx); errors.Is(err, daemon.ErrHandedOver) {
		// A successor serves the mounts (ctl upgrade): exit 0, leaving them.
		if err := d.Close(); err != nil {
			return err
		}
		log.Info("handed over; exiting")
		return nil
	} else if err != nil {
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// handoverFile is the handover socket a predecessor gave this process
// ($DEVFSD_HANDOVER_FD, set by an upgrade), or nil. The variable is
// cleared, so that nothing this process starts inherits it.
func handoverFile() (*os.File, error) {
	v, ok := os.LookupEnv(daemon.HandoverEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(daemon.HandoverEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, usageError{fmt.Errorf("%s=%q: not a descriptor number", daemon.HandoverEnv, v)}
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "handover"), nil
}
