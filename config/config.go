// Package config is the daemon's configuration: the schema of the
// `devfsd mount` file and its validation, the default socket paths, view
// files, and the value types (Mode, Size, Duration, ID) that every file
// and request shares, each with one parser. It imports nothing of devfsd
// but dcache's node types, so every package may use it.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"gopkg.in/yaml.v3"
)

// Config is everything `devfsd mount` is told. It is filled in three layers,
// each overriding the one before: Defaults(), then the YAML file given by
// --config (strict: an unknown key or a bad value is an error naming the key
// and its line), then the flags given on the command line. Validate checks
// the result as a whole.
//
// The yaml tag of each field is its key in the file; the flag of the same
// name with '_' spelled '-' sets it on the command line.
type Config struct {
	// Mountpoint is the directory to mount on: the DIR argument, else the
	// file's mountpoint. Made absolute by Validate.
	Mountpoint string `yaml:"mountpoint"`

	// EntryTimeout, AttrTimeout and NegativeTimeout are how long the
	// kernel may cache a name, a node's attributes, and a miss. Every
	// change not made through the mount is pushed to the kernel with a
	// notify, so these bound staleness only for what notifies cannot
	// reach; 1s is go-fuse's and libfuse's default.
	EntryTimeout    time.Duration `yaml:"entry_timeout"`
	AttrTimeout     time.Duration `yaml:"attr_timeout"`
	NegativeTimeout time.Duration `yaml:"negative_timeout"`

	// LoaderTimeout bounds a lookup's wait on the loader (DESIGN.md 2.5).
	LoaderTimeout time.Duration `yaml:"loader_timeout"`

	// ShutdownTimeout bounds draining live requests at SIGTERM/SIGINT
	// before the unmount; it is kept under 5s so the whole stop is.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Loader is the fallback module loader: it answers misses while no
	// helper is attached to the control socket (an attached helper always
	// comes first). "builtin" (the embedded catalogue), "exec" (ExecProgram
	// per miss, modload/exec) or "none" (misses are ENOENT until a helper
	// attaches).
	Loader string `yaml:"loader"`
	// ExecProgram is the absolute path of the program the exec loader runs
	// per miss (argv: the name; env: DEVNAME, DEVPATH, ACTION=lookup,
	// MNTPNT); ExecTimeout bounds each run, after which its process group
	// is killed (the lookup's own loader_timeout bounds it too).
	ExecProgram string        `yaml:"exec_program"`
	ExecTimeout time.Duration `yaml:"exec_timeout"`

	// Devices is where the namespace's devices come from (DESIGN.md
	// section 8): "kernel" (this machine's, modload/kernel: every device
	// of sysfs at start, the kernel's uevents after, and a lookup miss
	// for a name modules.devname lists loads its module), "catalogue"
	// (the built-in catalogue: its base set at start, its modules on a
	// miss) or "none" (only what users, the control API and the helper
	// register). Empty: kernel when /sys/dev/char lists devices and the
	// daemon runs in the initial user namespace, unless modules (which
	// extend the catalogue) are set; else catalogue. The choice is
	// logged at start. With kernel the catalogue never registers a
	// device: loader builtin means the kernel's module autoload, loader
	// exec runs its program for the names the kernel has nothing for.
	Devices string `yaml:"devices"`
	// ModulesDevname is the modules.devname file of devices kernel (empty:
	// /lib/modules/$(uname -r)/modules.devname); Modprobe the program it
	// runs as "Modprobe -q -- MODULE" (empty: the kernel's own,
	// /proc/sys/kernel/modprobe, else /sbin/modprobe). Absolute paths.
	ModulesDevname string `yaml:"modules_devname"`
	Modprobe       string `yaml:"modprobe"`

	// Socket is the control socket's path (HTTP/1.1 + JSON, docs/api.md).
	// Empty: /run/devfsd/ followed by the mountpoint escaped as systemd
	// escapes paths and ".sock" (the mount on /dev: /run/devfsd/dev.sock),
	// so that several daemons on one host never share a socket. "none":
	// no socket (and no helper).
	Socket string `yaml:"socket"`
	// SocketMode is the socket file's mode, octal; 0600 lets only root
	// connect. Anyone who can connect may read the tree and its events.
	SocketMode Mode `yaml:"socket_mode"`
	// ControlUID and ControlGID, if not -1, may change the namespace
	// through the socket (and attach as the helper) besides root. With
	// ControlGID set the socket's group is that gid.
	ControlUID int64 `yaml:"control_uid"`
	ControlGID int64 `yaml:"control_gid"`

	// MountOver mounts on Mountpoint even if something live is mounted
	// there (a dead FUSE mount is cleared anyway).
	MountOver bool `yaml:"mount_over"`

	// AllowOther, DefaultPermissions and Dev are the mount options of the
	// same names (DESIGN.md 2.3: nodes are served with dev).
	AllowOther         bool `yaml:"allow_other"`
	DefaultPermissions bool `yaml:"default_permissions"`
	Dev                bool `yaml:"dev"`

	// Readdirplus is the READDIRPLUS policy: "auto" (the kernel's adaptive
	// mode), "always" or "never" (DESIGN.md section 7); "on" and "off" are
	// read as "always" and "never".
	Readdirplus string `yaml:"readdirplus"`

	// MaxNodes caps the nodes in the namespace; a create past it is ENOSPC.
	MaxNodes int64 `yaml:"max_nodes"`

	// MaxFileSize caps a regular file's size; growing past it is EFBIG.
	// Files are sparse (a size costs nothing until written), so the
	// default, 0, is the kernel's own limit (MAX_LFS_FILESIZE), as on
	// tmpfs. MaxBytes caps what all regular files store together, holes
	// excluded; past it a write is ENOSPC. In the file and on the command
	// line: bytes, or a number with KiB, MiB or GiB.
	MaxFileSize Size `yaml:"max_file_size"`
	MaxBytes    Size `yaml:"max_bytes"`

	// Pts and Shm are the special mounts of every mount, the main one and
	// each view: a devpts instance of its own on pts (its ptmx opens
	// it; pty numbers are the mount's own) and a tmpfs of ShmSize on shm
	// (fs.MountSpecials). "on": mounted if the daemon can, else it logs
	// why and runs without; "off": not mounted; "required": a mount that
	// cannot have it fails (at start, the start). ShmSize defaults to
	// 64MiB, the /dev/shm of a Docker, Podman or Kubernetes container.
	Pts     string `yaml:"pts"`
	Shm     string `yaml:"shm"`
	ShmSize Size   `yaml:"shm_size"`

	// Debug logs every FUSE request and reply (go-fuse's Debug).
	Debug bool `yaml:"debug"`

	// LogLevel is zap's level: debug, info, warn, error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is "auto" (console on a terminal, JSON otherwise),
	// "console" or "json".
	LogFormat string `yaml:"log_format"`

	// StateDir, if set, keeps what users make and change in the namespace
	// across restarts (package state: a journal and snapshots there).
	StateDir string `yaml:"state_dir"`
	// MetricsAddr, if set, serves Prometheus metrics at /metrics on this
	// TCP host:port (they are on the control socket's /metrics anyway).
	MetricsAddr string `yaml:"metrics_addr"`
	// AuditLog, if set, also writes the audit log of miss decisions to
	// this file as JSON lines (it always goes to the log at info level).
	AuditLog string `yaml:"audit_log"`

	// Modules are extension modules of the builtin loader, loaded on a
	// miss like the modules of its catalogue (modules.go has the
	// format). In the file only.
	Modules []Module `yaml:"modules"`
	// moduleLines are the file lines of Modules, for Validate's errors
	// (nil when Modules came from no file). Not a setting.
	moduleLines *moduleLines

	// ViewsDir is where views may be mounted: a view's mountpoint must
	// be an empty directory beneath it, with nothing live mounted there.
	ViewsDir string `yaml:"views_dir"`

	// Views are the --view files, each one more mount of the namespace
	// at start (view.go). Command line only: not a file key, and not
	// compared by a reload (views change through the control API).
	Views ViewFiles
}

