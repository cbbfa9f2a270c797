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
// # Extensions
//
// A Loader may be given extension modules besides the catalogue
// ([Loader.SetExtensions], devfsd's modules: setting; extension.go). They
// are loaded on a miss exactly like catalogue modules; a set replaced while
// running keeps the load state of every module it keeps unchanged.
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
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// index maps every node path, and every directory a node lives under, to
// the modules that provide it. Built once from catalogue; read-only after.
var index = buildIndex(catalogue)

// catalogueDirs is every directory a catalogue node lives in (the root
// aside): a miss in any other directory is declined without consulting
// index.
var catalogueDirs = dirsOf(catalogue)

// dirsOf returns every directory, the root aside, that a node of mods
// lives in.
func dirsOf(mods []Module) map[string]bool {
	dirs := make(map[string]bool)
	for _, m := range mods {
		for _, n := range m.Nodes {
			for p := path.Dir(n.Path); p != "."; p = path.Dir(p) {
				dirs[p] = true
			}
		}
	}
	return dirs
}

func buildIndex(mods []Module) map[string][]int {
	idx := make(map[string][]int)
	owner := make(map[string]string) // non-directory path -> module
	for i, m := range mods {
		for _, n := range m.Nodes {
			if err := n.Validate(); err != nil {
				panic(fmt.Sprintf("builtin: module %s: %v", m.Name, err))
			}
			if n.Type != dcache.TypeDir {
				if prev, ok := owner[n.Path]; ok {
					panic(fmt.Sprintf("builtin: %s is provided by both %s and %s", n.Path, prev, m.Name))
				}
				owner[n.Path] = m.Name
			}
			indexNode(idx, n.Path, i)
		}
	}
	for p := range owner {
		if mods := idx[p]; len(mods) > 1 {
			panic(fmt.Sprintf("builtin: %s is both a node and a directory of another module", p))
		}
	}
	return idx
}

// indexNode adds module i to idx under p and every directory above it.
func indexNode(idx map[string][]int, p string, i int) {
	for ; p != "."; p = path.Dir(p) {
		if !slices.Contains(idx[p], i) {
			idx[p] = append(idx[p], i)
		}
	}
}

// cloneModules returns a copy of mods whose node slices are copies too.
func cloneModules(mods []Module) []Module {
	out := make([]Module, len(mods))
	for i, m := range mods {
		m.Nodes = slices.Clone(m.Nodes)
		out[i] = m
	}
	return out
}

// Modules returns a copy of the catalogue, the base module first.
func Modules() []Module { return cloneModules(catalogue) }

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
	// ext is the extension table (nil: none), replaced whole by
	// SetExtensions under extMu and read without it.
	ext   atomic.Pointer[extTable]
	extMu sync.Mutex
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
func (l *Loader) Load(ctx context.Context, dir, name string, _ dcache.Caller) error {
	if err := modload.ValidateLookup(dir, name); err != nil {
		return fmt.Errorf("builtin: %w", err)
	}
	p := path.Join(dir, name)
	mods := index[p]
	t := l.ext.Load()
	ext := t.providers(p)
	if len(mods) == 0 && len(ext) == 0 {
		// The extensions may have been replaced since t was read: a miss
		// that raced a reload asks the new set rather than reporting an
		// answer the reload has already invalidated.
		if t2 := l.ext.Load(); t2 != t {
			t, ext = t2, t2.providers(p)
		}
	}
	if len(mods) == 0 && len(ext) == 0 {
		return fmt.Errorf("builtin: no module provides %s: %w", p, syscall.ENOENT)
	}
	var errs []error
	for _, i := range mods {
		if err := l.load(ctx, &catalogue[i], &l.mods[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, i := range ext {
		if err := l.load(ctx, &t.mods[i], t.states[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Declines reports whether no catalogue or extension module provides
// dir/name (modload.Decliner): the same index Load consults first, read
// without blocking.
func (l *Loader) Declines(dir, name string) bool {
	// The common case first: a plain name in a clean directory no module
	// puts anything in (mknod churn in a directory of its own, names a
	// program makes up), decided by a set of a few directories, without
	// building dir/name or probing the index.
	if dir != "" && !catalogueDirs[dir] && plainName(name) && path.Clean(dir) == dir {
		if t := l.ext.Load(); t == nil || !t.dirs[dir] {
			return true
		}
	}
	// dir/name by concatenation, which needs no allocation while the
	// result does not escape and is short; path.Join allocates, and every
	// miss of a name nobody provides comes here. Clean returns a clean
	// path as it is, without allocating.
	p := name
	if dir != "" {
		p = dir + "/" + name
	}
	if path.Clean(p) != p {
		p = path.Join(dir, name)
	}
	return len(index[p]) == 0 && len(l.ext.Load().providers(p)) == 0
}

var _ modload.Decliner = (*Loader)(nil)

// plainName says whether name is one path element: not empty, not "." or
// "..", without a slash.
func plainName(name string) bool {
	return name != "" && name != "." && name != ".." && strings.IndexByte(name, '/') < 0
}

// LoadModule loads the module called name. An unknown module is an error
// wrapping syscall.ENOENT.
func (l *Loader) LoadModule(ctx context.Context, name string) error {
	m, st := l.module(name)
	if m == nil {
		return fmt.Errorf("builtin: no module %q: %w", name, syscall.ENOENT)
	}
	return l.load(ctx, m, st)
}

// Loaded reports whether the module called name has been loaded.
func (l *Loader) Loaded(name string) bool {
	_, st := l.module(name)
	return st != nil && st.loaded.Load()
}

// module returns the catalogue or extension module called name and its
// load state; nil if there is none.
func (l *Loader) module(name string) (*Module, *moduleState) {
	if i, ok := l.byName[name]; ok {
		return &catalogue[i], &l.mods[i]
	}
	if t := l.ext.Load(); t != nil {
		if i, ok := t.byName[name]; ok {
			return &t.mods[i], t.states[i]
		}
	}
	return nil, nil
}

// load loads module m whose state is st.
func (l *Loader) load(ctx context.Context, m *Module, st *moduleState) error {
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
