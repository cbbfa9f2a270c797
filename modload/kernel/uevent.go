package kernel

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// MaxUevent bounds a uevent message (and a sysfs uevent file) in bytes.
// The kernel's own bound is UEVENT_BUFFER_SIZE (2048) for the variables
// plus the "ACTION@DEVPATH" header; anything larger is refused.
const MaxUevent = 8192

// maxVars bounds the variables of one uevent (the kernel's UEVENT_NUM_ENVP
// is 64).
const maxVars = 128

// The actions of a uevent, as lib/kobject_uevent.c names them.
const (
	ActionAdd     = "add"
	ActionRemove  = "remove"
	ActionChange  = "change"
	ActionMove    = "move"
	ActionOnline  = "online"
	ActionOffline = "offline"
	ActionBind    = "bind"
	ActionUnbind  = "unbind"
)

var actions = map[string]bool{
	ActionAdd: true, ActionRemove: true, ActionChange: true, ActionMove: true,
	ActionOnline: true, ActionOffline: true, ActionBind: true, ActionUnbind: true,
}

// ErrMalformed is wrapped by every error of ParseUevent, ParseUeventFile
// and NodeOf: the input is not a uevent the kernel would send, and was
// refused whole.
var ErrMalformed = errors.New("malformed uevent")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// Uevent is one kernel uevent.
type Uevent struct {
	Action  string // one of the Action constants
	DevPath string // the device's path under /sys: "/devices/virtual/mem/null"
	Seq     uint64 // SEQNUM: the kernel's order of its uevents
	// Env holds every variable as the kernel sent it (ACTION, DEVPATH,
	// SUBSYSTEM and SEQNUM included). Values are kept as given, bytes
	// and all; only DEVNAME is checked further (NodeOf).
	Env map[string]string
}

// ParseUevent parses a message of the kernel's uevent netlink group:
// "ACTION@DEVPATH\0" followed by "KEY=value\0" variables, ACTION, DEVPATH,
// SUBSYSTEM and SEQNUM among them, the header agreeing with ACTION and
// DEVPATH. Anything else — no NUL terminator, a variable without '=', a
// key that is not [A-Za-z0-9_]+, a key twice, an unknown action, a
// DEVPATH that is not a clean absolute path, more than MaxUevent bytes — is
// an error wrapping ErrMalformed.
func ParseUevent(msg []byte) (Uevent, error) {
	if len(msg) > MaxUevent {
		return Uevent{}, malformed("%d bytes, more than %d", len(msg), MaxUevent)
	}
	if len(msg) == 0 || msg[len(msg)-1] != 0 {
		return Uevent{}, malformed("not NUL-terminated")
	}
	fields := strings.Split(string(msg[:len(msg)-1]), "\x00")
	head := fields[0]
	at := strings.IndexByte(head, '@')
	if at <= 0 {
		return Uevent{}, malformed("header %q is not ACTION@DEVPATH", trunc(head))
	}
	env, err := parseVars(fields[1:])
	if err != nil {
		return Uevent{}, err
	}
	ev := Uevent{Action: env["ACTION"], DevPath: env["DEVPATH"], Env: env}
	if ev.Action != head[:at] || ev.DevPath != head[at+1:] {
		return Uevent{}, malformed("header %q disagrees with ACTION=%q DEVPATH=%q", trunc(head), trunc(ev.Action), trunc(ev.DevPath))
	}
	if !actions[ev.Action] {
		return Uevent{}, malformed("unknown action %q", trunc(ev.Action))
	}
	if err := checkDevPath(ev.DevPath); err != nil {
		return Uevent{}, err
	}
	if _, ok := env["SUBSYSTEM"]; !ok {
		return Uevent{}, malformed("no SUBSYSTEM")
	}
	s, ok := env["SEQNUM"]
	if !ok {
		return Uevent{}, malformed("no SEQNUM")
	}
	if ev.Seq, err = parseDecimal(s, 64); err != nil {
		return Uevent{}, malformed("SEQNUM %q: %v", trunc(s), err)
	}
	if old, ok := env["DEVPATH_OLD"]; ok {
		if err := checkDevPath(old); err != nil {
			return Uevent{}, err
		}
	}
	return ev, nil
}

// ParseUeventFile parses the content of a sysfs uevent file: "KEY=value"
// lines (MAJOR, MINOR, DEVNAME, DEVMODE, ...). The same rules as
// ParseUevent's variables apply; an empty file has no variables.
func ParseUeventFile(data []byte) (map[string]string, error) {
	if len(data) > MaxUevent {
		return nil, malformed("%d bytes, more than %d", len(data), MaxUevent)
	}
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return map[string]string{}, nil
	}
	if strings.IndexByte(s, 0) >= 0 {
		return nil, malformed("a NUL byte in a uevent file")
	}
	return parseVars(strings.Split(s, "\n"))
}

