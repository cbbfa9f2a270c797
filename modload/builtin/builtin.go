// Package builtin is devfsd's embedded default loader: a catalogue of real
// Linux device numbers (the kernel's Documentation/admin-guide/devices.txt)
// grouped into modules, each registering its devices when it is loaded.
//
// # Modules
//
// A module is a named list of nodes (see [Modules]). The base module
// ([BaseModule]: null, zero, full, random, urandom, kmsg, tty, console,
// ptmx, the fd/stdin/stdout/stderr links, pts/ and shm/) is meant to be
// registered at start with [Loader.RegisterBase]; the others are loaded on
// a miss: a lookup of "loop3" loads module "loop", which registers loop0-7
// and loop-control. A lookup of a directory that a module's nodes live in
// ("net", "snd", "dri") loads every module with nodes under it.
//
// A module is loaded at most once per Loader: concurrent loads of the same
// module register its nodes once (the later callers wait for the first and
// then see its result), and a load of a module already loaded is a no-op —
// so a node removed by hand stays removed. A load that failed part way is
// not marked loaded; the next miss tries again, and the nodes registered
// the first time report EEXIST, which counts as success.
//
// A name that no module provides is an error wrapping syscall.ENOENT, which
// the lookup path caches negatively.
//
// # Numbers, modes and owners
//
// Device numbers are devices.txt's (ALSA's minors, which devices.txt leaves
// out, are the static ones of include/sound/minors.h; render nodes start at
// DRM minor 128). Modes and owners are those a stock systemd-udev host
// shows, with groups by number where the number is static in Debian's
// base-passwd (tty 5, disk 6, dialout 20, audio 29, video 44); nodes whose
// group is allocated at install time (kvm, input, render) are owned by
// root. /dev/mem, /dev/kmem and /dev/port are deliberately absent: a
// sandbox's /dev should not grow them because someone looked.
package builtin

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/modload"
)

// index maps every node path, and every directory a node lives under, to
// the modules that provide it. Built once from catalogue; read-only after.
var index = buildIndex(catalogue)

func buildIndex(mods []Module) map[string][]int {
	idx := make(map[string][]int)
	owner := make(map[string]string) // non-directory path -> module
	for i, m := range mods {
		for _, n := range m.Nodes {
			if err := n.Validate(); err != nil {
				panic(fmt.Sprintf("builtin: module %s: %v", m.Name, err))
			}
			if n.Type != modload.Directory {
				if prev, ok := owner[n.Path]; ok {
					panic(fmt.Sprintf("builtin: %s is provided by both %s and %s", n.Path, prev, m.Name))
				}
				owner[n.Path] = m.Name
			}
			for p := n.Path; p != "."; p = path.Dir(p) {
				if !slices.Contains(idx[p], i) {
					idx[p] = append(idx[p], i)
				}
			}
		}
	}
	for p := range owner {
		if mods := idx[p]; len(mods) > 1 {
			panic(fmt.Sprintf("builtin: %s is both a node and a directory of another module", p))
		}
	}
	return idx
}

// Modules returns a copy of the catalogue, the base module first.
func Modules() []Module {
	out := make([]Module, len(catalogue))
	for i, m := range catalogue {
		m.Nodes = slices.Clone(m.Nodes)
		out[i] = m
	}
	return out
}

// Base returns a copy of the base module.
func Base() Module { return Modules()[0] }

// Providers returns the names of the modules that provide path p (a node
// or a directory nodes live in), sorted; nil if none does.
func Providers(p string) []string {
	var names []string
	for _, i := range index[p] {
		names = append(names, catalogue[i].Name)
	}
	sort.Strings(names)
	return names
}

// Loader is the built-in loader over one Registrar. It implements
// modload.Loader and is safe for concurrent use.
type Loader struct {
	reg modload.Registrar
	log *zap.Logger
	// mods[i] is the load state of catalogue[i].
	mods []moduleState
	// byName maps a module name to its index in catalogue and mods.
	byName map[string]int
}

// moduleState serialises the loads of one module.
type moduleState struct {
	// sem is held (one token) by the load in progress. A channel rather
	// than a mutex so that a caller waiting for another's load can give
	// up when its context ends.
	sem chan struct{}
	// loaded is set, under sem, once every node registered (or existed);
	// read without sem as the fast path.
	loaded atomic.Bool
}

var _ modload.Loader = (*Loader)(nil)

// New returns a loader that registers nodes through r and logs module
// loads at debug level to log (nil: no logging).
func New(r modload.Registrar, log *zap.Logger) *Loader {
	if r == nil {
		panic("builtin: New with a nil Registrar")
	}
	if log == nil {
		log = zap.NewNop()
	}
	l := &Loader{
		reg:    r,
		log:    log.Named("builtin"),
		mods:   make([]moduleState, len(catalogue)),
		byName: make(map[string]int, len(catalogue)),
	}
	for i := range l.mods {
		l.mods[i].sem = make(chan struct{}, 1)
		l.byName[catalogue[i].Name] = i
	}
	return l
}

// RegisterBase loads the base module: the nodes every /dev has. Call it
// once at start, before the mount is served.
func (l *Loader) RegisterBase(ctx context.Context) error {
	return l.LoadModule(ctx, BaseModule)
}

// Load loads every module that provides dir/name and returns when they are
// loaded. The caller is ignored: the catalogue is the same for everyone.
func (l *Loader) Load(ctx context.Context, dir, name string, _ modload.Caller) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("builtin: invalid name %q: %w", name, syscall.EINVAL)
	}
	if err := modload.ValidatePath(dir); err != nil {
		return fmt.Errorf("builtin: %w: %w", err, syscall.EINVAL)
	}
	p := path.Join(dir, name)
	mods := index[p]
	if len(mods) == 0 {
		return fmt.Errorf("builtin: no module provides %s: %w", p, syscall.ENOENT)
	}
	var errs []error
	for _, i := range mods {
		if err := l.load(ctx, i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LoadModule loads the module called name. An unknown module is an error
// wrapping syscall.ENOENT.
func (l *Loader) LoadModule(ctx context.Context, name string) error {
	i, ok := l.byName[name]
	if !ok {
		return fmt.Errorf("builtin: no module %q: %w", name, syscall.ENOENT)
	}
	return l.load(ctx, i)
}

// Loaded reports whether the module called name has been loaded.
func (l *Loader) Loaded(name string) bool {
	i, ok := l.byName[name]
	return ok && l.mods[i].loaded.Load()
}

func (l *Loader) load(ctx context.Context, i int) error {
	st := &l.mods[i]
	if st.loaded.Load() {
		return nil
	}
	select {
	case st.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-st.sem }()
	if st.loaded.Load() {
		return nil // loaded by the caller we waited for
	}
	// Honour cancellation only before anything is registered.
	if err := ctx.Err(); err != nil {
		return err
	}
	m := &catalogue[i]
	var errs []error
	for _, n := range m.Nodes {
		if err := modload.IgnoreExist(l.reg.Register(n)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Path, err))
		}
	}
	if len(errs) > 0 {
		err := fmt.Errorf("builtin: module %s: %w", m.Name, errors.Join(errs...))
		l.log.Warn("module load failed", zap.String("module", m.Name), zap.Error(err))
		return err
	}
	st.loaded.Store(true)
	l.log.Debug("module loaded", zap.String("module", m.Name), zap.Int("nodes", len(m.Nodes)))
	return nil
}
