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
// MODLOAD, COPY SRC DST, IGNORE, MKOLDCOMPAT, RMOLDCOMPAT, MKNEWCOMPAT,
// RMNEWCOMPAT (compatibility symlinks, see [OldName] and [NewName]), and
// CFUNCTION GLOBAL mksymlink, symlink and unlink (devfsd's own and libc's
// functions of paths). CFUNCTION of a shared object, any other GLOBAL
// function, and MFUNCTION are left out with a message naming the line.
//
// Arguments are expanded when the entry runs ([Expand]): the variables
// $devname, $devpath, $mntpnt, $uid, $gid, $mode, $hostname, $$, the
// environment, ${VAR} and ${VAR:-WORD}, ~ and ~USER, then \0 to \9 for the
// regular expression's groups and \\ for a backslash.
//
// # Errors
//
// A malformed line is reported as FILE:LINE: message ([Diag]) and left
// out; the rest of the file still applies, and so does the rest of the
// configuration after an INCLUDE that names nothing. [Diag.Refused] tells
// the lines devfsd 1.3.25 itself would have exited on from those left out
// here only; [Config.Lines] and [WriteReport] say, line by line, what runs
// (`devfsd helper --check`). Only what makes the whole configuration
// unusable is an error of [Load]: the file itself cannot be read, includes
// nest too deep or read too many files.
package devfsdconf

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/dcache"
)

// Kind is an event type: the namespace's own (dcache.Kind), of which a
// devfsd.conf names the devfsd events.
type Kind = dcache.Kind

// The events of devfsd.conf. AsyncOpen and Close parse but are never
// delivered over FUSE.
const (
	Register   = dcache.KindRegister
	Unregister = dcache.KindUnregister
	AsyncOpen  = dcache.KindAsyncOpen
	Close      = dcache.KindClose
	Lookup     = dcache.KindLookup
	Change     = dcache.KindChange
	Create     = dcache.KindCreate
	Delete     = dcache.KindDelete
)

// ParseKind maps a devfsd event name (any case) to its Kind; the
// daemon's internal kinds (EXPIRE, TOUCH) are no devfsd event and are
// refused.
func ParseKind(s string) (Kind, bool) {
	k, ok := dcache.ParseKind(s)
	if !ok || k.Internal() {
		return 0, false
	}
	return k, true
}

// Deliverable reports whether events of kind k ever reach the helper.
func Deliverable(k Kind) bool {
	return k != AsyncOpen && k != Close && k != 0 && !k.Internal()
}

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
	// Mksymlink, Symlink and Unlink are devfsd's CFUNCTION GLOBAL
	// mksymlink, symlink and unlink: the three functions of devfsd's own
	// symbol table and libc whose arguments are all paths. A relative path
	// is relative to the mount point (devfsd ran in it).
	Mksymlink
	Symlink
	Unlink
)

var actionNames = map[Action]string{
	Permissions: "PERMISSIONS", Execute: "EXECUTE", Modload: "MODLOAD", Copy: "COPY", Ignore: "IGNORE",
	MkOldCompat: "MKOLDCOMPAT", RmOldCompat: "RMOLDCOMPAT", MkNewCompat: "MKNEWCOMPAT", RmNewCompat: "RMNEWCOMPAT",
	Mksymlink: "CFUNCTION GLOBAL mksymlink", Symlink: "CFUNCTION GLOBAL symlink", Unlink: "CFUNCTION GLOBAL unlink",
}

// globalFuncs are the CFUNCTION GLOBAL functions provided, and how many
// arguments each takes.
var globalFuncs = map[string]struct {
	a    Action
	args int
}{"mksymlink": {Mksymlink, 2}, "symlink": {Symlink, 2}, "unlink": {Unlink, 1}}

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
	// Refused: devfsd 1.3.25 itself would not have started with this
	// line (it exited on it); other errors are lines devfsd accepted and
	// this package leaves out for safety or for want of support.
	Refused bool
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

	re   *regexp.Regexp
	line int // index in Config.Lines
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
	// Lines are the lines read that are not blank or comments, in the
	// order read, each with what it does or why it is left out: the
	// report of [Lint].
	Lines []Line
}

