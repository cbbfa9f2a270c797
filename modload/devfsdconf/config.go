// Package devfsdconf reads devfsd.conf(5) and runs its rules: the rules
// engine of `devfsd helper`, the reference helper of DESIGN.md section 5.
//
// # The file
//
// One line is one entry; blank lines and lines whose first non-blank
// character is '#' are skipped. Words are separated by blanks and there is
// no quoting, as in devfsd (which read lines with sscanf's %s). An entry is
//
//	EVENT  REGEX  ACTION  [ARGS...]
//
// or one of the directives
//
//	CLEAR_CONFIG                forget every rule read so far
//	INCLUDE PATH                read a file, or every file of a directory
//	OPTIONAL_INCLUDE PATH       the same, and a missing PATH is no error
//	RESTORE DIR                 restore saved nodes from DIR (see COPY)
//
// EVENT is REGISTER, UNREGISTER, LOOKUP, CHANGE, CREATE or DELETE (and
// ASYNC_OPEN and CLOSE, which parse but are never delivered: over FUSE an
// open of a device node goes straight to its driver). Keywords are matched
// without regard to case, as devfsd did. REGEX is a POSIX extended regular
// expression matched, unanchored, against the node's name relative to the
// mount ("tty1", "snd/pcmC0D0p"); see [CompileERE] for how it maps onto Go's
// RE2. For each event every matching entry runs, in file order; IGNORE
// stops the processing of that event.
//
// The actions are PERMISSIONS USER.GROUP MODE, EXECUTE PROGRAM ARGS...,
// MODLOAD, COPY SRC DST, IGNORE, and MKOLDCOMPAT, RMOLDCOMPAT,
// MKNEWCOMPAT, RMNEWCOMPAT (compatibility symlinks, see [OldName] and
// [NewName]). CFUNCTION and MFUNCTION, which called functions in shared
// objects, are rejected with a message naming the line.
//
// Arguments are expanded when the entry runs ([Expand]): the variables
// $devname, $devpath, $mntpnt, $uid, $gid, $mode, $hostname, $$, the
// environment, ${VAR} and ${VAR:-WORD}, ~ and ~USER, then \0 to \9 for the
// regular expression's groups and \\ for a backslash.
//
// # Errors
//
// A malformed line is reported as FILE:LINE: message ([Diag]) and left
// out; the rest of the file still applies. Only what makes the whole
// configuration unusable is an error of [Load]: the file cannot be read, an
// INCLUDE names nothing, includes nest too deep.
package devfsdconf

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Kind is an event type.
type Kind uint8

// The events of devfsd.conf. AsyncOpen and Close parse but are never
// delivered over FUSE.
const (
	Register Kind = iota + 1
	Unregister
	AsyncOpen
	Close
	Lookup
	Change
	Create
	Delete
)

