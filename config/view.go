package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// A view file describes one more mount of the namespace (`devfsd mount
// --view FILE`, `devfsd ctl view add FILE`). It is YAML, read strictly
// (an unknown or repeated key, or a bad value, is an error naming its
// line):
//
//	mountpoint: /run/devfsd/views/box1 # absolute; an empty directory
//	allow: [null, zero, "snd/*"]       # globs; none: everything
//	deny: [snd/seq]                    # globs; deny wins
//	overrides:                         # the first whose glob matches applies
//	  - {glob: "snd/*", mode: "0660", gid: 29}
//
// Patterns and scalars are taken as written: `null` is the name null.

// View is a view file's content, its values typed.
type View struct {
	Mountpoint string
	Allow      []string
	Deny       []string
	Overrides  []ViewOverride
}

// ViewOverride changes the attributes of the nodes its Glob matches;
// nil fields are left as they are.
type ViewOverride struct {
	Glob string
	Mode *Mode
	UID  *ID
	GID  *ID
}

// ViewFiles is the repeatable --view flag.
type ViewFiles []string

func (v *ViewFiles) String() string { return strings.Join(*v, ",") }

// Set implements flag.Value.
func (v *ViewFiles) Set(s string) error {
	if s == "" {
		return errors.New("--view needs a file")
	}
	*v = append(*v, s)
	return nil
}

// ReadView reads the view file at path.
func ReadView(path string) (View, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return View{}, fmt.Errorf("view: %w", err)
	}
	v, err := ParseView(data)
	if err != nil {
		return View{}, fmt.Errorf("view %s: %w", path, err)
	}
	return v, nil
}

// ParseView parses a view file's content.
func ParseView(data []byte) (View, error) {
	var v View
	root, err := document(data, "a view")
	if err != nil {
		return v, err
	}
	if root == nil {
		return v, errors.New("empty: a view needs at least a mountpoint")
	}
	fs, err := mapping(root, "", "mountpoint", "allow", "deny", "overrides")
	if err != nil {
		return v, err
	}
	hasMountpoint := false
	for _, f := range fs {
		switch f.key.Value {
		case "mountpoint":
			hasMountpoint = true
			if v.Mountpoint, err = scalar(f.val, "mountpoint"); err != nil {
				return v, err
			}
		case "allow":
			if v.Allow, err = scalars(f.val, "allow"); err != nil {
				return v, err
			}
		case "deny":
			if v.Deny, err = scalars(f.val, "deny"); err != nil {
				return v, err
			}
		case "overrides":
			if v.Overrides, err = decodeOverrides(f.val); err != nil {
				return v, err
			}
		}
	}
	if !hasMountpoint {
		return v, fmt.Errorf("line %d: mountpoint: missing", root.Line)
	}
	return v, nil
}

func decodeOverrides(n *yaml.Node) ([]ViewOverride, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: overrides: want a list of {glob, mode, uid, gid}, not %s", n.Line, describe(n))
	}
	var out []ViewOverride
	for i, it := range n.Content {
		what := fmt.Sprintf("overrides[%d]", i)
		fs, err := mapping(it, what, "glob", "mode", "uid", "gid")
		if err != nil {
			return nil, err
		}
		var o ViewOverride
		hasGlob := false
		for _, f := range fs {
			var err error
			switch f.key.Value {
			case "glob":
				hasGlob = true
				if o.Glob, err = scalar(f.val, f.name(what)); err != nil {
					return nil, err // it says where
				}
			case "mode":
				o.Mode = new(Mode)
				err = decode(o.Mode, f.val)
			case "uid":
				o.UID = new(ID)
				err = decode(o.UID, f.val)
			case "gid":
				o.GID = new(ID)
				err = decode(o.GID, f.val)
			}
			if err != nil {
				return nil, fmt.Errorf("line %d: %s: %w", f.val.Line, f.name(what), err)
			}
		}
		if !hasGlob {
			return nil, fmt.Errorf("line %d: %s.glob: missing", it.Line, what)
		}
		out = append(out, o)
	}
	return out, nil
}

// CheckMountpointPath refuses a view mountpoint that is not an absolute,
// clean path other than /: what can be said of it without the file
// system.
func CheckMountpointPath(mp string) error {
	if !filepath.IsAbs(mp) || filepath.Clean(mp) != mp || mp == "/" {
		return fmt.Errorf("mountpoint %q is not an absolute, clean path other than /", mp)
	}
	return nil
}