// Line is one entry line as read, and what became of it.
type Line struct {
	Pos  Pos
	Text string // the line, blanks at either end trimmed
	// Does says what the line does when it is used: a rule's event,
	// expression and resolved action, or a directive's effect.
	Does string
	// LeftOut says why the line is not used; "" if it is.
	LeftOut string
	// Refused: devfsd 1.3.25 would have exited on this line (see Diag).
	Refused  bool
	Warnings []string
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
	p := &parser{opts: opts, cfg: &Config{}, cur: -1}
	if err := p.include(path, false, 0, Pos{}); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

// Parse parses data as the file name (INCLUDE directives read through
// opts.Files).
func Parse(name string, data []byte, opts Options) (*Config, error) {
	opts.defaults()
	p := &parser{opts: opts, cfg: &Config{}, cur: -1}
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
	cur   int                       // index in cfg.Lines of the line being parsed; -1 before the first
}

// include reads path for the INCLUDE (or OPTIONAL_INCLUDE) at from, or as
// the configuration itself when from is zero. A path that cannot be read
// is an error only for the configuration itself; for an INCLUDE it is
// reported at the INCLUDE's line and the rest is read (a missing
// OPTIONAL_INCLUDE is no error at all).
func (p *parser) include(path string, optional bool, depth int, from Pos) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: INCLUDE nested more than %d deep (a loop?)", from, maxDepth)
	}
	data, entries, isDir, err := p.opts.Files.Read(path)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if from.File == "" {
			return err
		}
		if errors.Is(err, fs.ErrNotExist) {
			// busybox's devfsd (1.3.25's port) exits here; a missing
			// package directory must not take every other rule with it.
			p.refuse(from, "INCLUDE %s: no such file or directory; left out, the rest of the configuration is loaded", path)
		} else {
			p.bad(from, "INCLUDE %s: %v; left out, the rest of the configuration is loaded", path, err)
		}
		return nil
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

// maxWords is how many words devfsd read of a line (sscanf with ten %s),
// and maxLine the longest line it read whole (fgets into 255 bytes).
const (
	maxWords = 10
	maxLine  = 254
)

func (p *parser) parse(name string, data []byte, depth int) error {
	for i, line := range strings.Split(string(data), "\n") {
		pos := Pos{name, i + 1}
		line = strings.TrimRight(line, "\r")
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		p.cfg.Lines = append(p.cfg.Lines, Line{Pos: pos, Text: strings.TrimSpace(line)})
		p.cur = len(p.cfg.Lines) - 1
		if len(line) > maxLine {
			p.warn(pos, "the line is %d bytes long: devfsd read lines in pieces of %d bytes, this reads it whole", len(line), maxLine)
		}
		if err := p.line(pos, f, depth); err != nil {
			return err
		}
	}
	return nil
}

// lineAt returns the Line being parsed if it is at pos.
func (p *parser) lineAt(pos Pos) *Line {
	if p.cur >= 0 && p.cfg.Lines[p.cur].Pos == pos {
		return &p.cfg.Lines[p.cur]
	}
	for i := range p.cfg.Lines {
		if p.cfg.Lines[i].Pos == pos {
			return &p.cfg.Lines[i]
		}
	}
	return nil
}

func (p *parser) diag(d Diag) {
	p.cfg.Diags = append(p.cfg.Diags, d)
	if l := p.lineAt(d.Pos); l != nil {
		switch {
		case d.Warning:
			l.Warnings = append(l.Warnings, d.Msg)
		case l.LeftOut == "":
			l.LeftOut, l.Refused = d.Msg, d.Refused
		}
	}
}

// bad leaves the line out: devfsd accepted it, this package does not.
func (p *parser) bad(pos Pos, format string, a ...any) {
	p.diag(Diag{Pos: pos, Msg: fmt.Sprintf(format, a...)})
}

// refuse leaves out a line devfsd itself would have exited on.
func (p *parser) refuse(pos Pos, format string, a ...any) {
	p.diag(Diag{Pos: pos, Msg: fmt.Sprintf(format, a...), Refused: true})
}

func (p *parser) warn(pos Pos, format string, a ...any) {
	p.diag(Diag{Pos: pos, Msg: fmt.Sprintf(format, a...), Warning: true})
}

// does records what the line at pos does.
func (p *parser) does(pos Pos, format string, a ...any) {
	if l := p.lineAt(pos); l != nil {
		l.Does = fmt.Sprintf(format, a...)
	}
}

