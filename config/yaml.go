package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
)

// The strict YAML walker every file of the daemon is read with (the
// configuration, its modules, view files). It walks yaml.v3's node tree
// rather than decoding into structs, so that an unknown or repeated key,
// a value of the wrong kind, or a second document is an error naming the
// key and its line, and so that a scalar is taken as written.

// document returns the root of data, which must be at most one YAML
// document; nil for an empty one (nothing but comments, "---" or "~").
func document(data []byte, what string) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("line %d: a second YAML document; %s is one mapping", extra.Line, what)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	return root, nil
}

// field is one key: value of a mapping.
type field struct{ key, val *yaml.Node }

// name is the field's key under what ("" at the top).
func (f field) name(what string) string { return join(what, f.key.Value) }

func join(what, key string) string {
	if what == "" {
		return key
	}
	return what + "." + key
}

// mapping returns the fields of the mapping n in order, refusing a key
// that is not in known or is set twice; what names n in errors ("" at
// the top).
func mapping(n *yaml.Node, what string, known ...string) ([]field, error) {
	prefix := ""
	if what != "" {
		prefix = what + ": "
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: %swant a mapping (key: value) of %s, not %s", n.Line, prefix, strings.Join(known, ", "), describe(n))
	}
	seen := map[string]int{}
	var fs []field
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !oneOf(k.Value, known...) {
			return nil, fmt.Errorf("line %d: %sunknown key %q (known keys: %s)", k.Line, prefix, k.Value, strings.Join(known, ", "))
		}
		if prev, ok := seen[k.Value]; ok {
			return nil, fmt.Errorf("line %d: %s: set twice (first on line %d)", k.Line, join(what, k.Value), prev)
		}
		seen[k.Value] = k.Line
		fs = append(fs, field{k, v})
	}
	return fs, nil
}

// describe names what n is, for errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias (anchors are not followed here)"
	}
	return "a document"
}

// scalar returns n's value as written, whatever YAML would read it as
// (`null` is the string "null"); what names n in errors.
func scalar(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("line %d: %s: want a single value, not %s", n.Line, what, describe(n))
	}
	return n.Value, nil
}

// scalars returns the list n of scalars as written.
func scalars(n *yaml.Node, what string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: %s: want a list, not %s", n.Line, what, describe(n))
	}
	var out []string
	for i, it := range n.Content {
		s, err := scalar(it, fmt.Sprintf("%s[%d]", what, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// decode sets *dst from n: a string (YAML must read it as one), a bool,
// an int64, a uint32 within its range, or any yaml.Unmarshaler (the
// value types of this package). Its errors do not say where; the caller
// adds the line and key.
func decode(dst any, n *yaml.Node) error {
	if u, ok := dst.(yaml.Unmarshaler); ok {
		return u.UnmarshalYAML(n)
	}
	if _, ok := dst.(*string); ok && n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a string, not %s", describe(n))
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a single value, not %s", describe(n))
	}
	switch d := dst.(type) {
	case *string:
		if n.Tag != "!!str" {
			return fmt.Errorf("want a string, not %s (YAML reads it as %s; quote it)", describe(n), strings.TrimPrefix(n.Tag, "!!"))
		}
		*d = n.Value
	case *bool:
		if n.Tag != "!!bool" || n.Decode(d) != nil {
			return fmt.Errorf("invalid value %q (want true or false)", n.Value)
		}
	case *int64:
		if n.Tag != "!!int" || n.Decode(d) != nil {
			return fmt.Errorf("want an integer, not %s", describe(n))
		}
	default:
		panic(fmt.Sprintf("config: no decoder for %T", dst))
	}
	return nil
}

// uintIn reads an integer in [0, max].
func uintIn(n *yaml.Node, max uint64) (uint32, error) {
	var v int64
	if err := decode(&v, n); err != nil {
		return 0, err
	}
	if v < 0 || uint64(v) > max {
		return 0, fmt.Errorf("%d is out of range [0, %d]", v, max)
	}
	return uint32(v), nil
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}
