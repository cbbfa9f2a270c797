package helperd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
	"github.com/devfsd/devfsd/modload/devfsdconf"
	mexec "github.com/devfsd/devfsd/modload/exec"
)

// callTimeout bounds one call to the daemon.
const callTimeout = 10 * time.Second

// helperHost is what devfsd.conf rules act through in `devfsd helper`:
// paths inside the mount go to the daemon's control socket (never
// through the mount: the kernel would make a change to a name whose
// lookup waits on us wait for that lookup), other paths to the file
// system; programs run through modload/exec's Runner; MODLOAD loads from
// the built-in catalogue or runs a modprobe.
type helperHost struct {
	devfsdconf.Router
	o       Options
	ctx     context.Context // the helper's life, for calls without one
	c       *client.Client
	run     *mexec.Runner
	log     *zap.Logger
	aliases *devfsdconf.Aliases
	// batch, while the rules for a LOOKUP run, keeps the registrations
	// for its done (batch.go); nil otherwise.
	batch *batch
	// load is the MODLOAD from the catalogue under way, nil between;
	// spare is the loader for the next one, made ahead by Prepare.
	load  *builtinLoad
	spare *builtin.Loader
	// execOnRegister reports whether a REGISTER rule that runs a program
	// matches a name (batch.go); set by helperd for its configuration.
	execOnRegister func(name string) bool
}

// batched returns the batched registration of p, if any; if p is above
// one (a directory the daemon would make), the batch is flushed first.
func (h *helperHost) batched(p string) (*wire.RegisterRequest, bool) {
	if h.batch == nil {
		return nil, false
	}
	if req, ok := h.batch.get(p); ok {
		return req, true
	}
	h.flushFor(p)
	return nil, false
}

var _ devfsdconf.Host = (*helperHost)(nil)

func newHelperHost(ctx context.Context, o Options, c *client.Client, log *zap.Logger) (*helperHost, error) {
	if o.Modprobe != "" && !path.IsAbs(o.Modprobe) {
		return nil, fmt.Errorf("--modprobe %q: not an absolute path", o.Modprobe)
	}
	h := &helperHost{o: o, ctx: ctx, c: c, run: mexec.NewRunner(log.Named("exec")), log: log}
	h.Router = devfsdconf.Router{Mountpoint: o.Mount, Mount: ctlFS{h}, Other: devfsdconf.OSFS{}}
	if o.Aliases != "" {
		if _, err := os.Stat(o.Aliases); err != nil {
			return nil, fmt.Errorf("--aliases: %w", err)
		}
	}
	h.reloadAliases()
	return h, nil
}

// reloadAliases reads --aliases again (at start and on SIGHUP).
func (h *helperHost) reloadAliases() {
	if h.o.Aliases == "" {
		return
	}
	b, err := os.ReadFile(h.o.Aliases)
	if err != nil {
		h.log.Warn("aliases unreadable; keeping the old ones", zap.String("file", h.o.Aliases), zap.Error(err))
		return
	}
	h.aliases = devfsdconf.ParseAliases(b)
}

// env is what every program of ours gets besides the rule's variables.
func (h *helperHost) env() []string {
	return []string{"DEVFSD_SOCKET=" + h.o.Socket}
}

// Execute implements devfsdconf.Host.
func (h *helperHost) Execute(ctx context.Context, argv, env []string) error {
	h.flush(ctx) // the program sees the namespace as the rules made it
	res, err := h.run.Run(ctx, mexec.Spec{
		Argv:    argv,
		Env:     append(h.env(), env...),
		Timeout: h.o.ExecTimeout,
		Stdout:  func(l string) { h.log.Info("EXECUTE output", zap.String("program", argv[0]), zap.String("line", l)) },
		Stderr:  func(l string) { h.log.Info("EXECUTE stderr", zap.String("program", argv[0]), zap.String("line", l)) },
	})
	h.log.Debug("EXECUTE", zap.Strings("argv", argv), zap.Int("pid", res.Pid), zap.Int("exit", res.ExitCode),
		zap.Bool("killed", res.Killed), zap.Duration("took", res.Elapsed))
	return err
}

// Modload implements devfsdconf.Host.
func (h *helperHost) Modload(ctx context.Context, devname string) ([]devfsdconf.Event, error) {
	if h.o.Modprobe != "" {
		h.flush(ctx)
		return h.modprobe(ctx, devname)
	}
	evs, err := h.modloadBuiltin(ctx, devname)
	if b := h.batch; b != nil && h.execOnRegister != nil {
		for _, ev := range evs {
			if h.execOnRegister(ev.Name) {
				// Run the REGISTER rules only for what was made.
				return h.flushCreated(ctx, evs), err
			}
		}
	}
	return evs, err
}

