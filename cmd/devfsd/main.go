// Command devfsd serves a /dev-like device namespace from memory over FUSE.
//
//	devfsd mount [flags] DIR   mount the namespace on DIR until SIGTERM/SIGINT
//	devfsd helper [flags]      the reference helper daemon (helper.go; devfsd.conf)
//	devfsd ctl COMMAND         the control client (ctl.go; exit statuses there)
//	devfsd --version
//
// main is thin: run parses, builds the logger (the only place a zap logger
// is built; everything else receives one) and hands over to the
// subcommand. Exit status: 0 on success, 2 for a usage or configuration
// error, 1 for anything that failed while running; `devfsd ctl` adds the
// statuses 3 to 8 of ctlUsage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/devfsd/devfsd/config"
)

// version is set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/devfsd
//
// Left empty, the module version from the build info is used.
var version string

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devfsd:", err)
		os.Exit(exitCode(err))
	}
}

// usageError marks an error the user made on the command line or in the
// config file: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var u usageError
	var c config.Error
	if errors.As(err, &u) || errors.As(err, &c) {
		return 2
	}
	var x exitError
	if errors.As(err, &x) {
		return x.code
	}
	return 1
}

// versionString is what --version prints.
func versionString() string {
	v := version
	if v == "" {
		v = "(unknown)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					v += " " + s.Value
				}
			}
		}
	}
	return fmt.Sprintf("devfsd %s (%s, %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

const usageText = `usage: devfsd <command> [flags]
       devfsd --version

commands:
  mount [flags] DIR   serve the device namespace on DIR until SIGTERM/SIGINT
  helper [flags]      the devfsd.conf helper daemon (devfsd helper -h)
  ctl COMMAND         the control client of a running daemon (devfsd ctl -h)
  keeper -- mount ... run the daemon under a descriptor keeper: a crash is a pause (devfsd keeper -h)

Run 'devfsd mount -h' for the mount flags.
`

// run is the whole program but for the exit: args without the program
// name; output to stdout (what was asked for) and stderr (usage, logs).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devfsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, versionString())
		return err
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usageText)
		return usageError{errors.New("no command given")}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "mount":
		return runMount(ctx, rest, stderr)
	case "version":
		_, err := fmt.Fprintln(stdout, versionString())
		return err
	case "helper":
		return runHelper(ctx, rest, stderr)
	case "ctl":
		return runCtl(ctx, rest, stdout, stderr)
	case "keeper":
		return runKeeper(ctx, rest, stderr)
	case "keeper-exec": // the keeper's own step; not for people
		return runKeeperExec(rest)
	case "help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}
