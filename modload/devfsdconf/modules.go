package devfsdconf

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
)

// Modules is a modules.devfs: the modutils configuration that devfsd's
// MODLOAD handed to modprobe ("modprobe -k -C /etc/modules.devfs
// /dev/NAME"); Debian installs its own as /etc/modutils/devfsd. It is the
// input of MODLOAD's module resolution, for the built-in catalogue and
// for a modprobe program alike. The lines read are modutils':
//
//	alias   NAME MODULE          NAME may be a shell pattern (/dev/tts/*)
//	probe   NAME MODULE...       load the first MODULE that loads
//	probeall NAME MODULE...      load every MODULE; a success if one loads
//	include FILE                 read FILE too (relative: to this file)
//
// A MODULE may itself be a NAME of another line (alias chains), and "off"
// or "null" loads nothing. Every other keyword of modules.conf (options,
// install, pre-install, post-install, keep, path, depfile, if, ...) is
// listed in Diags as not used: none of them names a module, and the
// install forms would run shell commands.
type Modules struct {
	rules []modRule
	// Diags are the lines not used, and the includes that failed.
	Diags []Diag
	// Files are the files read, in order.
	Files []string
}

// Aliases is the name this type had when only alias lines were read.
type Aliases = Modules

type modKind uint8

const (
	modAlias modKind = iota + 1
	modProbe
	modProbeAll
)

type modRule struct {
	pos     Pos
	kind    modKind
	pattern string
	targets []string
}

// maxModDepth bounds alias chains and nested includes.
const maxModDepth = 16

// ParseModules reads data as the file name; its include lines are read
// through files (nil: OSFiles).
func ParseModules(name string, data []byte, files Files) *Modules {
	if files == nil {
		files = OSFiles{}
	}
	m := &Modules{Files: []string{name}}
	m.parse(name, data, files, 0)
	return m
}

// LoadModules reads the file at path through files (nil: OSFiles).
func LoadModules(path string, files Files) (*Modules, error) {
	if files == nil {
		files = OSFiles{}
	}
	data, _, isDir, err := files.Read(path)
	if err != nil {
		return nil, err
	}
	if isDir {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	return ParseModules(path, data, files), nil
}

// ParseAliases reads data (its include lines from the file system).
func ParseAliases(data []byte) *Aliases { return ParseModules("", data, nil) }

func (m *Modules) parse(name string, data []byte, files Files, depth int) {
	for i, line := range strings.Split(string(data), "\n") {
		pos := Pos{name, i + 1}
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "alias":
			if len(f) != 3 {
				m.bad(pos, "alias takes a name and a module, got %d words", len(f)-1)
				continue
			}
			m.add(pos, modAlias, f[1], f[2:])
		case "probe", "probeall":
			if len(f) < 3 {
				m.bad(pos, "%s takes a name and modules", f[0])
				continue
			}
			k := modProbe
			if f[0] == "probeall" {
				k = modProbeAll
			}
			m.add(pos, k, f[1], f[2:])
		case "include":
			if len(f) != 2 {
				m.bad(pos, "include takes one file")
				continue
			}
			if depth >= maxModDepth {
				m.bad(pos, "include nested more than %d deep", maxModDepth)
				continue
			}
			p := f[1]
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(name), p)
			}
			b, _, isDir, err := files.Read(p)
			switch {
			case err != nil && errors.Is(err, fs.ErrNotExist):
				m.bad(pos, "include %s: no such file", p)
			case err != nil:
				m.bad(pos, "include %s: %v", p, err)
			case isDir:
				m.bad(pos, "include %s: a directory", p)
			default:
				m.Files = append(m.Files, p)
				m.parse(p, b, files, depth+1)
			}
		default:
			m.bad(pos, "%q lines are not used for MODLOAD (only alias, probe, probeall and include name modules)", f[0])
		}
	}
}

func (m *Modules) add(pos Pos, k modKind, pattern string, targets []string) {
	if _, err := path.Match(pattern, ""); err != nil {
		m.bad(pos, "%q is not a shell pattern: %v", pattern, err)
		return
	}
	m.rules = append(m.rules, modRule{pos: pos, kind: k, pattern: pattern, targets: targets})
}

func (m *Modules) bad(pos Pos, format string, a ...any) {
	m.Diags = append(m.Diags, Diag{Pos: pos, Msg: fmt.Sprintf(format, a...)})
}

// Plan is what loading a name takes.
type Plan struct {
	// Modules are the module names to try, in order.
	Modules []string
	// All: load every one (probeall); else stop at the first that loads.
	All bool
	// Via are the lines that led there, for logs.
	Via []Pos
}

// Plan resolves name ("/dev/ttyS0", or a module or alias name) to the
// modules that provide it. The first line whose name (pattern) matches
// decides, in file order. A name no line matches is a module name itself,
// except a /dev/ name, which then has no module. A chain ends at "off" or
// "null" (nothing), a loop, or 16 steps.
func (m *Modules) Plan(name string) Plan {
	var p Plan
	if m == nil {
		if !strings.HasPrefix(name, "/dev/") {
			p.Modules = []string{name}
		}
		return p
	}
	top := m.match(name)
	if top != nil && top.kind == modProbeAll {
		p.All = true
	}
	seen := map[string]bool{}
	m.expand(name, 0, seen, &p)
	return p
}

func (m *Modules) match(name string) *modRule {
	for i := range m.rules {
		if globMatch(m.rules[i].pattern, name) {
			return &m.rules[i]
		}
	}
	return nil
}

// globMatch is fnmatch(3) without FNM_PATHNAME, as modutils matched alias
// names: '*' and '?' match '/' too ("/dev/tts*" matches "/dev/tts/0").
func globMatch(pattern, name string) bool {
	const slash = "\x01"
	ok, _ := path.Match(strings.ReplaceAll(pattern, "/", slash), strings.ReplaceAll(name, "/", slash))
	return ok
}

func (m *Modules) expand(name string, depth int, seen map[string]bool, p *Plan) {
	if name == "off" || name == "null" || seen[name] || depth > maxModDepth {
		return
	}
	seen[name] = true
	r := m.match(name)
	if r == nil {
		if !strings.HasPrefix(name, "/dev/") {
			for _, have := range p.Modules {
				if have == name {
					return
				}
			}
			p.Modules = append(p.Modules, name)
		}
		return
	}
	p.Via = append(p.Via, r.pos)
	for _, t := range r.targets {
		m.expand(t, depth+1, seen, p)
	}
}

// Resolve returns name followed by the modules of its Plan: the caller
// takes, in order, the first that loads.
func (m *Modules) Resolve(name string) []string {
	return append([]string{name}, m.Plan(name).Modules...)
}