// modloadBuiltin is Modload from the built-in catalogue.
func (h *helperHost) modloadBuiltin(ctx context.Context, devname string) ([]devfsdconf.Event, error) {
	bl := h.takeLoader()
	prev := h.load
	h.load = &builtinLoad{ctx: ctx}
	defer func() { h.load = prev }()
	// The modules.devfs plan: the first module that loads (alias,
	// probe), or every one (probeall); one that fails otherwise than
	// "no such module" ends the load with its error.
	plan := h.aliases.Plan("/dev/" + devname)
	loaded := false
	for _, name := range plan.Modules {
		err := bl.LoadModule(ctx, name)
		if errors.Is(err, syscall.ENOENT) {
			continue
		}
		h.log.Debug("MODLOAD by alias", zap.String("name", devname), zap.String("module", name),
			zap.Bool("probeall", plan.All), zap.Error(err))
		if err != nil || !plan.All {
			return h.load.evs, err
		}
		loaded = true
	}
	if loaded {
		return h.load.evs, nil
	}
	dir, base := path.Split(devname)
	err := bl.Load(ctx, strings.TrimSuffix(dir, "/"), base, dcache.Caller{})
	if errors.Is(err, syscall.ENOENT) {
		err = fmt.Errorf("%w: %w", err, fs.ErrNotExist)
	}
	return h.load.evs, err
}

// builtinLoad is one MODLOAD from the catalogue: its context, and a
// REGISTER event for each node it registered.
type builtinLoad struct {
	ctx context.Context
	evs []devfsdconf.Event
}

// takeLoader returns a built-in loader that has loaded nothing, for one
// MODLOAD: a loader's memory of what it loaded would hide nodes removed
// by hand since (registering what exists is harmless: EEXIST). It is the
// spare one Prepare made, if any.
func (h *helperHost) takeLoader() *builtin.Loader {
	bl := h.spare
	h.spare = nil
	if bl == nil {
		bl = builtin.New(modload.RegistrarFunc(h.registerLoaded), h.log)
	}
	return bl
}

// Prepare makes the next MODLOAD's loader now, between events, rather
// than on the path of the LOOKUP that needs it.
func (h *helperHost) Prepare() {
	if h.spare == nil && h.o.Modprobe == "" {
		h.spare = builtin.New(modload.RegistrarFunc(h.registerLoaded), h.log)
	}
}

// registerLoaded is the Registrar of the built-in loaders: it registers
// n for the MODLOAD under way.
func (h *helperHost) registerLoaded(n modload.Node) error {
	ev, err := h.register(h.load.ctx, n)
	if err != nil {
		return err
	}
	h.load.evs = append(h.load.evs, ev)
	return nil
}

// register registers n through the socket, or adds it to the batch, and
// returns its REGISTER event; an existing name is EEXIST.
func (h *helperHost) register(ctx context.Context, n modload.Node) (devfsdconf.Event, error) {
	req := wire.RegisterRequest{Path: n.Path, Type: n.Type.String(), Mode: config.Mode(n.Perm).String()}
	uid, gid := int64(n.UID), int64(n.GID)
	req.Uid, req.Gid = &uid, &gid
	switch n.Type {
	case dcache.TypeChar, dcache.TypeBlock:
		ma, mi := int64(n.Major), int64(n.Minor)
		req.Major, req.Minor = &ma, &mi
	case dcache.TypeSymlink:
		t := n.Target
		req.Target = &t
	}
	if b := h.batch; b != nil {
		if _, ok := b.get(req.Path); ok {
			return devfsdconf.Event{}, fmt.Errorf("%s: %w", n.Path, syscall.EEXIST)
		}
		if !b.above(req.Path) {
			b.add(req)
			// The node as the daemon will register it (nodeOf).
			return devfsdconf.Event{Kind: devfsdconf.Register, Name: n.Path, Mode: n.Type.ModeBits() | n.Perm&07777,
				UID: n.UID, GID: n.GID, Major: n.Major, Minor: n.Minor}, nil
		}
		h.flush(ctx) // a directory after what goes in it: as in Make
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	wn, err := h.c.Register(cctx, req)
	if client.Code(err) == wire.CodeExists {
		return devfsdconf.Event{}, fmt.Errorf("%s: %w", n.Path, syscall.EEXIST)
	}
	if err != nil {
		return devfsdconf.Event{}, err
	}
	return nodeEvent(devfsdconf.Register, wn), nil
}

// modprobe runs --modprobe -k [-C CONF] /dev/NAME, and reports as
// registered what is in the namespace after it that was not before.
func (h *helperHost) modprobe(ctx context.Context, devname string) ([]devfsdconf.Event, error) {
	before, err := h.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	argv := []string{h.o.Modprobe, "-k"}
	if _, err := os.Stat(h.o.ModprobeConf); err == nil {
		argv = append(argv, "-C", h.o.ModprobeConf)
	}
	argv = append(argv, "/dev/"+devname)
	res, runErr := h.run.Run(ctx, mexec.Spec{
		Argv: argv, Timeout: h.o.ExecTimeout,
		Env:    append(h.env(), "DEVNAME="+devname, "DEVPATH="+path.Join(h.o.Mount, devname), "MNTPNT="+h.o.Mount, "ACTION=lookup"),
		Stdout: func(l string) { h.log.Debug("modprobe output", zap.String("line", l)) },
		Stderr: func(l string) { h.log.Info("modprobe stderr", zap.String("line", l)) },
	})
	after, err := h.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var evs []devfsdconf.Event
	for p, n := range after {
		if _, ok := before[p]; !ok {
			evs = append(evs, nodeEvent(devfsdconf.Register, n))
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Name < evs[j].Name })
	if runErr != nil && !res.Killed {
		return evs, fmt.Errorf("%s: %w (%w)", argv[0], runErr, fs.ErrNotExist)
	}
	return evs, runErr
}

func (h *helperHost) snapshot(ctx context.Context) (map[string]wire.Node, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	l, err := h.c.List(cctx, "", true)
	if err != nil {
		return nil, err
	}
	m := make(map[string]wire.Node, len(l.Nodes))
	for _, n := range l.Nodes {
		m[n.Path] = n
	}
	return m, nil
}

// ctlFS is the mount seen through the control socket: paths are relative
// to the mount ("" is its root).
type ctlFS struct{ h *helperHost }

func (f ctlFS) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.h.ctx, callTimeout)
}

