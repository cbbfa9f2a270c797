package daemon

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
)

// The modules: key: extension modules of the built-in loader, beside its
// catalogue. A list; each entry a module:
//
//	modules:
//	  - name: widget                  # required; A-Z a-z 0-9 . _ + -
//	    description: the widget board # optional
//	    nodes:                        # required, at least one
//	      - {path: widgets, type: dir, mode: "0750"}
//	      - {path: widget0, type: char, major: 240, minor: 0, mode: "0660", gid: 20}
//	      - {path: widgets/first, type: symlink, target: ../widget0}
//
// A node's keys: path (required; relative to the mount root, clean, no .
// or .. element), type (required: char, block, dir or symlink), mode
// (octal, within 07777; default 0600 for char and block, 0755 for dir; a
// symlink has none: it is 0777), major and minor (required for char and
// block, and only there: major below 4096, minor below 1<<20), uid and gid
// (default 0), target (required for a symlink, and only there). Unknown
// and repeated keys are errors. What involves more than one node — a
// module name taken by the catalogue or another entry, a path provided
// twice, a path both a directory and a device — is checked by Validate
// (builtin.CheckExtensions). Every error names the entry and its line.
//
// The key is in the file only: a list has no flag.

// moduleLines are the file lines of Config.Modules' entries (module[i])
// and of their nodes (node[i][j]), for Validate's errors.
type moduleLines struct {
	module []int
	node   [][]int
}

// mapping returns the key/value pairs of the YAML mapping v, refusing a
// key that is not in known or is repeated; what names v in errors.
func mapping(v *yaml.Node, what string, known ...string) ([][2]*yaml.Node, error) {
	if v.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: %s: want a mapping (key: value), not %s", v.Line, what, yamlKind(v))
	}
	seen := map[string]int{}
	var kvs [][2]*yaml.Node
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if !oneOf(k.Value, known...) {
			return nil, fmt.Errorf("line %d: %s: unknown key %q (known keys: %s)", k.Line, what, k.Value, strings.Join(known, ", "))
		}
		if prev, ok := seen[k.Value]; ok {
			return nil, fmt.Errorf("line %d: %s.%s: set twice (first on line %d)", k.Line, what, k.Value, prev)
		}
		seen[k.Value] = k.Line
		kvs = append(kvs, [2]*yaml.Node{k, val})
	}
	return kvs, nil
}

func yamlKind(v *yaml.Node) string {
	if v.Kind == yaml.ScalarNode {
		return fmt.Sprintf("%q", v.Value)
	}
	if v.Kind == yaml.AliasNode {
		return "an alias (anchors are not followed here)"
	}
	return "a " + kindName(v.Kind)
}

func yamlString(v *yaml.Node) (string, error) {
	if v.Kind == yaml.ScalarNode && v.Tag != "!!str" {
		return "", fmt.Errorf("want a string, not %s (YAML reads it as %s; quote it)", yamlKind(v), strings.TrimPrefix(v.Tag, "!!"))
	}
	if v.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("want a string, not %s", yamlKind(v))
	}
	return v.Value, nil
}

// yamlUint reads an integer in [0, max].
func yamlUint(v *yaml.Node, max uint64) (uint32, error) {
	var n int64
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&n) != nil {
		return 0, fmt.Errorf("want an integer, not %s", yamlKind(v))
	}
	if n < 0 || uint64(n) > max {
		return 0, fmt.Errorf("%d is out of range [0, %d]", n, max)
	}
	return uint32(n), nil
}

var configNodeTypes = map[string]modload.NodeType{
	"char": modload.CharDevice, "block": modload.BlockDevice,
	"dir": modload.Directory, "symlink": modload.Symlink,
}