var kindNames = map[Kind]string{
	Register: "REGISTER", Unregister: "UNREGISTER", AsyncOpen: "ASYNC_OPEN", Close: "CLOSE",
	Lookup: "LOOKUP", Change: "CHANGE", Create: "CREATE", Delete: "DELETE",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ParseKind maps an event name (any case) to its Kind.
func ParseKind(s string) (Kind, bool) {
	for k, n := range kindNames {
		if strings.EqualFold(s, n) {
			return k, true
		}
	}
	return 0, false
}

// Deliverable reports whether events of kind k ever reach the helper.
func (k Kind) Deliverable() bool { return k != AsyncOpen && k != Close && k != 0 }

// Action is what a rule does.
type Action uint8

// The actions.
const (
	Permissions Action = iota + 1
	Execute
	Modload
	Copy
	Ignore
	MkOldCompat
	RmOldCompat
	MkNewCompat
	RmNewCompat
)

var actionNames = map[Action]string{
	Permissions: "PERMISSIONS", Execute: "EXECUTE", Modload: "MODLOAD", Copy: "COPY", Ignore: "IGNORE",
	MkOldCompat: "MKOLDCOMPAT", RmOldCompat: "RMOLDCOMPAT", MkNewCompat: "MKNEWCOMPAT", RmNewCompat: "RMNEWCOMPAT",
}

func (a Action) String() string {
	if s, ok := actionNames[a]; ok {
		return s
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Pos is where an entry was read.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Diag is a problem with one line: an error (the line was left out) or a
// warning (it was kept).
type Diag struct {
	Pos     Pos
	Msg     string
	Warning bool
}

func (d Diag) Error() string {
	if d.Warning {
		return d.Pos.String() + ": warning: " + d.Msg
	}
	return d.Pos.String() + ": " + d.Msg
}

// Rule is one EVENT REGEX ACTION entry.
type Rule struct {
	Pos     Pos
	Event   Kind
	Pattern string // as written
	Action  Action
	// Args are the action's arguments as written (EXECUTE: the program
	// and its arguments; COPY: source and destination), expanded when the
	// rule runs.
	Args []string
	// PERMISSIONS: the owner and group (-1: leave as is) and the mode
	// (permission bits, setuid, setgid and sticky).
	UID, GID int64
	Mode     uint32

	re *regexp.Regexp
}

// Match reports whether the rule's regular expression matches name, and
// its groups (group 0 the whole match; "" for a group that took no part).
func (r *Rule) Match(name string) ([]string, bool) {
	m := r.re.FindStringSubmatchIndex(name)
	if m == nil {
		return nil, false
	}
	groups := make([]string, len(m)/2)
	for i := range groups {
		if m[2*i] >= 0 {
			groups[i] = name[m[2*i]:m[2*i+1]]
		}
	}
	return groups, true
}

// Restore is a RESTORE directive.
type Restore struct {
	Pos Pos
	Dir string // expanded
}

// Config is a parsed configuration.
type Config struct {
	Rules    []Rule
	Restores []Restore
	// Diags are the lines left out (errors) and those kept with a
	// warning, in the order read.
	Diags []Diag
	// Files are the files read, in order.
	Files []string
}

// Errors returns the diagnostics that are errors.
func (c *Config) Errors() []Diag {
	var out []Diag
	for _, d := range c.Diags {
		if !d.Warning {
			out = append(out, d)
		}
	}
	return out
}

// Events returns the set of event kinds some rule listens to.
func (c *Config) Events() map[Kind]bool {
	m := map[Kind]bool{}
	for _, r := range c.Rules {
		m[r.Event] = true
	}
	return m
}

// Files reads configuration files.
type Files interface {
	// Read returns the content of the regular file at path, or, for a
	// directory, its entry names (sorted, without hidden ones) and
	// isDir. A missing path is an error for which errors.Is(err,
	// fs.ErrNotExist) holds.
	Read(path string) (data []byte, entries []string, isDir bool, err error)
}

// MaxFileSize is the largest configuration file read.
const MaxFileSize = 1 << 20

// maxDepth bounds INCLUDE nesting, and maxFiles the files one
// configuration reads (a file that includes itself twice would otherwise
// be read 2^maxDepth times).
const (
	maxDepth = 16
	maxFiles = 64
)

// OSFiles reads from the file system: regular files of at most
// MaxFileSize and directories only (an INCLUDE of /dev/zero is an error,
// not a hang).
type OSFiles struct{}

// Read implements Files.
func (OSFiles) Read(path string) ([]byte, []string, bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, false, err
	}
	if fi.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, nil, true, err
		}
		var names []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		return nil, names, true, nil
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, false, fmt.Errorf("%s is not a regular file or a directory", path)
	}
	if fi.Size() > MaxFileSize {
		return nil, nil, false, fmt.Errorf("%s is over %d bytes", path, MaxFileSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, nil, false, err
	}
	if len(b) > MaxFileSize {
		return nil, nil, false, fmt.Errorf("%s is over %d bytes", path, MaxFileSize)
	}
	return b, nil, false, nil
}

// Options tells the parser about its surroundings.
type Options struct {
	// Files reads the files; default OSFiles.
	Files Files
	// Mountpoint is $mntpnt in INCLUDE and RESTORE paths.
	Mountpoint string
	// LookupUser and LookupGroup resolve PERMISSIONS names; default the
	// system's (os/user).
	LookupUser, LookupGroup func(name string) (uint32, error)
	// Getenv reads the environment for INCLUDE and RESTORE paths; default
	// os.LookupEnv.
	Getenv func(string) (string, bool)
}

func (o *Options) defaults() {
	if o.Files == nil {
		o.Files = OSFiles{}
	}
	if o.LookupUser == nil {
		o.LookupUser = func(name string) (uint32, error) {
			u, err := user.Lookup(name)
			if err != nil {
				return 0, err
			}
			v, err := strconv.ParseUint(u.Uid, 10, 32)
			return uint32(v), err
		}
	}
	if o.LookupGroup == nil {
		o.LookupGroup = func(name string) (uint32, error) {
			g, err := user.LookupGroup(name)
			if err != nil {
				return 0, err
			}
			v, err := strconv.ParseUint(g.Gid, 10, 32)
			return uint32(v), err
		}
	}
	if o.Getenv == nil {
		o.Getenv = os.LookupEnv
	}
}

// Load reads the configuration file at path (and what it includes).
func Load(path string, opts Options) (*Config, error) {
	opts.defaults()
	p := &parser{opts: opts, cfg: &Config{}}
	if err := p.include(path, false, 0, Pos{}); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

// Parse parses data as the file name (INCLUDE directives read through
// opts.Files).
func Parse(name string, data []byte, opts Options) (*Config, error) {
	opts.defaults()
	p := &parser{opts: opts, cfg: &Config{}}
	p.cfg.Files = append(p.cfg.Files, name)
	if err := p.parse(name, data, 0); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

type parser struct {
	opts  Options
	cfg   *Config
	files int                       // files read so far
	res   map[string]*regexp.Regexp // compiled expressions, by pattern
}

func (p *parser) include(path string, optional bool, depth int, from Pos) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: INCLUDE nested more than %d deep (a loop?)", from, maxDepth)
	}
	data, entries, isDir, err := p.opts.Files.Read(path)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if from.File != "" {
			return fmt.Errorf("%s: %w", from, err)
		}
		return err
	}
	if p.files++; p.files > maxFiles {
		return fmt.Errorf("%s: more than %d files read (INCLUDE loops?)", from, maxFiles)
	}
	if isDir {
		for _, e := range entries {
			if err := p.include(filepath.Join(path, e), optional, depth+1, from); err != nil {
				return err
			}
		}
		return nil
	}
	p.cfg.Files = append(p.cfg.Files, path)
	return p.parse(path, data, depth)
}