// maxSocketPath is the longest path a Unix socket address holds.
const maxSocketPath = 107

// DefaultViewsDir is views_dir's default.
const DefaultViewsDir = "/run/devfsd/views"

// SocketDir is where default sockets live.
const SocketDir = "/run/devfsd"

// SocketPath returns the control socket's path for mountpoint: Socket,
// or the default derived from mountpoint (DaemonSocket); "" for none.
func (c *Config) SocketPath(mountpoint string) string {
	switch c.Socket {
	case "none":
		return ""
	case "":
		return DaemonSocket(mountpoint)
	}
	return c.Socket
}

// UserSocketDir is the directory of a non-root user's default sockets:
// $XDG_RUNTIME_DIR/devfsd, or "" when XDG_RUNTIME_DIR is not set.
func UserSocketDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "devfsd")
	}
	return ""
}

// DaemonSocket is where a daemon on mountpoint makes its socket when none
// is configured: DefaultSocket as root; as any other user, who cannot
// write SocketDir, the same name in UserSocketDir when there is one.
func DaemonSocket(mountpoint string) string {
	if os.Geteuid() != 0 {
		if d := UserSocketDir(); d != "" {
			return socketIn(d, mountpoint)
		}
	}
	return DefaultSocket(mountpoint)
}

// ClientSocket is the socket a client (devfsd ctl, devfsd helper) uses
// for the daemon on mountpoint when none is given: a non-root user's own
// (UserSocketDir) if it exists, else DefaultSocket.
func ClientSocket(mountpoint string) string {
	if os.Geteuid() != 0 {
		if d := UserSocketDir(); d != "" {
			if p := socketIn(d, mountpoint); fileExists(p) {
				return p
			}
		}
	}
	return DefaultSocket(mountpoint)
}

