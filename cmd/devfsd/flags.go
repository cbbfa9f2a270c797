package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/daemon"
)

// mountFlags binds the flags of `devfsd mount` to c. Flags left off the
// command line leave c as it was, which is what makes them override the
// file and nothing else. configPath receives --config.
func mountFlags(c *config.Config, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("devfsd mount", flag.ContinueOnError)
	fs.StringVar(configPath, "config", "", "YAML config `file` (flags override it)")
	fs.Var((*config.Duration)(&c.EntryTimeout), "entry-timeout", "kernel cache time of a name")
	fs.Var((*config.Duration)(&c.AttrTimeout), "attr-timeout", "kernel cache time of a node's attributes")
	fs.Var((*config.Duration)(&c.NegativeTimeout), "negative-timeout", "cache time of a miss (daemon and kernel)")
	fs.Var((*config.Duration)(&c.LoaderTimeout), "loader-timeout", "bound on a lookup's wait for the loader")
	fs.Var((*config.Duration)(&c.ShutdownTimeout), "shutdown-timeout", "bound on draining requests at SIGTERM/SIGINT")
	fs.StringVar(&c.Loader, "loader", c.Loader, "fallback module loader while no helper is attached: builtin, exec, none")
	fs.StringVar(&c.ExecProgram, "exec-program", c.ExecProgram, "loader exec: the `program` run per miss (absolute path)")
	fs.Var((*config.Duration)(&c.ExecTimeout), "exec-timeout", "loader exec: bound on each run; its process group is killed past it")
	fs.StringVar(&c.Devices, "devices", c.Devices, "device source: kernel (this machine's: sysfs, uevents, modules.devname), catalogue (built-in), none (default: kernel where sysfs is visible, else catalogue)")
	fs.StringVar(&c.ModulesDevname, "modules-devname", c.ModulesDevname, "devices kernel: the modules.devname `file` (default /lib/modules/$(uname -r)/modules.devname)")
	fs.StringVar(&c.Modprobe, "modprobe", c.Modprobe, "devices kernel: the modprobe `program` a miss runs (default the kernel's own)")
	fs.StringVar(&c.Socket, "socket", c.Socket, "control socket `path` (default /run/devfsd/ESCAPED-MOUNTPOINT.sock; none: no socket)")
	fs.Var(&c.SocketMode, "socket-mode", "control socket file `mode`, octal")
	fs.Int64Var(&c.ControlUID, "control-uid", c.ControlUID, "`uid` allowed to change the namespace through the socket besides root (-1: none)")
	fs.Int64Var(&c.ControlGID, "control-gid", c.ControlGID, "`gid` allowed to change the namespace through the socket besides root (-1: none)")
	fs.BoolVar(&c.MountOver, "mount-over", c.MountOver, "mount even if something live is mounted on DIR (a dead FUSE mount is cleared anyway)")
	fs.BoolVar(&c.AllowOther, "allow-other", c.AllowOther, "mount with allow_other")
	fs.BoolVar(&c.DefaultPermissions, "default-permissions", c.DefaultPermissions, "mount with default_permissions")
	fs.BoolVar(&c.Dev, "dev", c.Dev, "mount with dev (device nodes open their drivers)")
	fs.StringVar(&c.Readdirplus, "readdirplus", c.Readdirplus, "READDIRPLUS policy: auto, always, never")
	fs.Int64Var(&c.MaxNodes, "max-nodes", c.MaxNodes, "most nodes in the namespace")
	fs.Var(&c.MaxFileSize, "max-file-size", "largest regular file: `size` in bytes, or with KiB, MiB, GiB (0: the kernel's limit)")
	fs.Var(&c.MaxBytes, "max-bytes", "most content all regular files store together (holes excluded): `size`")
	fs.StringVar(&c.Pts, "pts", c.Pts, "a devpts of its own on each mount's pts: on, off, required")
	fs.StringVar(&c.Shm, "shm", c.Shm, "a tmpfs on each mount's shm: on, off, required")
	fs.Var(&c.ShmSize, "shm-size", "size of each mount's shm tmpfs: `size`")
	fs.BoolVar(&c.Debug, "debug", c.Debug, "log every FUSE request")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: auto (console on a terminal, else JSON), console, json")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "keep what users make and change across restarts in this `directory`")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "serve Prometheus metrics at /metrics on this `host:port` (default: only on the socket)")
	fs.StringVar(&c.AuditLog, "audit-log", c.AuditLog, "also write the audit log of miss decisions to this `file`, as JSON lines")
	fs.StringVar(&c.ViewsDir, "views-dir", c.ViewsDir, "views mount only on empty directories beneath this `directory`")
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
func loadConfig(args []string, stderr io.Writer) (config.Config, error) {
	// First pass: syntax, -h, and where the file is.
	var path string
	probe := config.Defaults()
	fs := mountFlags(&probe, &path)
	fs.SetOutput(stderr)
	fs.Usage = func() { mountUsage(fs) }
	if _, err := parseInterspersed(fs, args); err != nil {
		return config.Config{}, err
	}
	cfg := config.Defaults()
	if path != "" {
		if err := config.ParseFile(&cfg, path); err != nil {
			return config.Config{}, usageError{err}
		}
	}
	// Second pass: the flags given override the file.
	fs = mountFlags(&cfg, &path)
	fs.SetOutput(stderr)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return config.Config{}, err
	}
	switch len(pos) {
	case 0:
	case 1:
		cfg.Mountpoint = pos[0]
	default:
		return config.Config{}, usageError{fmt.Errorf("mount takes one DIR, got %d arguments: %q", len(pos), pos)}
	}
	if err := daemon.Check(&cfg); err != nil {
		// The file's errors give lines: say which file they are in.
		if path != "" {
			return config.Config{}, usageError{fmt.Errorf("invalid configuration (%s, then the flags):\n%w", path, err)}
		}
		return config.Config{}, usageError{fmt.Errorf("invalid configuration:\n%w", err)}
	}
	return cfg, nil
}
