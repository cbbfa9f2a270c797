package exec

import (
	"context"
	"errors"
	"fmt"
	osexec "os/exec"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Options configures a Loader.
type Options struct {
	// Program is the absolute path of the program run per miss.
	Program string
	// Args are put between the program and the name: argv is Program,
	// Args..., NAME.
	Args []string
	// Timeout bounds each run; the lookup's own deadline bounds it too.
	// Default 3s.
	Timeout time.Duration
	// Mountpoint is the mount's absolute path, for DEVPATH and MNTPNT.
	Mountpoint string
	// Socket is the control socket's path, passed as DEVFSD_SOCKET so that
	// the program can run `devfsd ctl`; "" for none.
	Socket string
	// Registrar receives the nodes the program names on its standard
	// output (see Loader).
	Registrar modload.Registrar
	// MaxRunning bounds the programs running at once; a miss past it waits
	// for a slot (within its deadline). Default 16.
	MaxRunning int
	// Logger; nil for none.
	Logger *zap.Logger
}

// Loader is the exec loader: for each miss it runs Program with the looked
// up name, relative to the mount ("loop3", "net/tun"), as its last argument
// and in its environment:
//
//	DEVNAME=net/tun  DEVPATH=MOUNTPOINT/net/tun  ACTION=lookup
//	MNTPNT=MOUNTPOINT  DEVFSD_SOCKET=SOCKET (when there is one)
//
// The program provides the name by printing lines on its standard output,
// each applied as soon as it is read (other lines are logged at debug
// level):
//
//	register char PATH MAJOR MINOR [MODE [UID [GID]]]
//	register block PATH MAJOR MINOR [MODE [UID [GID]]]
//	register dir PATH [MODE [UID [GID]]]
//	register symlink PATH TARGET
//
// PATH is relative to the mount (a leading "/" is dropped), MODE octal
// (default 0600 for devices, 0755 for directories), UID and GID numbers
// (default 0). A name that exists already counts as registered. The
// program may register through the socket instead (`devfsd ctl register`,
// DEVFSD_SOCKET): such a change by the program's process group is the
// loader's, and is answered without waiting for the kernel notify that the
// lookup running the program keeps from completing (package lookup,
// "Notifies that cannot be delivered").
//
// The program's exit within the deadline is "done": exit status 0 is a
// load (the lookup answers from the tree); another status says no module
// provides the name (ENOENT). Past the deadline its process group is
// killed and the load fails; the lookup still answers from the tree.
// The program's lookups in the mount, and those of everything in its
// process group, bypass the wait on the loader ([Loader.IsLoader]): a
// program that stats a name, even a missing one, sees the tree as it is.
type Loader struct {
	opts Options
	run  *Runner
	sem  chan struct{}
	log  *zap.Logger
}

var _ modload.Loader = (*Loader)(nil)

// New checks opts and returns a Loader.
func New(opts Options) (*Loader, error) {
	if !path.IsAbs(opts.Program) {
		return nil, fmt.Errorf("exec: program %q is not an absolute path", opts.Program)
	}
	if opts.Registrar == nil {
		return nil, errors.New("exec: no Registrar")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.MaxRunning <= 0 {
		opts.MaxRunning = 16
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("exec")
	return &Loader{opts: opts, run: NewRunner(log), sem: make(chan struct{}, opts.MaxRunning), log: log}, nil
}

// IsLoader reports whether pid (a process or thread id) is in the process
// group of a program this loader runs now: package lookup's bypass
// predicate.
func (l *Loader) IsLoader(pid uint32) bool { return l.run.InGroup(pid) }

// Close kills the process group of every program running now and makes
// later loads fail (Runner.Stop): for a daemon that stops or replaces this
// loader. A process that exits without calling it loses its programs all
// the same (the keeper, keeper.go); Close makes it happen before the exit.
func (l *Loader) Close() { l.run.Stop() }

// Load runs the program for dir/name and returns when it exits or is
// killed.
func (l *Loader) Load(ctx context.Context, dir, name string, _ dcache.Caller) error {
	if err := modload.ValidateLookup(dir, name); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.sem }()
	devname := path.Join(dir, name)
	env := []string{
		"DEVNAME=" + devname,
		"DEVPATH=" + path.Join(l.opts.Mountpoint, devname),
		"ACTION=lookup",
		"MNTPNT=" + l.opts.Mountpoint,
	}
	if l.opts.Socket != "" {
		env = append(env, "DEVFSD_SOCKET="+l.opts.Socket)
	}
	argv := append(append([]string{l.opts.Program}, l.opts.Args...), devname)
	registered := 0
	res, err := l.run.Run(ctx, Spec{
		Argv:    argv,
		Env:     env,
		Timeout: l.opts.Timeout,
		Stdout: func(line string) {
			n, ok, perr := ParseRegisterLine(line)
			switch {
			case !ok:
				l.log.Debug("program output", zap.String("name", devname), zap.String("line", line))
			case perr != nil:
				l.log.Warn("program printed a bad register line", zap.String("name", devname),
					zap.String("line", line), zap.Error(perr))
			default:
				if err := modload.IgnoreExist(l.opts.Registrar.Register(n)); err != nil {
					l.log.Warn("register failed", zap.String("name", devname), zap.Stringer("node", n), zap.Error(err))
					return
				}
				registered++
			}
		},
		Stderr: func(line string) {
			l.log.Info("program stderr", zap.String("name", devname), zap.String("line", line))
		},
	})
	fields := []zap.Field{zap.String("name", devname), zap.Int("pid", res.Pid), zap.Int("exit", res.ExitCode),
		zap.Duration("elapsed", res.Elapsed), zap.Int("registered", registered)}
	var ee *osexec.ExitError
	switch {
	case err == nil:
		l.log.Debug("program done", fields...)
		return nil
	case res.Killed:
		l.log.Warn("program killed", append(fields, zap.Error(err))...)
		return err
	case errors.As(err, &ee):
		l.log.Debug("program failed", fields...)
		return fmt.Errorf("exec: %s %s: exit status %d: %w", l.opts.Program, devname, res.ExitCode, syscall.ENOENT)
	default:
		l.log.Warn("program not run", append(fields, zap.Error(err))...)
		return err
	}
}

// ParseRegisterLine parses one "register ..." line of the exec loader's
// protocol. ok is false for a line that is not a register line at all
// (left to the log); err says what is wrong with one that is.
func ParseRegisterLine(line string) (n modload.Node, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "register" {
		return n, false, nil
	}
	if len(f) < 3 {
		return n, true, errors.New("want: register TYPE PATH ...")
	}
	n.Path = strings.TrimPrefix(f[2], "/")
	rest := f[3:]
	var ids []string
	switch f[1] {
	case "char", "block":
		n.Type, n.Perm = dcache.TypeChar, 0600
		if f[1] == "block" {
			n.Type = dcache.TypeBlock
		}
		if len(rest) < 2 || len(rest) > 5 {
			return n, true, fmt.Errorf("want: register %s PATH MAJOR MINOR [MODE [UID [GID]]]", f[1])
		}
		ma, err1 := strconv.ParseUint(rest[0], 10, 32)
		mi, err2 := strconv.ParseUint(rest[1], 10, 32)
		if err1 != nil || err2 != nil {
			return n, true, fmt.Errorf("bad device number %s:%s", rest[0], rest[1])
		}
		n.Major, n.Minor = uint32(ma), uint32(mi)
		ids = rest[2:]
	case "dir":
		n.Type, n.Perm = dcache.TypeDir, 0755
		if len(rest) > 3 {
			return n, true, errors.New("want: register dir PATH [MODE [UID [GID]]]")
		}
		ids = rest
	case "symlink":
		n.Type, n.Perm = dcache.TypeSymlink, 0777
		if len(rest) != 1 {
			return n, true, errors.New("want: register symlink PATH TARGET")
		}
		n.Target = rest[0]
	default:
		return n, true, fmt.Errorf("unknown type %q (char, block, dir, symlink)", f[1])
	}
	if len(ids) > 0 {
		m, err := config.ParseMode(ids[0])
		if err != nil {
			return n, true, fmt.Errorf("bad mode: %w", err)
		}
		n.Perm = uint32(m)
	}
	for i, dst := range []*uint32{&n.UID, &n.GID} {
		if len(ids) > i+1 {
			v, err := config.ParseID(ids[i+1])
			if err != nil {
				return n, true, fmt.Errorf("bad owner: %w", err)
			}
			*dst = uint32(v)
		}
	}
	if err := n.Validate(); err != nil {
		return n, true, err
	}
	return n, true, nil
}