// fuseMounted reports whether the mount table shows a FUSE mount on dir
// (without touching it).
func fuseMounted(dir string) bool {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.Mountpoint != dir || !strings.HasPrefix(m.FSType, "fuse"), false
	})
	return err == nil && len(ms) > 0
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// DefaultSocket is the default control socket of a mount on mountpoint:
// SocketDir/ESCAPED.sock, ESCAPED being mountpoint escaped as
// systemd-escape --path does ("/dev" -> "dev", "/tmp/a b" -> "tmp-a\x20b"),
// or a hash of it when that would not fit in a socket address.
func DefaultSocket(mountpoint string) string { return socketIn(SocketDir, mountpoint) }

// socketIn is the default socket of mountpoint in dir.
func socketIn(dir, mountpoint string) string {
	p := strings.Trim(filepath.Clean(mountpoint), "/")
	var b strings.Builder
	if p == "" {
		b.WriteString("-")
	}
	for i := 0; i < len(p); i++ {
		ch := p[i]
		switch {
		case ch == '/':
			b.WriteByte('-')
		case ch == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, ch)
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '_', ch == '.', ch == ':':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, `\x%02x`, ch)
		}
	}
	s := dir + "/" + b.String() + ".sock"
	if len(s) > maxSocketPath {
		sum := sha256.Sum256([]byte(mountpoint))
		s = dir + "/" + hex.EncodeToString(sum[:16]) + ".sock"
	}
	return s
}

// Defaults returns the configuration before any file or flag.
func Defaults() Config {
	return Config{
		EntryTimeout:       time.Second,
		AttrTimeout:        time.Second,
		NegativeTimeout:    time.Second,
		LoaderTimeout:      5 * time.Second,
		ShutdownTimeout:    3 * time.Second,
		Loader:             "builtin",
		ExecTimeout:        3 * time.Second,
		SocketMode:         0600,
		ControlUID:         -1,
		ControlGID:         -1,
		AllowOther:         true,
		DefaultPermissions: true,
		Dev:                true,
		Readdirplus:        "auto",
		MaxNodes:           1 << 20,
		MaxFileSize:        0,
		MaxBytes:           64 << 20,
		Pts:                "on",
		Shm:                "on",
		ShmSize:            64 << 20,
		LogLevel:           "info",
		LogFormat:          "auto",
		ViewsDir:           DefaultViewsDir,
	}
}