func parseVars(fields []string) (map[string]string, error) {
	if len(fields) > maxVars {
		return nil, malformed("%d variables, more than %d", len(fields), maxVars)
	}
	env := make(map[string]string, len(fields))
	for _, f := range fields {
		eq := strings.IndexByte(f, '=')
		if eq < 0 {
			return nil, malformed("variable %q has no '='", trunc(f))
		}
		k := f[:eq]
		if !validKey(k) {
			return nil, malformed("variable name %q", trunc(k))
		}
		if _, dup := env[k]; dup {
			return nil, malformed("variable %s twice", k)
		}
		env[k] = f[eq+1:]
	}
	return env, nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// checkDevPath accepts a clean absolute path of printable UTF-8 without
// "." or ".." elements: what the kernel's kobject paths are.
func checkDevPath(p string) error {
	if !strings.HasPrefix(p, "/") || p == "/" || path.Clean(p) != p || !printable(p) {
		return malformed("DEVPATH %q is not a clean absolute path", trunc(p))
	}
	for _, e := range strings.Split(p[1:], "/") {
		if e == "." || e == ".." {
			return malformed("DEVPATH %q has a %q element", trunc(p), e)
		}
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// parseDecimal parses an unsigned decimal number of at most bits bits:
// digits only, no sign, no spaces.
func parseDecimal(s string, bits int) (uint64, error) {
	if s == "" || s[0] == '+' {
		return 0, errors.New("not a decimal number")
	}
	return strconv.ParseUint(s, 10, bits)
}

// trunc shortens hostile input for error messages.
func trunc(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// NodeOf returns the device node a uevent's (or a uevent file's)
// variables describe: DEVNAME, MAJOR and MINOR, of type t, with DEVMODE,
// DEVUID and DEVGID where given and the attributes of defaults where not.
// ok is false, with a nil error, when the device has no node (no
// DEVNAME). A DEVNAME without MAJOR and MINOR, a number out of range,
// or a DEVNAME that is not a clean relative path of printable UTF-8 (an
// absolute name, a ".." element, a control character, an element longer
// than 255 bytes) is an error wrapping ErrMalformed.
func NodeOf(env map[string]string, t dcache.Type, defaults func(dcache.Type, string) (perm, uid, gid uint32)) (n modload.Node, ok bool, err error) {
	name, hasName := env["DEVNAME"]
	maj, hasMaj := env["MAJOR"]
	min, hasMin := env["MINOR"]
	if !hasName {
		// No node name: the kernel makes no node (a device number alone,
		// device_get_devnode gave none, or no number at all).
		return modload.Node{}, false, nil
	}
	if !hasMaj || !hasMin {
		return modload.Node{}, false, malformed("DEVNAME %q without MAJOR and MINOR", trunc(name))
	}
	if err := checkDevName(name); err != nil {
		return modload.Node{}, false, err
	}
	major, err := parseDecimal(maj, 12)
	if err != nil {
		return modload.Node{}, false, malformed("MAJOR %q: %v", trunc(maj), err)
	}
	minor, err := parseDecimal(min, 20)
	if err != nil {
		return modload.Node{}, false, malformed("MINOR %q: %v", trunc(min), err)
	}
	n = modload.Node{Path: name, Type: t, Major: uint32(major), Minor: uint32(minor)}
	n.Perm, n.UID, n.GID = defaults(t, name)
	if s, ok := env["DEVMODE"]; ok {
		if s == "" || s[0] == '+' || s[0] == '-' {
			return modload.Node{}, false, malformed("DEVMODE %q", trunc(s))
		}
		m, err := strconv.ParseUint(s, 8, 32)
		if err != nil || m&^07777 != 0 {
			return modload.Node{}, false, malformed("DEVMODE %q is not a mode in 0-07777", trunc(s))
		}
		n.Perm = uint32(m)
	}
	for _, f := range []struct {
		key string
		to  *uint32
	}{{"DEVUID", &n.UID}, {"DEVGID", &n.GID}} {
		if s, ok := env[f.key]; ok {
			v, err := parseDecimal(s, 32)
			if err != nil {
				return modload.Node{}, false, malformed("%s %q: %v", f.key, trunc(s), err)
			}
			*f.to = uint32(v)
		}
	}
	if err := n.Validate(); err != nil {
		return modload.Node{}, false, malformed("%v", err)
	}
	return n, true, nil
}

// checkDevName accepts what the kernel's device_get_devnode can give: a
// clean relative path of printable UTF-8, elements of at most 255 bytes.
func checkDevName(name string) error {
	if name == "" || !printable(name) {
		return malformed("DEVNAME %q is empty or not printable UTF-8", trunc(name))
	}
	if err := modload.ValidatePath(name); err != nil {
		return malformed("DEVNAME %q: %v", trunc(name), err)
	}
	for _, e := range strings.Split(name, "/") {
		if len(e) > 255 {
			return malformed("DEVNAME %q: an element longer than 255 bytes", trunc(name))
		}
	}
	return nil
}