// decodeModules reads the value of modules:. An empty list, or none, is
// no modules (nil).
func decodeModules(v *yaml.Node) ([]builtin.Module, *moduleLines, error) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil, nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, nil, fmt.Errorf("line %d: modules: want a list of modules, not %s", v.Line, yamlKind(v))
	}
	if len(v.Content) == 0 {
		return nil, nil, nil
	}
	mods := make([]builtin.Module, 0, len(v.Content))
	lines := &moduleLines{}
	for i, mv := range v.Content {
		what := fmt.Sprintf("modules[%d]", i)
		kvs, err := mapping(mv, what, "name", "description", "nodes")
		if err != nil {
			return nil, nil, err
		}
		var m builtin.Module
		var nodeLines []int
		var hasName, hasNodes bool
		for _, kv := range kvs {
			k, val := kv[0], kv[1]
			switch k.Value {
			case "name":
				hasName = true
				if m.Name, err = yamlString(val); err == nil && !builtin.ValidModuleName(m.Name) {
					err = fmt.Errorf("%q is not a module name (1 to %d of A-Z a-z 0-9 . _ + -, not starting with . or -)", m.Name, builtin.MaxModuleName)
				}
			case "description":
				m.Description, err = yamlString(val)
			case "nodes":
				hasNodes = true
				m.Nodes, nodeLines, err = decodeNodes(val, what+".nodes")
				if err != nil {
					return nil, nil, err // decodeNodes says where
				}
			}
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: %s.%s: %w", val.Line, what, k.Value, err)
			}
		}
		if !hasName {
			return nil, nil, fmt.Errorf("line %d: %s.name: missing", mv.Line, what)
		}
		if !hasNodes {
			return nil, nil, fmt.Errorf("line %d: %s.nodes: missing (module %q registers nothing)", mv.Line, what, m.Name)
		}
		mods = append(mods, m)
		lines.module = append(lines.module, mv.Line)
		lines.node = append(lines.node, nodeLines)
	}
	return mods, lines, nil
}

func decodeNodes(v *yaml.Node, what string) ([]modload.Node, []int, error) {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		return nil, nil, fmt.Errorf("line %d: %s: want a list of at least one node, not %s", v.Line, what, yamlKind(v))
	}
	var nodes []modload.Node
	var lines []int
	for j, nv := range v.Content {
		n, err := decodeNode(nv, fmt.Sprintf("%s[%d]", what, j))
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, n)
		lines = append(lines, nv.Line)
	}
	return nodes, lines, nil
}