// Validate checks c and makes Mountpoint absolute. Every error names the
// setting by its file key. What only the built-in loader knows (module
// names and paths against its catalogue and each other) is checked by
// daemon.Check, which calls Validate first.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Mountpoint == "" {
		bad("mountpoint", "missing: give DIR or set mountpoint in the config file")
	} else if abs, err := filepath.Abs(c.Mountpoint); err != nil {
		bad("mountpoint", "%v", err)
	} else {
		c.Mountpoint = abs
		if fuseMounted(abs) {
			// A FUSE mount is there: its root is not stat'ed, which
			// would wait for its server if that is this daemon's
			// predecessor, whose mount a descriptor store kept. The
			// daemon judges it at start: a kept one is served again, a
			// dead one cleared, another refused.
		} else if fi, err := os.Stat(abs); err != nil {
			// A dead FUSE mount (its server gone) answers ENOTCONN;
			// the daemon clears it at start.
			if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
				bad("mountpoint", "%v", err)
			}
		} else if !fi.IsDir() {
			bad("mountpoint", "%s is not a directory", abs)
		}
	}
	for _, d := range []struct {
		key      string
		v        time.Duration
		min, max time.Duration
	}{
		{"entry_timeout", c.EntryTimeout, 0, time.Hour},
		{"attr_timeout", c.AttrTimeout, 0, time.Hour},
		{"negative_timeout", c.NegativeTimeout, 0, time.Hour},
		{"loader_timeout", c.LoaderTimeout, time.Millisecond, 10 * time.Minute},
		{"shutdown_timeout", c.ShutdownTimeout, time.Millisecond, time.Minute},
		{"exec_timeout", c.ExecTimeout, time.Millisecond, 10 * time.Minute},
	} {
		if d.v < d.min || d.v > d.max {
			bad(d.key, "%v is out of range [%v, %v]", d.v, d.min, d.max)
		}
	}
	if c.Loader != "builtin" && c.Loader != "none" && c.Loader != "exec" {
		bad("loader", "%q is not a loader (builtin, exec or none; a helper attaches through the socket)", c.Loader)
	}
	switch {
	case c.Loader == "exec" && c.ExecProgram == "":
		bad("exec_program", "missing: loader exec runs this program per miss")
	case c.Loader == "exec" && !filepath.IsAbs(c.ExecProgram):
		bad("exec_program", "%q is not an absolute path", c.ExecProgram)
	case c.Loader != "exec" && c.ExecProgram != "":
		bad("exec_program", "set, but loader is %q, not exec", c.Loader)
	}
	if !oneOf(c.Devices, "", "kernel", "catalogue", "none") {
		bad("devices", "%q is not a device source (kernel, catalogue or none; empty: kernel where the machine's sysfs is visible, else catalogue)", c.Devices)
	}
	for _, p := range []struct{ key, v string }{{"modules_devname", c.ModulesDevname}, {"modprobe", c.Modprobe}} {
		switch {
		case p.v == "":
		case !filepath.IsAbs(p.v):
			bad(p.key, "%q is not an absolute path", p.v)
		case c.Devices == "catalogue" || c.Devices == "none":
			bad(p.key, "set, but devices is %s, not kernel", c.Devices)
		}
	}
	if c.Devices == "kernel" && len(c.Modules) > 0 {
		bad("modules", "set, but devices is kernel; extension modules extend the built-in catalogue")
	}
	if c.Socket != "" && c.Socket != "none" && !filepath.IsAbs(c.Socket) {
		bad("socket", "%q is not an absolute path (or none)", c.Socket)
	} else if len(c.SocketPath(c.Mountpoint)) > maxSocketPath {
		bad("socket", "%q is over %d bytes, the limit of a Unix socket path", c.Socket, maxSocketPath)
	}
	if c.SocketMode == 0 || c.SocketMode > 0777 {
		bad("socket_mode", "%v is not a socket mode (0001 to 0777)", c.SocketMode)
	}
	for _, id := range []struct {
		key string
		v   int64
	}{{"control_uid", c.ControlUID}, {"control_gid", c.ControlGID}} {
		if id.v < -1 || id.v > 1<<32-2 {
			bad(id.key, "%d is not a uid/gid (or -1 for none)", id.v)
		}
	}
	switch c.Readdirplus { // on and off: the test harness's spelling
	case "on":
		c.Readdirplus = "always"
	case "off":
		c.Readdirplus = "never"
	}
	if !oneOf(c.Readdirplus, "auto", "always", "never") {
		bad("readdirplus", "%q is not one of auto, always (on), never (off)", c.Readdirplus)
	}
	if c.MaxNodes < 1 {
		bad("max_nodes", "%d must be at least 1", c.MaxNodes)
	}
	if c.MaxFileSize < 0 {
		bad("max_file_size", "%v is negative (0: the kernel's limit)", c.MaxFileSize)
	}
	if c.MaxBytes < 0 || c.MaxBytes > 1<<40 {
		bad("max_bytes", "%v is out of range [0, 1024GiB]", c.MaxBytes)
	}
	for _, sp := range []struct{ key, v string }{{"pts", c.Pts}, {"shm", c.Shm}} {
		if !oneOf(sp.v, "on", "off", "required") {
			bad(sp.key, "%q is not one of on, off, required", sp.v)
		}
	}
	if c.ShmSize < 4<<10 || c.ShmSize > 1<<40 {
		bad("shm_size", "%v is out of range [4KiB, 1024GiB]", c.ShmSize)
	}
	// zap's level names (cmd builds the logger at this level).
	if !oneOf(strings.ToLower(c.LogLevel), "debug", "info", "warn", "error", "dpanic", "panic", "fatal") {
		bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if !oneOf(c.LogFormat, "auto", "console", "json") {
		bad("log_format", "%q is not one of auto, console, json", c.LogFormat)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		bad("state_dir", "%q is not an absolute path", c.StateDir)
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
			bad("metrics_addr", "%q is not a host:port (such as 127.0.0.1:9477)", c.MetricsAddr)
		}
	}
	if !filepath.IsAbs(c.ViewsDir) || filepath.Clean(c.ViewsDir) != c.ViewsDir || c.ViewsDir == "/" {
		bad("views_dir", "%q is not an absolute, clean path other than /", c.ViewsDir)
	}
	if c.AuditLog != "" && !filepath.IsAbs(c.AuditLog) {
		bad("audit_log", "%q is not an absolute path", c.AuditLog)
	}
	if len(c.Modules) > 0 && c.Loader != "builtin" {
		bad("modules", "set, but loader is %q; extension modules are loaded by the builtin loader", c.Loader)
	}
	return errors.Join(errs...)
}

