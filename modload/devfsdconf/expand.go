package devfsdconf

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
)

// CompileERE compiles a POSIX extended regular expression with Go's
// regexp.CompilePOSIX (RE2 syntax restricted to POSIX ERE, leftmost-longest
// matching), after two translations and one refusal:
//
//   - Inside a bracket expression a backslash is an ordinary character in
//     POSIX ("[\.]" matches a backslash or a dot); RE2 reads it as an
//     escape, so it is doubled before compiling.
//   - Equivalence classes ("[[=a=]]") and collating symbols ("[[.a.]]")
//     have no RE2 form and are refused (RE2 would accept them as a plain
//     set of characters, silently matching something else).
//   - Back-references ("\1" in the pattern) do not exist in RE2 (nor in
//     POSIX ERE, though glibc accepts them) and are refused.
//
// Everything else is RE2's reading of the POSIX syntax: "\d", "\w" and the
// other Perl escapes are errors, as is a repeat count over 1000; "." does
// not match a newline (no device name holds one); the text is read as
// UTF-8 (device names are ASCII).
func CompileERE(pattern string) (*regexp.Regexp, error) {
	tr, err := translateERE(pattern)
	if err != nil {
		return nil, err
	}
	re, err := regexp.CompilePOSIX(tr)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	return re, nil
}