func decodeNode(v *yaml.Node, what string) (modload.Node, error) {
	var n modload.Node
	kvs, err := mapping(v, what, "path", "type", "mode", "major", "minor", "uid", "gid", "target")
	if err != nil {
		return n, err
	}
	set := map[string]*yaml.Node{}
	for _, kv := range kvs {
		k, val := kv[0], kv[1]
		set[k.Value] = k
		fail := func(err error) error { return fmt.Errorf("line %d: %s.%s: %w", val.Line, what, k.Value, err) }
		switch k.Value {
		case "path":
			if n.Path, err = yamlString(val); err != nil {
				return n, fail(err)
			}
			if err := checkNodePath(n.Path); err != nil {
				return n, fail(err)
			}
		case "type":
			s, err := yamlString(val)
			if err != nil {
				return n, fail(err)
			}
			t, ok := configNodeTypes[s]
			if !ok {
				return n, fail(fmt.Errorf("%q is not a node type (char, block, dir, symlink)", s))
			}
			n.Type = t
		case "mode":
			var m OctalMode
			if val.Kind != yaml.ScalarNode {
				return n, fail(fmt.Errorf("want an octal mode, not %s", yamlKind(val)))
			}
			if err := m.Set(val.Value); err != nil {
				return n, fail(err)
			}
			if m > 07777 {
				return n, fail(fmt.Errorf("%v is outside 07777 (permission, setuid, setgid and sticky bits only)", m))
			}
			n.Perm = uint32(m)
		case "major":
			if n.Major, err = yamlUint(val, 1<<12-1); err != nil {
				return n, fail(err)
			}
		case "minor":
			if n.Minor, err = yamlUint(val, 1<<20-1); err != nil {
				return n, fail(err)
			}
		case "uid":
			if n.UID, err = yamlUint(val, 1<<32-2); err != nil {
				return n, fail(err)
			}
		case "gid":
			if n.GID, err = yamlUint(val, 1<<32-2); err != nil {
				return n, fail(err)
			}
		case "target":
			if n.Target, err = yamlString(val); err != nil {
				return n, fail(err)
			}
			if n.Target == "" || strings.IndexByte(n.Target, 0) >= 0 || len(n.Target) > 4095 {
				return n, fail(fmt.Errorf("%q is not a link target", n.Target))
			}
		}
	}
	for _, req := range []string{"path", "type"} {
		if set[req] == nil {
			return n, fmt.Errorf("line %d: %s.%s: missing", v.Line, what, req)
		}
	}
	// What each type needs, and what it must not have.
	need, forbid := []string{}, []string{}
	switch n.Type {
	case modload.CharDevice, modload.BlockDevice:
		need, forbid = []string{"major", "minor"}, []string{"target"}
		if set["mode"] == nil {
			n.Perm = 0600
		}
	case modload.Directory:
		forbid = []string{"major", "minor", "target"}
		if set["mode"] == nil {
			n.Perm = 0755
		}
	case modload.Symlink:
		need, forbid = []string{"target"}, []string{"major", "minor", "mode"}
		n.Perm = 0777
	}
	for _, k := range need {
		if set[k] == nil {
			return n, fmt.Errorf("line %d: %s.%s: missing (a %s node needs it)", v.Line, what, k, n.Type)
		}
	}
	for _, k := range forbid {
		if kn := set[k]; kn != nil {
			return n, fmt.Errorf("line %d: %s.%s: a %s node has none", kn.Line, what, k, n.Type)
		}
	}
	if err := n.Validate(); err != nil { // a backstop: the checks above are stricter
		return n, fmt.Errorf("line %d: %s: %w", v.Line, what, err)
	}
	return n, nil
}

// checkNodePath reports whether p is a node path: relative to the mount
// root, clean, every element a valid name.
func checkNodePath(p string) error {
	if p == "" {
		return errors.New("empty: the root cannot be a node")
	}
	if err := modload.ValidatePath(p); err != nil {
		return fmt.Errorf("%q is not a clean path relative to the mount root (such as net/tun)", p)
	}
	for _, e := range strings.Split(p, "/") {
		if err := dcache.CheckName(e); err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
	}
	return nil
}

// ModuleLine returns the file line of Modules[i].Nodes[j], or of
// Modules[i] itself for j < 0; 0 when it came from no file or the node
// is not there.
func (c *Config) ModuleLine(i, j int) int {
	l := c.moduleLines
	if l == nil || i < 0 || i >= len(l.module) {
		return 0
	}
	if j < 0 {
		return l.module[i]
	}
	if j < len(l.node[i]) {
		return l.node[i][j]
	}
	return l.module[i]
}

// validateModules is Validate's part for modules: what involves more than
// one node (builtin.CheckExtensions), each problem named by its entry and
// line.
func (c *Config) validateModules(bad func(key, format string, a ...any)) {
	if len(c.Modules) == 0 {
		return
	}
	if c.Loader != "builtin" {
		bad("modules", "set, but loader is %q; extension modules are loaded by the builtin loader", c.Loader)
		return
	}
	err := builtin.CheckExtensions(c.Modules)
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var ee *builtin.ExtensionError
		if !errors.As(e, &ee) {
			bad("modules", "%v", e)
			continue
		}
		where := fmt.Sprintf("modules[%d]", ee.Module)
		line := c.ModuleLine(ee.Module, ee.Node)
		if ee.Node >= 0 {
			where += fmt.Sprintf(".nodes[%d]", ee.Node)
		}
		if line > 0 {
			bad("modules", "line %d: %s: %v", line, where, ee.Err)
		} else {
			bad("modules", "%s: %v", where, ee.Err)
		}
	}
}
