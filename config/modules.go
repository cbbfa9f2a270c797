package config

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/devfsd/devfsd/dcache"
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
// and repeated keys are errors. What needs the built-in catalogue — a
// module's name, a name taken by the catalogue or another entry, a path
// provided twice, a path both a directory and a device — is checked by
// daemon.Check (builtin.CheckExtensions), with the lines ModuleLine
// gives. Every error names the entry and its line.
//
// The key is in the file only: a list has no flag.

// Module is one extension module of the built-in loader: a name and the
// nodes it registers when loaded.
type Module struct {
	Name        string
	Description string
	Nodes       []Node
}

// Node is one node of a Module, as the file says it, defaults applied.
type Node struct {
	Path         string      // relative to the mount root, clean
	Type         dcache.Type // TypeChar, TypeBlock, TypeDir or TypeSymlink
	Mode         Mode        // 0777 for a symlink
	Major, Minor uint32      // char and block only
	UID, GID     ID
	Target       string // symlink only
}

// moduleLines are the file lines of Config.Modules' entries (module[i])
// and of their nodes (node[i][j]), for the errors of checks made after
// decoding.
type moduleLines struct {
	module []int
	node   [][]int
}

// moduleType reports whether a module may register nodes of type t.
func moduleType(t dcache.Type) bool {
	return t.Device() || t == dcache.TypeDir || t == dcache.TypeSymlink
}

// decodeModules reads the value of modules:. An empty list, or none, is
// no modules (nil).
func decodeModules(v *yaml.Node) ([]Module, *moduleLines, error) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil, nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, nil, fmt.Errorf("line %d: modules: want a list of modules, not %s", v.Line, describe(v))
	}
	if len(v.Content) == 0 {
		return nil, nil, nil
	}
	mods := make([]Module, 0, len(v.Content))
	lines := &moduleLines{}
	for i, mv := range v.Content {
		what := fmt.Sprintf("modules[%d]", i)
		kvs, err := mapping(mv, what, "name", "description", "nodes")
		if err != nil {
			return nil, nil, err
		}
		var m Module
		var nodeLines []int
		var hasName, hasNodes bool
		for _, kv := range kvs {
			k, val := kv.key, kv.val
			switch k.Value {
			case "name":
				hasName = true
				err = decode(&m.Name, val)
			case "description":
				err = decode(&m.Description, val)
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

func decodeNodes(v *yaml.Node, what string) ([]Node, []int, error) {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		return nil, nil, fmt.Errorf("line %d: %s: want a list of at least one node, not %s", v.Line, what, describe(v))
	}
	var nodes []Node
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

func decodeNode(v *yaml.Node, what string) (Node, error) {
	var n Node
	kvs, err := mapping(v, what, "path", "type", "mode", "major", "minor", "uid", "gid", "target")
	if err != nil {
		return n, err
	}
	set := map[string]*yaml.Node{}
	for _, kv := range kvs {
		k, val := kv.key, kv.val
		set[k.Value] = k
		fail := func(err error) error { return fmt.Errorf("line %d: %s.%s: %w", val.Line, what, k.Value, err) }
		switch k.Value {
		case "path":
			if err = decode(&n.Path, val); err != nil {
				return n, fail(err)
			}
			if err := checkNodePath(n.Path); err != nil {
				return n, fail(err)
			}
		case "type":
			var s string
			if err := decode(&s, val); err != nil {
				return n, fail(err)
			}
			t, ok := dcache.ParseType(s)
			if !ok || !moduleType(t) {
				return n, fail(fmt.Errorf("%q is not a node type (char, block, dir, symlink)", s))
			}
			n.Type = t
		case "mode":
			if err := decode(&n.Mode, val); err != nil {
				return n, fail(err)
			}
		case "major":
			if n.Major, err = uintIn(val, 1<<12-1); err != nil {
				return n, fail(err)
			}
		case "minor":
			if n.Minor, err = uintIn(val, 1<<20-1); err != nil {
				return n, fail(err)
			}
		case "uid":
			if err = decode(&n.UID, val); err != nil {
				return n, fail(err)
			}
		case "gid":
			if err = decode(&n.GID, val); err != nil {
				return n, fail(err)
			}
		case "target":
			if err = decode(&n.Target, val); err != nil {
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
	case dcache.TypeChar, dcache.TypeBlock:
		need, forbid = []string{"major", "minor"}, []string{"target"}
		if set["mode"] == nil {
			n.Mode = 0600
		}
	case dcache.TypeDir:
		forbid = []string{"major", "minor", "target"}
		if set["mode"] == nil {
			n.Mode = 0755
		}
	case dcache.TypeSymlink:
		need, forbid = []string{"target"}, []string{"major", "minor", "mode"}
		n.Mode = 0777
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
	return n, nil
}

// checkNodePath reports whether p is a node path: relative to the mount
// root, clean, every element a valid name.
func checkNodePath(p string) error {
	if p == "" {
		return errors.New("empty: the root cannot be a node")
	}
	if strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
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
