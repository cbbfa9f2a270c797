package builtin

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"sort"

	"github.com/devfsd/devfsd/dcache"
	"go.uber.org/zap"
)

// Extension modules are modules the catalogue does not have, given by the
// daemon's configuration (devfsd's modules: setting). They obey the
// catalogue's rules, checked by CheckExtensions: a module name is new
// (no catalogue module and no other extension has it), and a device or
// symlink path is provided by exactly one module of catalogue and
// extensions together; a directory may be shared, but no path is both a
// directory and a device or symlink.

// MaxModuleName is the longest extension module name.
const MaxModuleName = 64

// ExtensionError is one problem of one extension module, or of one of its
// nodes, as CheckExtensions reports it.
type ExtensionError struct {
	Module int // index of the module in the list checked
	Node   int // index of the node in its Nodes; -1: the module itself
	Err    error
}

func (e *ExtensionError) Error() string {
	if e.Node < 0 {
		return fmt.Sprintf("module %d: %v", e.Module, e.Err)
	}
	return fmt.Sprintf("module %d node %d: %v", e.Module, e.Node, e.Err)
}

func (e *ExtensionError) Unwrap() error { return e.Err }

// ValidModuleName reports whether s may name an extension module: 1 to MaxModuleName
// letters, digits, '.', '_', '+' or '-', not starting with '.' or '-'.
func ValidModuleName(s string) bool {
	if s == "" || len(s) > MaxModuleName || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

// CheckExtensions reports whether ext may extend the catalogue: nil, or an
// error joining one *ExtensionError per problem, in the order of ext.
func CheckExtensions(ext []Module) error {
	// Where a path is taken: by a device or symlink (nodes), or as a
	// directory (a directory node, or the parent of any node). The
	// catalogue goes first; it is consistent (buildIndex).
	type place struct{ mod int } // < len(catalogue): a catalogue module
	nodes := map[string]place{}
	dirs := map[string]place{}
	names := map[string]int{}
	for i, m := range catalogue {
		names[m.Name] = i
		for _, n := range m.Nodes {
			if n.Type == dcache.TypeDir {
				dirs[n.Path] = place{i}
			} else {
				nodes[n.Path] = place{i}
			}
			for p := path.Dir(n.Path); p != "."; p = path.Dir(p) {
				dirs[p] = place{i}
			}
		}
	}
	who := func(p place) string {
		if p.mod < len(catalogue) {
			return fmt.Sprintf("catalogue module %q", catalogue[p.mod].Name)
		}
		return fmt.Sprintf("module %q", ext[p.mod-len(catalogue)].Name)
	}
	var errs []error
	bad := func(mod, node int, format string, a ...any) {
		errs = append(errs, &ExtensionError{Module: mod, Node: node, Err: fmt.Errorf(format, a...)})
	}
	for i, m := range ext {
		here := place{len(catalogue) + i}
		switch j, taken := names[m.Name]; {
		case !ValidModuleName(m.Name):
			bad(i, -1, "name %q is not a module name (1 to %d of A-Z a-z 0-9 . _ + -, not starting with . or -)", m.Name, MaxModuleName)
		case taken && j < len(catalogue):
			bad(i, -1, "name %q is a catalogue module", m.Name)
		case taken:
			bad(i, -1, "name %q is used by module %d too", m.Name, j-len(catalogue))
		default:
			names[m.Name] = here.mod
		}
		if len(m.Nodes) == 0 {
			bad(i, -1, "module %q has no nodes", m.Name)
		}
		for j, n := range m.Nodes {
			if err := n.Validate(); err != nil {
				bad(i, j, "%w", err)
				continue
			}
			if n.Type == dcache.TypeDir {
				if prev, ok := nodes[n.Path]; ok {
					bad(i, j, "%s is a device or symlink of %s, not a directory", n.Path, who(prev))
				} else if _, ok := dirs[n.Path]; !ok {
					dirs[n.Path] = here
				}
			} else {
				if prev, ok := nodes[n.Path]; ok {
					bad(i, j, "%s is provided by %s already", n.Path, who(prev))
				} else if prev, ok := dirs[n.Path]; ok {
					bad(i, j, "%s is a directory of %s", n.Path, who(prev))
				} else {
					nodes[n.Path] = here
				}
			}
			for p := path.Dir(n.Path); p != "."; p = path.Dir(p) {
				if prev, ok := nodes[p]; ok {
					bad(i, j, "parent %s of %s is a device or symlink of %s", p, n.Path, who(prev))
					break
				}
				if _, ok := dirs[p]; !ok {
					dirs[p] = here
				}
			}
		}
	}
	return errors.Join(errs...)
}

// extTable is one set of extension modules with their load states and
// index. Read-only once published in Loader.ext.
type extTable struct {
	mods   []Module
	states []*moduleState
	// index maps every node path of mods, and every directory a node
	// lives under, to the indexes in mods of the modules that provide it.
	index  map[string][]int
	byName map[string]int
	// dirs is every directory, the root aside, a node of mods lives in
	// (dirsOf).
	dirs map[string]bool
}

// providers returns the indexes of the modules of t that provide p (t may
// be nil).
func (t *extTable) providers(p string) []int {
	if t == nil {
		return nil
	}
	return t.index[p]
}

func newModuleState() *moduleState {
	return &moduleState{sem: make(chan struct{}, 1)}
}

// SetExtensions replaces l's extension modules with ext (nil: none),
// checked by CheckExtensions; an invalid set changes nothing. A module
// kept unchanged (same name, description and nodes) keeps its load state;
// a new or changed one is not loaded yet, so the next miss of one of its
// names loads it (nodes that exist already count as registered). Removing
// a module unregisters nothing.
//
// It returns the paths whose answer changes (sorted): those that a new or
// changed module provides, as a node or as a directory its nodes live in.
// A miss of such a path cached before the call is stale — the next lookup
// would load a module now — and the caller should drop it. No other path
// changes its answer: one only a removed module provided was either
// registered (it exists and stays) or never asked for (nothing is cached).
//
// Loads in flight finish with the set they started with.
func (l *Loader) SetExtensions(ext []Module) ([]string, error) {
	if err := CheckExtensions(ext); err != nil {
		return nil, fmt.Errorf("builtin: extensions: %w", err)
	}
	l.extMu.Lock()
	defer l.extMu.Unlock()
	old := l.ext.Load()
	t := &extTable{
		mods:   make([]Module, len(ext)),
		states: make([]*moduleState, len(ext)),
		index:  map[string][]int{},
		byName: make(map[string]int, len(ext)),
		dirs:   dirsOf(ext),
	}
	for i, m := range ext {
		m.Nodes = slices.Clone(m.Nodes)
		t.mods[i] = m
		t.byName[m.Name] = i
		t.states[i] = newModuleState()
		if old != nil {
			if k, ok := old.byName[m.Name]; ok && reflect.DeepEqual(old.mods[k], m) {
				t.states[i] = old.states[k]
			}
		}
		for _, n := range m.Nodes {
			indexNode(t.index, n.Path, i)
		}
	}
	// A path's answer changes when the load states behind it do: a new
	// or changed module (a new state) provides it.
	var changed []string
	for p, mods := range t.index {
		var before []*moduleState
		for _, k := range old.providers(p) {
			before = append(before, old.states[k])
		}
		for _, i := range mods {
			if !slices.Contains(before, t.states[i]) {
				changed = append(changed, p)
				break
			}
		}
	}
	sort.Strings(changed)
	if len(ext) == 0 {
		t = nil
	}
	l.ext.Store(t)
	l.log.Info("extension modules set", zap.Int("modules", len(ext)), zap.Int("changed_paths", len(changed)))
	return changed, nil
}

// Extensions returns a copy of l's extension modules.
func (l *Loader) Extensions() []Module {
	t := l.ext.Load()
	if t == nil {
		return nil
	}
	return cloneModules(t.mods)
}