// line parses one entry. Its error is fatal (includes nested too deep);
// what is wrong with the line itself goes to Diags.
func (p *parser) line(pos Pos, f []string, depth int) error {
	word := strings.ToUpper(f[0])
	switch word {
	case "CLEAR_CONFIG":
		if len(f) > 1 {
			p.warn(pos, "CLEAR_CONFIG takes no arguments; %q ignored", strings.Join(f[1:], " "))
		}
		for _, r := range p.cfg.Rules {
			if l := &p.cfg.Lines[r.line]; l.LeftOut == "" {
				l.LeftOut = "forgotten by CLEAR_CONFIG at " + pos.String()
			}
		}
		p.does(pos, "CLEAR_CONFIG: forgets the %d rules read before it", len(p.cfg.Rules))
		p.cfg.Rules = nil
		return nil
	case "INCLUDE", "OPTIONAL_INCLUDE", "RESTORE":
		if len(f) < 2 {
			p.refuse(pos, "%s needs a path", word)
			return nil
		}
		if len(f) > 2 {
			p.warn(pos, "%s takes one path; %q ignored, as devfsd did", word, strings.Join(f[2:], " "))
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
			p.does(pos, "RESTORE %s: recreates the saved nodes at start and after SIGHUP", filepath.Clean(path))
			p.cfg.Restores = append(p.cfg.Restores, Restore{Pos: pos, Dir: filepath.Clean(path)})
			return nil
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(pos.File), path)
		}
		p.does(pos, "%s %s", word, path)
		return p.include(path, word == "OPTIONAL_INCLUDE", depth+1, pos)
	}
	ev, ok := ParseKind(f[0])
	if !ok {
		p.refuse(pos, "%q is not an event (REGISTER, UNREGISTER, LOOKUP, CHANGE, CREATE, DELETE, ASYNC_OPEN, CLOSE) or a directive (CLEAR_CONFIG, INCLUDE, OPTIONAL_INCLUDE, RESTORE)", f[0])
		return nil
	}
	if len(f) < 3 {
		p.refuse(pos, "%s needs a regular expression and an action", f[0])
		return nil
	}
	if len(f) > maxWords {
		p.warn(pos, "%d words: devfsd read only the first %d of a line; all are used here", len(f), maxWords)
	}
	r := Rule{Pos: pos, Event: ev, Pattern: f[1], Args: f[3:], UID: -1, GID: -1, line: p.cur}
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
		if isRE2Only(err) {
			p.bad(pos, "regular expression %q: %v", f[1], err)
		} else {
			p.refuse(pos, "regular expression %q: %v", f[1], err)
		}
		return nil
	}
	r.re = re
	act := strings.ToUpper(f[2])
	switch act {
	case "CFUNCTION":
		if !p.cfunction(pos, &r) {
			return nil
		}
	case "MFUNCTION":
		p.bad(pos, "MFUNCTION calls a function in a shared object (or devfsd's own) with devfsd's internal event structure, which devfsd helper does not have: refused for safety; use EXECUTE with a program instead")
		return nil
	default:
		found := false
		for a, n := range actionNames {
			if n == act && a < Mksymlink {
				r.Action, found = a, true
			}
		}
		if !found {
			p.refuse(pos, "%q is not an action (PERMISSIONS, EXECUTE, MODLOAD, COPY, IGNORE, MKOLDCOMPAT, RMOLDCOMPAT, MKNEWCOMPAT, RMNEWCOMPAT, CFUNCTION GLOBAL mksymlink|symlink|unlink)", f[2])
			return nil
		}
	}
	switch r.Action {
	case Permissions:
		if len(r.Args) < 2 {
			p.refuse(pos, "PERMISSIONS takes USER.GROUP and MODE, got %d words", len(r.Args))
			return nil
		}
		if len(r.Args) > 2 {
			p.warn(pos, "PERMISSIONS takes USER.GROUP and MODE; %q ignored, as devfsd did", strings.Join(r.Args[2:], " "))
			r.Args = r.Args[:2]
		}
		if refused, err := p.permissions(pos, &r); err != nil {
			if refused {
				p.refuse(pos, "PERMISSIONS %s: %v", strings.Join(r.Args, " "), err)
			} else {
				p.bad(pos, "PERMISSIONS %s: %v", strings.Join(r.Args, " "), err)
			}
			return nil
		}
	case Execute:
		if len(r.Args) == 0 {
			p.bad(pos, "EXECUTE needs a program")
			return nil
		}
		if rel := relativeFileArgs(r.Args); len(rel) > 0 {
			p.bad(pos, "EXECUTE %s with the relative path %s: devfsd ran programs in its mount point, devfsd helper runs them in /, where this would change /%s: left out for safety; write $mntpnt/%s",
				r.Args[0], strings.Join(rel, ", "), rel[0], rel[0])
			return nil
		}
	case Copy:
		if len(r.Args) != 2 {
			p.refuse(pos, "COPY takes a source and a destination, got %d words", len(r.Args))
			return nil
		}
	case Mksymlink, Symlink, Unlink:
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
	if !Deliverable(ev) {
		p.warn(pos, "%s events are never delivered: over FUSE an open or close of a device node goes straight to its driver; the entry is kept but never runs", ev)
	}
	if ev == Lookup && r.Action == Copy {
		p.warn(pos, "COPY on LOOKUP: the name does not exist yet when a LOOKUP runs")
	}
	p.does(pos, "%s", r.describe())
	p.cfg.Rules = append(p.cfg.Rules, r)
	return nil
}