// fsErr maps the daemon's error codes onto io/fs errors.
func fsErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	switch client.Code(err) {
	case wire.CodeNotFound:
		return &fs.PathError{Op: op, Path: p, Err: fs.ErrNotExist}
	case wire.CodeExists:
		return &fs.PathError{Op: op, Path: p, Err: fs.ErrExist}
	}
	return &fs.PathError{Op: op, Path: p, Err: err}
}

func (f ctlFS) Lstat(p string) (devfsdconf.Stat, error) {
	if req, ok := f.h.batched(p); ok {
		n := nodeOf(*req)
		return devfsdconf.Stat{Mode: stMode(n.Type, n.Mode), UID: n.Uid, GID: n.Gid, Major: n.Major, Minor: n.Minor, Target: n.Target}, nil
	}
	ctx, cancel := f.call()
	defer cancel()
	n, err := f.h.c.Stat(ctx, p)
	if err != nil {
		return devfsdconf.Stat{}, fsErr("stat", p, err)
	}
	return devfsdconf.Stat{Mode: stMode(n.Type, n.Mode), UID: n.Uid, GID: n.Gid, Major: n.Major, Minor: n.Minor, Target: n.Target}, nil
}

func (f ctlFS) Chmod(p string, perm uint32) error {
	if req, ok := f.h.batched(p); ok && req.Type != "symlink" {
		req.Mode = config.Mode(perm & 07777).String()
		return nil
	} else if ok {
		f.h.flush(f.h.ctx) // what chmod does to a symlink is the daemon's to say
	}
	ctx, cancel := f.call()
	defer cancel()
	_, err := f.h.c.Chmod(ctx, p, config.Mode(perm&07777).String())
	return fsErr("chmod", p, err)
}

func (f ctlFS) Chown(p string, uid, gid int64) error {
	var u, g *int64
	if uid >= 0 {
		u = &uid
	}
	if gid >= 0 {
		g = &gid
	}
	if u == nil && g == nil {
		return nil
	}
	if req, ok := f.h.batched(p); ok {
		if u != nil {
			req.Uid = u
		}
		if g != nil {
			req.Gid = g
		}
		return nil
	}
	ctx, cancel := f.call()
	defer cancel()
	_, err := f.h.c.Chown(ctx, p, u, g)
	return fsErr("chown", p, err)
}

func (f ctlFS) Make(p string, st devfsdconf.Stat, perm uint32) error {
	req, err := makeRequest(p, st, perm)
	if err != nil {
		return err
	}
	if b := f.h.batch; b != nil {
		if _, ok := b.get(p); ok {
			return &fs.PathError{Op: "make", Path: p, Err: fs.ErrExist}
		}
		if !b.above(p) {
			b.add(req)
			return nil
		}
		// A directory after what goes in it: once the batch is made, the
		// daemon says what a register of it does now.
		f.h.flush(f.h.ctx)
	}
	ctx, cancel := f.call()
	defer cancel()
	_, err = f.h.c.Register(ctx, req)
	return fsErr("make", p, err)
}

func (f ctlFS) Remove(p string) error {
	st, err := f.Lstat(p)
	if err != nil {
		return err
	}
	if st.Mode&devfsdconf.TypeMask == devfsdconf.TypeDir {
		return &fs.PathError{Op: "remove", Path: p, Err: syscall.EISDIR}
	}
	if _, ok := f.h.batched(p); ok {
		f.h.batch.remove(p)
		return nil
	}
	ctx, cancel := f.call()
	defer cancel()
	return fsErr("remove", p, f.h.c.Unregister(ctx, p))
}

// MkdirAll is a no-op: registering makes the parents.
func (f ctlFS) MkdirAll(string) error { return nil }

func (f ctlFS) ReadDir(p string) ([]string, error) {
	f.h.flush(f.h.ctx)
	ctx, cancel := f.call()
	defer cancel()
	l, err := f.h.c.List(ctx, p, false)
	if err != nil {
		return nil, fsErr("readdir", p, err)
	}
	var names []string
	for _, n := range l.Nodes {
		names = append(names, path.Base(n.Path))
	}
	sort.Strings(names)
	return names, nil
}