func (p *parser) parse(name string, data []byte, depth int) error {
	for i, line := range strings.Split(string(data), "\n") {
		pos := Pos{name, i + 1}
		line = strings.TrimRight(line, "\r")
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if err := p.line(pos, f, depth); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) bad(pos Pos, format string, a ...any) {
	p.cfg.Diags = append(p.cfg.Diags, Diag{Pos: pos, Msg: fmt.Sprintf(format, a...)})
}

func (p *parser) warn(pos Pos, format string, a ...any) {
	p.cfg.Diags = append(p.cfg.Diags, Diag{Pos: pos, Msg: fmt.Sprintf(format, a...), Warning: true})
}

// line parses one entry. Its error is fatal (an INCLUDE that fails);
// what is wrong with the line itself goes to Diags.
func (p *parser) line(pos Pos, f []string, depth int) error {
	word := strings.ToUpper(f[0])
	switch word {
	case "CLEAR_CONFIG":
		if len(f) > 1 {
			p.warn(pos, "CLEAR_CONFIG takes no arguments; %q ignored", strings.Join(f[1:], " "))
		}
		p.cfg.Rules = nil
		return nil
	case "INCLUDE", "OPTIONAL_INCLUDE", "RESTORE":
		if len(f) != 2 {
			p.bad(pos, "%s takes one path, got %d words", word, len(f)-1)
			return nil
		}
		path, err := p.expandPath(f[1])
		if err != nil {
			p.bad(pos, "%s %s: %v", word, f[1], err)
			return nil
		}
		if word == "RESTORE" {
			if !filepath.IsAbs(path) {
				p.bad(pos, "RESTORE %s: not an absolute path", path)
				return nil
			}
			p.cfg.Restores = append(p.cfg.Restores, Restore{Pos: pos, Dir: filepath.Clean(path)})
			return nil
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(pos.File), path)
		}
		return p.include(path, word == "OPTIONAL_INCLUDE", depth+1, pos)
	}
	ev, ok := ParseKind(f[0])
	if !ok {
		p.bad(pos, "%q is not an event (REGISTER, UNREGISTER, LOOKUP, CHANGE, CREATE, DELETE, ASYNC_OPEN, CLOSE) or a directive (CLEAR_CONFIG, INCLUDE, OPTIONAL_INCLUDE, RESTORE)", f[0])
		return nil
	}
	if len(f) < 3 {
		p.bad(pos, "%s needs a regular expression and an action", f[0])
		return nil
	}
	r := Rule{Pos: pos, Event: ev, Pattern: f[1], Args: f[3:], UID: -1, GID: -1}
	re, err := p.res[f[1]], error(nil)
	if re == nil {
		re, err = CompileERE(f[1])
		if p.res == nil {
			p.res = map[string]*regexp.Regexp{}
		}
		if err == nil {
			p.res[f[1]] = re
		}
	}
	if err != nil {
		p.bad(pos, "regular expression %q: %v", f[1], err)
		return nil
	}
	r.re = re
	act := strings.ToUpper(f[2])
	switch act {
	case "CFUNCTION", "MFUNCTION":
		p.bad(pos, "%s calls a function in a shared object, which devfsd helper cannot load: use EXECUTE with a program instead", act)
		return nil
	}
	found := false
	for a, n := range actionNames {
		if n == act {
			r.Action, found = a, true
		}
	}
	if !found {
		p.bad(pos, "%q is not an action (PERMISSIONS, EXECUTE, MODLOAD, COPY, IGNORE, MKOLDCOMPAT, RMOLDCOMPAT, MKNEWCOMPAT, RMNEWCOMPAT)", f[2])
		return nil
	}
	switch r.Action {
	case Permissions:
		if len(r.Args) != 2 {
			p.bad(pos, "PERMISSIONS takes USER.GROUP and MODE, got %d words", len(r.Args))
			return nil
		}
		if err := p.permissions(&r); err != nil {
			p.bad(pos, "PERMISSIONS %s: %v", strings.Join(r.Args, " "), err)
			return nil
		}
	case Execute:
		if len(r.Args) == 0 {
			p.bad(pos, "EXECUTE needs a program")
			return nil
		}
	case Copy:
		if len(r.Args) != 2 {
			p.bad(pos, "COPY takes a source and a destination, got %d words", len(r.Args))
			return nil
		}
	default:
		if len(r.Args) > 0 {
			p.warn(pos, "%s takes no arguments; %q ignored", r.Action, strings.Join(r.Args, " "))
			r.Args = nil
		}
	}
	for _, a := range r.Args {
		if err := CheckTemplate(a); err != nil {
			p.bad(pos, "%s argument %q: %v", r.Action, a, err)
			return nil
		}
	}
	if !ev.Deliverable() {
		p.warn(pos, "%s events are never delivered: over FUSE an open or close of a device node goes straight to its driver; the entry is kept but never runs", ev)
	}
	if ev == Lookup && r.Action == Copy {
		p.warn(pos, "COPY on LOOKUP: the name does not exist yet when a LOOKUP runs")
	}
	p.cfg.Rules = append(p.cfg.Rules, r)
	return nil
}

