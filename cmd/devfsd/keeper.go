package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/devfsd/devfsd/daemon"
)

const keeperUsage = `usage: devfsd keeper [flags] -- devfsd mount [flags] DIR

Runs the daemon under a descriptor keeper: the daemon stores its
/dev/fuse descriptors with the keeper (systemd's FDSTORE=1 protocol over
NOTIFY_SOCKET), and when it dies (SIGKILL, OOM, a crash) the keeper
starts it again with them (LISTEN_FDS) as soon as its main thread is
dead, so the mount and its views never go dead: callers wait, and the
new daemon answers. It follows the daemon across "devfsd ctl upgrade".
Under systemd (devfsd@.service runs it) it passes what it keeps on to
the unit's descriptor store, so that a crash of the keeper itself is
covered too. SIGTERM and SIGINT go to the daemon, whose clean stop ends
the keeper; SIGHUP goes to the daemon. See docs/operator.md, "Staying up".

flags:
`

// runKeeper is `devfsd keeper`.
func runKeeper(ctx context.Context, args []string, stderr io.Writer) error {
	var o daemon.KeeperOptions
	var logFormat, logLevel string
	fs := flag.NewFlagSet("devfsd keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), keeperUsage); fs.PrintDefaults() }
	fs.StringVar(&o.Dir, "runtime-dir", "", "`directory` for the notify socket, writable only by the keeper's user, made if missing (default: a new temporary one)")
	fs.DurationVar(&o.RestartDelay, "restart-delay", 100*time.Millisecond, "pause before starting the daemon again")
	fs.IntVar(&o.MaxFDs, "fdstore-max", 64, "most descriptors kept (systemd's FileDescriptorStoreMax=)")
	fs.IntVar(&o.StartLimit, "start-limit", 5, "give up after this many starts in a row that fail before the daemon is ready")
	fs.StringVar(&o.PidFile, "pid-file", "", "write the daemon's pid to `file` at each start")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&logFormat, "log-format", "auto", "log format: auto, console, json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	o.Argv = fs.Args()
	if len(o.Argv) == 0 {
		return usageError{errors.New("keeper: no daemon command given (devfsd keeper -- devfsd mount DIR)")}
	}
	if o.MaxFDs < 1 || o.StartLimit < 1 {
		return usageError{errors.New("keeper: --fdstore-max and --start-limit must be at least 1")}
	}
	log, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return usageError{fmt.Errorf("keeper: %w", err)}
	}
	defer func() { _ = log.Sync() }()
	o.Logger = log
	o.Subreaper = true // follows a successor after `devfsd ctl upgrade`
	return daemon.RunKeeper(ctx, o)
}

// runKeeperExec is the keeper's internal step `devfsd keeper-exec -- ARGV`
// (daemon.ExecListening); it does not return when it works.
func runKeeperExec(args []string) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return daemon.ExecListening(args)
}
