// Package viewpath is the path-pattern language of views: which paths of
// the namespace a view shows, and the mode and owner it shows them with.
// It knows nothing of FUSE or of the namespace; package fs serves a
// compiled View, and the decoders of view requests and view files
// validate through Compile, so that a view is checked in one place
// whichever door it came through.
//
// What a view admits. Paths are relative to the mount's root
// ("snd/pcm0"), slash-separated, "" for the root. Patterns are
// path.Match patterns matched element by element ("*" never crosses a
// "/"; "**" is refused, since it would only mean "*"). Patterns and
// paths are bytes: a name that is not UTF-8 matches a pattern that
// spells it.
//   - A pattern matches a path if it matches the path's first elements:
//     a pattern that matches a directory matches everything beneath it.
//   - Deny wins: a path some deny pattern matches is Hidden.
//   - With no allow pattern everything else is Shown. Otherwise a path is
//     Shown if an allow pattern matches it; and it is a Passage if it
//     could lead to a match, that is if it matches the leading elements
//     of a longer allow pattern ("snd/*" makes "snd" a passage, and shows
//     only those of its children "snd/*" matches). A server shows a
//     passage only if it is a directory.
//   - The root is always Shown.
//
// Overrides. Each override has a pattern matched against the whole path
// (not its ancestors) and sets some of mode (permission bits), uid and
// gid; the first override that matches a path applies (View.Override).
package viewpath

import (
	"fmt"
	"path"
	"strings"
)

// Verdict is what a view says of one path.
type Verdict uint8

const (
	Shown   Verdict = iota // admitted (what a server without a view says of everything)
	Passage                // a directory that leads to admitted names; hidden if not a directory
	Hidden                 // outside the view
)