// permissions parses USER.GROUP and MODE into r.
func (p *parser) permissions(r *Rule) error {
	owner := r.Args[0]
	var u, g string
	var ok bool
	if u, g, ok = strings.Cut(owner, ":"); !ok {
		if u, g, ok = strings.Cut(owner, "."); !ok {
			return fmt.Errorf("owner %q: want USER.GROUP", owner)
		}
	}
	var err error
	if r.UID, err = id(u, p.opts.LookupUser, "user"); err != nil {
		return err
	}
	if r.GID, err = id(g, p.opts.LookupGroup, "group"); err != nil {
		return err
	}
	r.Mode, err = ParseMode(r.Args[1])
	return err
}

// id resolves a user or group: a number, -1 (leave as is), or a name.
func id(s string, lookup func(string) (uint32, error), what string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty %s", what)
	}
	if s == "-1" {
		return -1, nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || v == 1<<32-1 {
			return 0, fmt.Errorf("%s %q is not a number below 4294967295", what, s)
		}
		return int64(v), nil
	}
	v, err := lookup(s)
	if err != nil {
		return 0, fmt.Errorf("unknown %s %q", what, s)
	}
	return int64(v), nil
}

// ParseMode reads a PERMISSIONS mode: octal ("0660", "2775") or nine
// characters of ls -l ("rw-rw----"), as devfsd did.
func ParseMode(s string) (uint32, error) {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		v, err := strconv.ParseUint(s, 8, 32)
		if err != nil || v > 07777 {
			return 0, fmt.Errorf("mode %q: want octal permission bits, at most 07777", s)
		}
		return uint32(v), nil
	}
	if len(s) != 9 {
		return 0, fmt.Errorf("mode %q: want octal (0660) or nine rwx characters (rw-rw----)", s)
	}
	var m uint32
	for i := 0; i < 9; i++ {
		want := "rwx"[i%3]
		switch s[i] {
		case want:
			m |= 1 << (8 - i)
		case '-':
		default:
			return 0, fmt.Errorf("mode %q: %q at %d, want %q or '-'", s, s[i], i+1, want)
		}
	}
	return m, nil
}

// expandPath expands an INCLUDE or RESTORE path: environment variables,
// $mntpnt, $hostname, ~ (no node variables: there is no event).
func (p *parser) expandPath(s string) (string, error) {
	v := &Vars{Mntpnt: p.opts.Mountpoint, Getenv: p.opts.Getenv, NoNode: true}
	return Expand(s, v, nil)
}
