package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/devfsd/devfsd/daemon"
)

// mountFlags binds the flags of `devfsd mount` to c. Flags left off the
// command line leave c as it was, which is what makes them override the
// file and nothing else. configPath receives --config.
func mountFlags(c *daemon.Config, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("devfsd mount", flag.ContinueOnError)
	fs.StringVar(configPath, "config", "", "YAML config `file` (flags override it)")
	fs.DurationVar(&c.EntryTimeout, "entry-timeout", c.EntryTimeout, "kernel cache time of a name")
	fs.DurationVar(&c.AttrTimeout, "attr-timeout", c.AttrTimeout, "kernel cache time of a node's attributes")
	fs.DurationVar(&c.NegativeTimeout, "negative-timeout", c.NegativeTimeout, "cache time of a miss (daemon and kernel)")
	fs.DurationVar(&c.LoaderTimeout, "loader-timeout", c.LoaderTimeout, "bound on a lookup's wait for the loader")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "bound on draining requests at SIGTERM/SIGINT")
	fs.StringVar(&c.Loader, "loader", c.Loader, "fallback module loader while no helper is attached: builtin, exec, none")
	fs.StringVar(&c.ExecProgram, "exec-program", c.ExecProgram, "loader exec: the `program` run per miss (absolute path)")
	fs.DurationVar(&c.ExecTimeout, "exec-timeout", c.ExecTimeout, "loader exec: bound on each run; its process group is killed past it")
	fs.StringVar(&c.Socket, "socket", c.Socket, "control socket `path` (default /run/devfsd/ESCAPED-MOUNTPOINT.sock; none: no socket)")
	fs.Var(&c.SocketMode, "socket-mode", "control socket file `mode`, octal (default 0600)")
	fs.Int64Var(&c.ControlUID, "control-uid", c.ControlUID, "`uid` allowed to change the namespace through the socket besides root (-1: none)")
	fs.Int64Var(&c.ControlGID, "control-gid", c.ControlGID, "`gid` allowed to change the namespace through the socket besides root (-1: none)")
	fs.BoolVar(&c.AllowOther, "allow-other", c.AllowOther, "mount with allow_other")
	fs.BoolVar(&c.DefaultPermissions, "default-permissions", c.DefaultPermissions, "mount with default_permissions")
	fs.BoolVar(&c.Dev, "dev", c.Dev, "mount with dev (device nodes open their drivers)")
	fs.StringVar(&c.Readdirplus, "readdirplus", c.Readdirplus, "READDIRPLUS policy: auto, always, never")
	fs.Int64Var(&c.MaxNodes, "max-nodes", c.MaxNodes, "most nodes in the namespace")
	fs.Var(&c.MaxFileSize, "max-file-size", "largest regular file: `size` in bytes, or with KiB, MiB, GiB")
	fs.Var(&c.MaxBytes, "max-bytes", "most content of all regular files together: `size`")
	fs.BoolVar(&c.Debug, "debug", c.Debug, "log every FUSE request")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: auto (console on a terminal, else JSON), console, json")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "keep what users make and change across restarts in this `directory`")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "serve Prometheus metrics at /metrics on this `host:port` (default: only on the socket)")
	fs.StringVar(&c.AuditLog, "audit-log", c.AuditLog, "also write the audit log of miss decisions to this `file`, as JSON lines")
	fs.Var(&c.Views, "view", "also mount a view of the namespace described by this YAML `file` (repeatable; docs/api.md, \"views\")")
	return fs
}

// parseInterspersed parses args with fs, allowing flags after positional
// arguments (`devfsd mount /dev2 --debug`); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// loadConfig builds the mount configuration from args (after "mount"):
// defaults, then --config's file, then the flags. The result is validated.
// Errors are usage errors: the user said something wrong.
func loadConfig(args []string, stderr io.Writer) (daemon.Config, error) {
	// First pass: syntax, -h, and where the file is.
	var path string
	probe := daemon.Defaults()
	fs := mountFlags(&probe, &path)
	fs.SetOutput(stderr)
	fs.Usage = func() { mountUsage(fs) }
	if _, err := parseInterspersed(fs, args); err != nil {
		return daemon.Config{}, err
	}
	cfg := daemon.Defaults()
	if path != "" {
		if err := daemon.ParseFile(&cfg, path); err != nil {
			return daemon.Config{}, usageError{err}
		}
	}
	// Second pass: the flags given override the file.
	fs = mountFlags(&cfg, &path)
	fs.SetOutput(stderr)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return daemon.Config{}, err
	}
	switch len(pos) {
	case 0:
	case 1:
		cfg.Mountpoint = pos[0]
	default:
		return daemon.Config{}, usageError{fmt.Errorf("mount takes one DIR, got %d arguments: %q", len(pos), pos)}
	}
	if err := cfg.Validate(); err != nil {
		// The file's errors give lines: say which file they are in.
		if path != "" {
			return daemon.Config{}, usageError{fmt.Errorf("invalid configuration (%s, then the flags):\n%w", path, err)}
		}
		return daemon.Config{}, usageError{fmt.Errorf("invalid configuration:\n%w", err)}
	}
	return cfg, nil
}