func (v Verdict) String() string {
	switch v {
	case Shown:
		return "shown"
	case Passage:
		return "passage"
	case Hidden:
		return "hidden"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Bounds of a view.
const (
	MaxPatterns   = 1024 // patterns in each list, and overrides
	MaxPatternLen = 4095 // bytes of a pattern
	PermMask      = 07777
	noID          = 1<<32 - 1 // "no change" to chown(2): not an id
)

// Spec is a view before it is compiled: its patterns and overrides as a
// view file or the control API gives them.
type Spec struct {
	Allow     []string
	Deny      []string
	Overrides []Override
}

// Override sets the attributes of the nodes whose path Glob matches; nil
// fields are left as they are.
type Override struct {
	Glob string
	Mode *uint32 // permission bits, at most 07777
	Uid  *uint32
	Gid  *uint32
}

// Error is a spec that does not compile: Field names the offending entry
// ("allow[2]", "overrides[0].glob").
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// View is a compiled view; immutable and safe for concurrent use.
type View struct {
	allow     []pattern
	deny      []pattern
	overrides []override
}

// Attrs is what an override sets: the fields whose Set flag is true.
type Attrs struct {
	Mode, Uid, Gid          uint32
	SetMode, SetUid, SetGid bool
}

// pattern is one glob, split into elements.
type pattern struct {
	elems []elem
}

// elem is one element of a pattern: a literal compared as a string, or a
// glob given to path.Match.
type elem struct {
	s    string
	glob bool
}

func (e *elem) match(name string) bool {
	if !e.glob {
		return e.s == name
	}
	ok, _ := path.Match(e.s, name) // the pattern was checked at compile time
	return ok
}

// covers reports whether p matches the first len(p.elems) elements of
// segs: p matches the path or one of its ancestors.
func (p *pattern) covers(segs []string) bool {
	if len(p.elems) > len(segs) {
		return false
	}
	for i := range p.elems {
		if !p.elems[i].match(segs[i]) {
			return false
		}
	}
	return true
}

// leadsTo reports whether segs, shorter than p, match p's first elements:
// the directory segs could hold a path p matches.
func (p *pattern) leadsTo(segs []string) bool {
	if len(segs) >= len(p.elems) {
		return false
	}
	for i := range segs {
		if !p.elems[i].match(segs[i]) {
			return false
		}
	}
	return true
}

// exact reports whether p matches the whole path segs.
func (p *pattern) exact(segs []string) bool {
	return len(p.elems) == len(segs) && p.covers(segs)
}

type override struct {
	p pattern
	a Attrs
}

// Compile checks spec and compiles it. Patterns must be clean relative
// paths ("snd/*", not "/snd/*", "snd/", "./snd" or "a//b") of valid
// path.Match elements, without NUL, at most MaxPatternLen bytes, at most
// MaxPatterns per list; an override sets at least one of mode (within
// PermMask), uid and gid (not 4294967295). The error is an *Error.
func Compile(spec Spec) (*View, error) {
	v := &View{}
	list := func(field string, l []string) ([]pattern, error) {
		if len(l) > MaxPatterns {
			return nil, &Error{field, fmt.Sprintf("%d patterns, over %d", len(l), MaxPatterns)}
		}
		out := make([]pattern, 0, len(l))
		for i, s := range l {
			p, err := compilePattern(s)
			if err != nil {
				return nil, &Error{fmt.Sprintf("%s[%d]", field, i), err.Error()}
			}
			out = append(out, p)
		}
		return out, nil
	}
	var err error
	if v.allow, err = list("allow", spec.Allow); err != nil {
		return nil, err
	}
	if v.deny, err = list("deny", spec.Deny); err != nil {
		return nil, err
	}
	if len(spec.Overrides) > MaxPatterns {
		return nil, &Error{"overrides", fmt.Sprintf("%d overrides, over %d", len(spec.Overrides), MaxPatterns)}
	}
	for i, o := range spec.Overrides {
		field := fmt.Sprintf("overrides[%d]", i)
		p, err := compilePattern(o.Glob)
		if err != nil {
			return nil, &Error{field + ".glob", err.Error()}
		}
		ov := override{p: p}
		if o.Mode != nil {
			if *o.Mode > PermMask {
				return nil, &Error{field + ".mode", fmt.Sprintf("%#o has bits outside the permission bits 07777", *o.Mode)}
			}
			ov.a.Mode, ov.a.SetMode = *o.Mode, true
		}
		for _, id := range []struct {
			name string
			v    *uint32
			dst  *uint32
			set  *bool
		}{{"uid", o.Uid, &ov.a.Uid, &ov.a.SetUid}, {"gid", o.Gid, &ov.a.Gid, &ov.a.SetGid}} {
			if id.v == nil {
				continue
			}
			if *id.v == noID {
				return nil, &Error{field + "." + id.name, "4294967295 is not an id"}
			}
			*id.dst, *id.set = *id.v, true
		}
		if !ov.a.SetMode && !ov.a.SetUid && !ov.a.SetGid {
			return nil, &Error{field, "sets none of mode, uid, gid"}
		}
		v.overrides = append(v.overrides, ov)
	}
	return v, nil
}

func compilePattern(s string) (pattern, error) {
	switch {
	case s == "":
		return pattern{}, fmt.Errorf("an empty pattern")
	case len(s) > MaxPatternLen:
		return pattern{}, fmt.Errorf("a pattern over %d bytes", MaxPatternLen)
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/"):
		return pattern{}, fmt.Errorf("pattern %q: patterns are relative to the mount's root, without a leading or trailing slash", s)
	case strings.IndexByte(s, 0) >= 0:
		return pattern{}, fmt.Errorf("pattern %q has a NUL byte", s)
	}
	var p pattern
	for _, e := range strings.Split(s, "/") {
		switch {
		case e == "":
			return pattern{}, fmt.Errorf("pattern %q has an empty element", s)
		case e == "." || e == "..":
			return pattern{}, fmt.Errorf("pattern %q has a %q element", s, e)
		case strings.Contains(e, "**"):
			return pattern{}, fmt.Errorf("pattern %q: ** is not supported (* matches one element; a pattern that matches a directory matches everything beneath it)", s)
		}
		if _, err := path.Match(e, ""); err != nil {
			return pattern{}, fmt.Errorf("pattern %q: element %q: %v", s, e, err)
		}
		p.elems = append(p.elems, elem{s: e, glob: strings.ContainsAny(e, `*?[\`)})
	}
	return p, nil
}

// MaxStackDepth is the path depth a caller can split into a stack array
// without allocating: var buf [MaxStackDepth]string; Split(p, buf[:0]).
const MaxStackDepth = 16

// Split appends the elements of p (a clean relative path, "" for the
// root) to buf and returns it.
func Split(p string, buf []string) []string {
	if p == "" {
		return buf
	}
	for {
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return append(buf, p)
		}
		buf = append(buf, p[:i])
		p = p[i+1:]
	}
}

// Verdict is what v says of the path whose elements are segs.
func (v *View) Verdict(segs []string) Verdict {
	if len(segs) == 0 {
		return Shown // the root
	}
	for i := range v.deny {
		if v.deny[i].covers(segs) {
			return Hidden
		}
	}
	if len(v.allow) == 0 {
		return Shown
	}
	out := Hidden
	for i := range v.allow {
		p := &v.allow[i]
		if p.covers(segs) {
			return Shown
		}
		if out == Hidden && p.leadsTo(segs) {
			out = Passage
		}
	}
	return out
}

// VerdictPath is what v says of the path p.
func (v *View) VerdictPath(p string) Verdict {
	var buf [MaxStackDepth]string
	return v.Verdict(Split(p, buf[:0]))
}

// HasOverrides reports whether v has overrides: Override is a no-op
// otherwise.
func (v *View) HasOverrides() bool { return len(v.overrides) > 0 }

// Override returns what the first override matching the whole path segs
// sets; ok false if none matches (and for the root).
func (v *View) Override(segs []string) (a Attrs, ok bool) {
	if len(segs) == 0 {
		return Attrs{}, false
	}
	for i := range v.overrides {
		if v.overrides[i].p.exact(segs) {
			return v.overrides[i].a, true
		}
	}
	return Attrs{}, false
}
