package daemon

import (
	"errors"
	"fmt"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
)

// Check validates cfg whole: cfg.Validate, then what only the built-in
// loader knows — the modules' names, and their paths against its
// catalogue and each other (builtin.CheckExtensions) — each problem named
// by its entry and file line. It is what `devfsd mount` and a reload run
// before a configuration is used.
func Check(cfg *config.Config) error {
	errs := []error{cfg.Validate()}
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("modules: "+format, a...))
	}
	at := func(i, j int) string {
		where := fmt.Sprintf("modules[%d]", i)
		if j >= 0 {
			where += fmt.Sprintf(".nodes[%d]", j)
		}
		if line := cfg.ModuleLine(i, j); line > 0 {
			return fmt.Sprintf("line %d: %s", line, where)
		}
		return where
	}
	named := true
	for i, m := range cfg.Modules {
		if !builtin.ValidModuleName(m.Name) {
			bad("%s.name: %q is not a module name (1 to %d of A-Z a-z 0-9 . _ + -, not starting with . or -)",
				at(i, -1), m.Name, builtin.MaxModuleName)
			named = false
		}
	}
	if named && len(cfg.Modules) > 0 && cfg.Loader == "builtin" {
		err := builtin.CheckExtensions(modules(cfg.Modules))
		var list []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			list = j.Unwrap()
		} else if err != nil {
			list = []error{err}
		}
		for _, e := range list {
			var ee *builtin.ExtensionError
			if !errors.As(e, &ee) {
				bad("%v", e)
				continue
			}
			bad("%s: %v", at(ee.Module, ee.Node), ee.Err)
		}
	}
	return errors.Join(errs...)
}

// modules are the configuration's modules as the built-in loader takes
// them.
func modules(ms []config.Module) []builtin.Module {
	if ms == nil {
		return nil
	}
	out := make([]builtin.Module, 0, len(ms))
	for _, m := range ms {
		bm := builtin.Module{Name: m.Name, Description: m.Description}
		for _, n := range m.Nodes {
			bm.Nodes = append(bm.Nodes, modload.Node{Path: n.Path, Type: n.Type, Perm: uint32(n.Mode),
				Major: n.Major, Minor: n.Minor, UID: uint32(n.UID), GID: uint32(n.GID), Target: n.Target})
		}
		out = append(out, bm)
	}
	return out
}