// cfunction parses CFUNCTION's arguments into r: GLOBAL and a function
// of globalFuncs are an action; a shared object is refused.
func (p *parser) cfunction(pos Pos, r *Rule) bool {
	if len(r.Args) < 2 {
		p.refuse(pos, "CFUNCTION needs a shared object (or GLOBAL) and a function")
		return false
	}
	lib, fn := r.Args[0], r.Args[1]
	if lib != "GLOBAL" {
		p.bad(pos, "CFUNCTION %s %s calls a function in a shared object, which devfsd helper does not load (no foreign code runs inside the helper): refused for safety; use EXECUTE with a program instead", lib, fn)
		return false
	}
	g, ok := globalFuncs[fn]
	if !ok {
		p.bad(pos, "CFUNCTION GLOBAL %s: devfsd looked any function of its own or of libc up by name; devfsd helper provides mksymlink, symlink and unlink, whose arguments are all paths", fn)
		return false
	}
	r.Action, r.Args = g.a, r.Args[2:]
	if len(r.Args) != g.args {
		p.bad(pos, "CFUNCTION GLOBAL %s takes %d arguments, got %d", fn, g.args, len(r.Args))
		return false
	}
	return true
}

// describe is what a rule does, for Lint.
func (r *Rule) describe() string {
	s := fmt.Sprintf("%s %s %s", r.Event, r.Pattern, r.Action)
	if r.Action == Permissions {
		return s + fmt.Sprintf(" uid %s gid %s mode %04o", idString(r.UID), idString(r.GID), r.Mode)
	}
	if len(r.Args) > 0 {
		s += " " + strings.Join(r.Args, " ")
	}
	return s
}

func idString(v int64) string {
	if v < 0 {
		return "unchanged"
	}
	return strconv.FormatInt(v, 10)
}

// permissions parses USER.GROUP and MODE into r; refused tells whether
// devfsd would have exited on the error too.
func (p *parser) permissions(pos Pos, r *Rule) (refused bool, err error) {
	owner := r.Args[0]
	var u, g string
	var ok bool
	if u, g, ok = strings.Cut(owner, "."); !ok {
		if u, g, ok = strings.Cut(owner, ":"); !ok {
			return true, fmt.Errorf("owner %q: want USER.GROUP", owner)
		}
	}
	if r.UID, err = p.id(pos, u, p.opts.LookupUser, "user"); err != nil {
		return false, err
	}
	if r.GID, err = p.id(pos, g, p.opts.LookupGroup, "group"); err != nil {
		return false, err
	}
	m := r.Args[1]
	r.Mode, err = ParseMode(m)
	return err != nil && (m == "" || m[0] < '0' || m[0] > '9') && len(m) != 9, err
}

// id resolves a user or group: a number, -1 (leave as is), or a name. A
// name the host lacks is 0 with a warning, as devfsd had it ("unknown
// group: vcsa, defaulting to gid=0"): the node then belongs to root,
// which widens no one's access.
func (p *parser) id(pos Pos, s string, lookup func(string) (uint32, error), what string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty %s", what)
	}
	if s == "-1" {
		return -1, nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		v, err := config.ParseID(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		return int64(v), nil
	}
	v, err := lookup(s)
	if err != nil {
		p.warn(pos, "unknown %s %q: %sid 0 (root) is used instead, as devfsd did", what, s, what[:1])
		return 0, nil
	}
	return int64(v), nil
}

// ParseMode reads a PERMISSIONS mode: octal ("0660", "2775", read by
// config.ParseMode) or nine characters of ls -l ("rw-rw----"), as devfsd
// did.
func ParseMode(s string) (uint32, error) {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		v, err := config.ParseMode(s)
		if err != nil {
			return 0, err
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

// fileTools are programs whose operands are paths to change, which
// busybox's and Mandrake's files ran on names relative to /dev.
var fileTools = map[string]bool{"ln": true, "rm": true, "mv": true, "cp": true, "mkdir": true, "rmdir": true,
	"touch": true, "chmod": true, "chown": true, "chgrp": true, "mknod": true, "mkfifo": true}

// relativeFileArgs returns the operands of an EXECUTE of a file tool that
// are relative paths (ln's first operand is the link's content, and a
// chmod's or chown's first is the mode or owner: both skipped).
func relativeFileArgs(argv []string) []string {
	tool := path.Base(argv[0])
	if !fileTools[tool] {
		return nil
	}
	var out []string
	n := 0
	for _, a := range argv[1:] {
		if strings.HasPrefix(a, "-") {
			continue
		}
		n++
		if n == 1 && (tool == "ln" || tool == "chmod" || tool == "chown" || tool == "chgrp") {
			continue
		}
		if !strings.HasPrefix(a, "/") && !strings.HasPrefix(a, "$") && !strings.HasPrefix(a, "~") {
			out = append(out, a)
		}
	}
	return out
}
