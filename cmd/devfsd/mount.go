package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
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

// runMount is `devfsd mount`: configuration, logger, signals, then serve.
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

	// The first SIGTERM or SIGINT cancels ctx: serve unmounts cleanly,
	// bounded by cfg.ShutdownTimeout. Once it has, the signals take their
	// default action again, so a second one kills a shutdown that hangs.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP reloads the configuration (reload.go): the same file and
	// flags, read again.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx = withConfigSource(ctx, &configSource{args: args, hup: hup})
	lc := &lifecycle{log: log}
	context.AfterFunc(ctx, func() {
		stop()
		lc.Stopping()
	})

	log.Info("starting",
		zap.String("version", versionString()),
		zap.String("mountpoint", cfg.Mountpoint),
		zap.Object("config", cfg))
	err = serve(ctx, cfg, log, lc.Ready)
	lc.Stopping()
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