// ParseFile overlays the YAML file at path onto c: each key it sets
// replaces c's value, the others stay. Strict: an unknown or repeated
// key, or a bad value, is an error naming the key and its line, and a
// duration without a unit ("5") is an error rather than five
// nanoseconds. An empty file changes nothing.
func ParseFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := parseYAML(c, data); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func parseYAML(c *Config, data []byte) error {
	root, err := document(data, "the config")
	if root == nil || err != nil {
		return err
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: the config must be a mapping of settings (key: value)", root.Line)
	}
	fields := configFields(c)
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	fs, err := mapping(root, "", known...)
	if err != nil {
		return err
	}
	for _, f := range fs {
		key := f.key.Value
		if key == "modules" { // a list of mappings; its errors say their lines
			if c.Modules, c.moduleLines, err = decodeModules(f.val); err != nil {
				return err
			}
			continue
		}
		if err := decode(fields[key], f.val); err != nil {
			return fmt.Errorf("line %d: %s: %w", f.val.Line, key, err)
		}
	}
	return nil
}

// configFields maps each yaml key of Config to a pointer to its field in
// c, a time.Duration's as a *Duration.
func configFields(c *Config) map[string]any {
	fields := map[string]any{}
	v := reflect.ValueOf(c).Elem()
	for i := 0; i < v.NumField(); i++ {
		key := v.Type().Field(i).Tag.Get("yaml")
		if key == "" {
			continue
		}
		p := v.Field(i).Addr().Interface()
		if d, ok := p.(*time.Duration); ok {
			p = (*Duration)(d)
		}
		fields[key] = p
	}
	return fields
}

// Error marks an error in what devfsd was told (its configuration, a view
// file, its flags or environment), as opposed to one met while running:
// devfsd exits with status 2 for it.
type Error struct{ Err error }

func (e Error) Error() string { return e.Err.Error() }
func (e Error) Unwrap() error { return e.Err }