// translateERE rewrites what POSIX and RE2 read differently (see
// CompileERE).
func translateERE(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case '\\':
			if i+1 < len(p) && p[i+1] >= '1' && p[i+1] <= '9' {
				return "", fmt.Errorf("back-reference \\%c: not supported (RE2 has none)", p[i+1])
			}
			b.WriteByte(c)
			if i+1 < len(p) {
				i++
				b.WriteByte(p[i])
			}
		case '[':
			j, set, err := bracket(p, i)
			if err != nil {
				return "", err
			}
			b.WriteString(set)
			i = j
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// bracket reads the bracket expression starting at p[i] == '[' and
// returns the index of its closing ']' and its RE2 form. An unterminated
// one is returned as is, for RE2 to report.
func bracket(p string, i int) (int, string, error) {
	var b strings.Builder
	b.WriteByte('[')
	j := i + 1
	if j < len(p) && p[j] == '^' {
		b.WriteByte('^')
		j++
	}
	if j < len(p) && p[j] == ']' { // a leading ']' is literal
		b.WriteString(`\]`)
		j++
	}
	for ; j < len(p); j++ {
		c := p[j]
		switch {
		case c == ']':
			b.WriteByte(']')
			return j, b.String(), nil
		case c == '[' && j+1 < len(p) && (p[j+1] == '=' || p[j+1] == '.'):
			kind := "equivalence class [=...=]"
			if p[j+1] == '.' {
				kind = "collating symbol [.....]"
			}
			return 0, "", fmt.Errorf("%s in a bracket expression: not supported (RE2 has none)", kind)
		case c == '[' && j+1 < len(p) && p[j+1] == ':':
			end := strings.Index(p[j+2:], ":]")
			if end < 0 {
				return len(p) - 1, p[i:], nil
			}
			b.WriteString(p[j : j+2+end+2])
			j += 2 + end + 1
		case c == '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
	return len(p) - 1, p[i:], nil // unterminated: RE2 says so
}

// Vars are the values the variables of an action's arguments expand to.
type Vars struct {
	Devname  string // the node's name relative to the mount
	Devpath  string // Mntpnt/Devname
	Mntpnt   string // the mount point
	Hostname string // "" : os.Hostname
	UID, GID uint32
	Mode     uint32 // st_mode: type and permission bits, printed in octal
	PID      int    // $$; 0: os.Getpid
	// Getenv reads the environment; nil: os.LookupEnv.
	Getenv func(string) (string, bool)
	// NoNode: there is no node (INCLUDE, RESTORE): $devname and the other
	// node variables are unknown.
	NoNode bool
}

func (v *Vars) lookup(name string) (string, bool) {
	switch name {
	case "mntpnt", "mntpt": // busybox's devfsd spelled it mntpt
		if v.Mntpnt != "" {
			return v.Mntpnt, true
		}
	case "hostname":
		if v.Hostname != "" {
			return v.Hostname, true
		}
		h, err := os.Hostname()
		return h, err == nil
	}
	if !v.NoNode {
		switch name {
		case "devname":
			return v.Devname, true
		case "devpath":
			return v.Devpath, true
		case "uid":
			return strconv.FormatUint(uint64(v.UID), 10), true
		case "gid":
			return strconv.FormatUint(uint64(v.GID), 10), true
		case "mode":
			return strconv.FormatUint(uint64(v.Mode), 8), true
		}
	}
	getenv := v.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	return getenv(name)
}

// maxExpansion bounds an expanded argument.
const maxExpansion = 4096

// Expand expands s as devfsd did: first the variables ($name, ${name},
// ${name:-word}, $$, ~ and ~user at the start of s), then the regular
// expression's groups (\0 to \9; groups[i] is group i) with \\ for a
// backslash; any other backslash sequence is dropped, and a group the
// expression does not have expands to nothing. An unknown variable is an
// error (the action does not run), as in devfsd.
func Expand(s string, v *Vars, groups []string) (string, error) {
	out, err := expandVars(s, v, 0)
	if err != nil {
		return "", err
	}
	return expandGroups(out, groups), nil
}

// CheckTemplate reports a syntax error in s's variables (an unterminated
// ${, a bad name) without expanding anything.
func CheckTemplate(s string) error {
	_, err := expandVars(s, nil, 0)
	return err
}

func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// expandVars expands the variables of s; with v nil it only checks the
// syntax.
func expandVars(s string, v *Vars, depth int) (string, error) {
	if depth > 8 {
		return "", errors.New("${...:-...} nested too deep")
	}
	var b strings.Builder
	get := func(name string) (string, error) {
		if v == nil {
			return "", nil
		}
		val, ok := v.lookup(name)
		if !ok {
			return "", fmt.Errorf("variable %q is not set", name)
		}
		return val, nil
	}
	i := 0
	if strings.HasPrefix(s, "~") {
		end := strings.IndexByte(s, '/')
		if end < 0 {
			end = len(s)
		}
		name := s[1:end]
		if v != nil {
			var home string
			if name == "" {
				h, err := get("HOME")
				if err != nil {
					return "", err
				}
				home = h
			} else {
				u, err := user.Lookup(name)
				if err != nil {
					return "", fmt.Errorf("~%s: no such user", name)
				}
				home = u.HomeDir
			}
			b.WriteString(home)
		}
		i = end
	}
	for ; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			return "", errors.New("a lone $ at the end")
		}
		switch {
		case s[i] == '$':
			pid := 0
			if v != nil {
				pid = v.PID
				if pid == 0 {
					pid = os.Getpid()
				}
			}
			b.WriteString(strconv.Itoa(pid))
		case s[i] == '{':
			end := matchBrace(s, i)
			if end < 0 {
				return "", fmt.Errorf("%q: no closing }", s[i-1:])
			}
			inner := s[i+1 : end]
			name, word, def := strings.Cut(inner, ":-")
			if name == "" || strings.IndexFunc(name, func(r rune) bool { return r > 0x7f || !isNameByte(byte(r)) }) >= 0 {
				return "", fmt.Errorf("${%s}: bad variable name (want ${NAME} or ${NAME:-WORD})", inner)
			}
			var val string
			ok := false
			if v != nil {
				val, ok = v.lookup(name)
			}
			switch {
			case ok:
				b.WriteString(val)
			case def:
				w, err := expandVars(word, v, depth+1)
				if err != nil {
					return "", err
				}
				b.WriteString(w)
			default:
				if _, err := get(name); err != nil {
					return "", err
				}
			}
			i = end
		case isNameByte(s[i]):
			j := i
			for j < len(s) && isNameByte(s[j]) {
				j++
			}
			val, err := get(s[i:j])
			if err != nil {
				return "", err
			}
			b.WriteString(val)
			i = j - 1
		default:
			return "", fmt.Errorf("$%c: not a variable (want $NAME, ${NAME}, ${NAME:-WORD} or $$)", s[i])
		}
		if b.Len() > maxExpansion {
			return "", fmt.Errorf("expands to more than %d bytes", maxExpansion)
		}
	}
	return b.String(), nil
}

// matchBrace returns the index of the '}' closing the '{' at s[i],
// counting nested braces, or -1.
func matchBrace(s string, i int) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// expandGroups replaces \0..\9 with the groups and \\ with \; other
// backslash sequences are dropped (devfsd's expand_regexp).
func expandGroups(s string, groups []string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		switch d := s[i]; {
		case d == '\\':
			b.WriteByte('\\')
		case d >= '0' && d <= '9':
			if n := int(d - '0'); n < len(groups) {
				b.WriteString(groups[n])
			}
		}
	}
	return b.String()
}

// isRE2Only tells whether a CompileERE error is one glibc's
// regcomp(REG_EXTENDED), which devfsd used, would have accepted: the
// expression is left out here for want of support, not because devfsd
// would have exited on it (unbalanced parentheses and brackets, bad
// ranges and classes are errors to both).
func isRE2Only(err error) bool {
	msg := err.Error()
	for _, both := range []string{"missing closing )", "unexpected )", "missing closing ]", "invalid character class"} {
		if strings.Contains(msg, both) {
			return false
		}
	}
	return true
}
