package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/devfsd/devfsd/dcache"
	"go.uber.org/zap"
)

// DevnameEntry is one line of modules.devname: the module that provides a
// device node, and the node's type and number.
type DevnameEntry struct {
	Name         string // the node path: "net/tun"
	Module       string
	Type         dcache.Type
	Major, Minor uint32
}

// maxDevname bounds a modules.devname file.
const maxDevname = 1 << 20

// ParseModulesDevname parses modules.devname as depmod writes it:
// "MODULE DEVNAME TYPEMAJOR:MINOR" per line ("fuse fuse c10:229", "loop
// loop-control c10:237"), '#' comments and blank lines aside. It returns
// the entries by DEVNAME. A malformed line is an error naming it, and
// nothing is returned.
func ParseModulesDevname(r io.Reader) (map[string]DevnameEntry, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxDevname+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxDevname {
		return nil, fmt.Errorf("modules.devname: more than %d bytes", maxDevname)
	}
	out := map[string]DevnameEntry{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 3 {
			return nil, fmt.Errorf("modules.devname line %d: %q is not MODULE DEVNAME TYPEMAJOR:MINOR", line, trunc(s))
		}
		mod, name, num := f[0], f[1], f[2]
		if !validModule(mod) {
			return nil, fmt.Errorf("modules.devname line %d: %q is not a module name", line, trunc(mod))
		}
		if err := checkDevName(name); err != nil {
			return nil, fmt.Errorf("modules.devname line %d: %w", line, err)
		}
		e := DevnameEntry{Name: name, Module: mod}
		switch num[0] {
		case 'c':
			e.Type = dcache.TypeChar
		case 'b':
			e.Type = dcache.TypeBlock
		default:
			return nil, fmt.Errorf("modules.devname line %d: %q: type is neither c nor b", line, trunc(num))
		}
		maj, min, ok := strings.Cut(num[1:], ":")
		ma, err1 := parseDecimal(maj, 12)
		mi, err2 := parseDecimal(min, 20)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("modules.devname line %d: %q is not TYPEMAJOR:MINOR", line, trunc(num))
		}
		e.Major, e.Minor = uint32(ma), uint32(mi)
		if prev, dup := out[name]; dup {
			return nil, fmt.Errorf("modules.devname line %d: %s listed twice (modules %s and %s)", line, name, prev.Module, mod)
		}
		out[name] = e
	}
	return out, sc.Err()
}

// validModule accepts a module name as modprobe takes one: letters,
// digits, '_' and '-', not starting with '-' (it must not read as an
// option; it is passed after "--" anyway).
func validModule(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ReloadModulesDevname reads Options.ModulesDevname again. A file that
// does not exist means no autoload; a malformed one is an error and the
// table in use is kept.
func (s *Source) ReloadModulesDevname() error {
	tab := map[string]DevnameEntry{}
	f, err := os.Open(s.opts.ModulesDevname)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no modules.devname: no module autoload", zap.String("path", s.opts.ModulesDevname))
	case err != nil:
		return fmt.Errorf("kernel: %w", err)
	default:
		defer f.Close()
		tab, err = ParseModulesDevname(f)
		if err != nil {
			return fmt.Errorf("kernel: %s: %w", s.opts.ModulesDevname, err)
		}
	}
	s.devname.Store(newDevnameTable(tab))
	return nil
}

// devnameTable is modules.devname indexed for lookups: by node path, and
// by every directory a node path lies in ("net" for net/tun). Read-only
// once built.
type devnameTable struct {
	byName map[string]DevnameEntry
	byDir  map[string][]string // directory -> the node paths under it, sorted
}

func newDevnameTable(byName map[string]DevnameEntry) *devnameTable {
	t := &devnameTable{byName: byName, byDir: map[string][]string{}}
	for name := range byName {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			t.byDir[d] = append(t.byDir[d], name)
		}
	}
	for _, names := range t.byDir {
		slices.Sort(names)
	}
	return t
}

// entries returns the entries a lookup of p loads: p's own, or those of
// every node under directory p.
func (t *devnameTable) entries(p string) []DevnameEntry {
	if e, ok := t.byName[p]; ok {
		return []DevnameEntry{e}
	}
	var out []DevnameEntry
	for _, name := range t.byDir[p] {
		out = append(out, t.byName[name])
	}
	return out
}

// has reports whether a lookup of p loads anything.
func (t *devnameTable) has(p string) bool {
	if _, ok := t.byName[p]; ok {
		return true
	}
	_, ok := t.byDir[p]
	return ok
}

// ModulesDevname returns the number of modules.devname entries in use.
func (s *Source) ModulesDevname() int { return len(s.devname.Load().byName) }

// Devname returns the modules.devname entry for a node path.
func (s *Source) Devname(p string) (DevnameEntry, bool) {
	e, ok := s.devname.Load().byName[p]
	return e, ok
}
