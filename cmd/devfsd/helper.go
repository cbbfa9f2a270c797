package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/helperd"
)

const helperUsage = `usage: devfsd helper [flags]

The reference helper daemon: attaches to a devfsd daemon's control socket
as its module loader and runs the rules of a devfsd.conf(5) file on the
namespace's events (see docs/devfsd.conf.md). At start it restores saved
nodes (RESTORE) and runs the REGISTER rules for every node that exists,
then serves; SIGHUP reloads the configuration (one that cannot be read
keeps the old one), SIGTERM and SIGINT stop it. It runs its rules one
event at a time, on one processor unless GOMAXPROCS is set.

flags:
`

// helperFlags binds the flags of `devfsd helper` to o; verbose and
// logFormat are the logger's.
func helperFlags(o *helperd.Options, verbose, check *bool, logFormat *string) *flag.FlagSet {
	fs := flag.NewFlagSet("devfsd helper", flag.ContinueOnError)
	fs.StringVar(&o.Config, "config", "/etc/devfsd.conf", "devfsd.conf `file`")
	fs.StringVar(&o.Socket, "socket", "", "control socket `path` (default: $DEVFSD_SOCKET, else that of --mount)")
	fs.StringVar(&o.Mount, "mount", "/dev", "the daemon's mount `point`: $mntpnt, and the default socket")
	fs.BoolVar(&o.Foreground, "fg", false, "stay in the foreground (default: go to the background once the start-up scan is done)")
	fs.BoolVar(&o.NoPoll, "np", false, "no polling: restore and run the REGISTER rules for what exists, then exit (does not attach)")
	fs.BoolVar(verbose, "v", false, "verbose: log every action (debug level)")
	fs.DurationVar(&o.ExecTimeout, "exec-timeout", 3*time.Second, "bound on each EXECUTE and modprobe program (its process group is killed)")
	fs.StringVar(&o.Modprobe, "modprobe", "", "MODLOAD runs `program` -k [-C CONF] /dev/NAME instead of loading from the built-in catalogue")
	fs.StringVar(&o.ModprobeConf, "modprobe-conf", "/etc/modules.devfs", "the -C `file` of --modprobe (omitted when missing)")
	fs.StringVar(&o.Aliases, "aliases", "", "for the built-in catalogue: a modules.devfs-style `file` whose 'alias /dev/NAME MODULE' lines name modules")
	fs.StringVar(logFormat, "log-format", "auto", "log format: auto, console, json")
	fs.BoolVar(check, "check", false, "print what each line of --config runs or why it is left out, and exit (1: devfsd itself would have refused it)")
	return fs
}

// runHelper is `devfsd helper`.
func runHelper(ctx context.Context, args []string, stderr io.Writer) error {
	var o helperd.Options
	var verbose, check bool
	var logFormat string
	fs := helperFlags(&o, &verbose, &check, &logFormat)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), helperUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("helper: unexpected arguments %q", fs.Args())}
	}
	if check {
		ok, err := helperd.Lint(os.Stdout, o)
		if err != nil {
			return usageError{fmt.Errorf("helper: %w", err)}
		}
		if !ok {
			return errors.New("helper: --check: devfsd 1.3.25 would have refused this configuration (lines marked \"devfsd 1.3.25 exits here too\")")
		}
		return nil
	}
	if err := o.Check(); err != nil {
		return err
	}
	if o.GoesToBackground() {
		return helperd.Background(ctx, args, stderr)
	}
	level := "info"
	if verbose {
		level = "debug"
	}
	log, err := newLogger(stderr, level, logFormat)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if os.Getenv("GOMAXPROCS") == "" {
		// The rules run one event at a time: a second processor only
		// wakes idle threads to look for work on each hand-off (measured:
		// 10.7 context switches and 259 µs of CPU per miss answered from
		// the catalogue with two, 8.9 and 223 µs with one).
		runtime.GOMAXPROCS(1)
	}
	return helperd.Run(ctx, o, log.Named("helper"))
}
