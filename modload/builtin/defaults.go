package builtin

import (
	"strings"

	"github.com/devfsd/devfsd/dcache"
)

// Attrs is the mode and owner of a device node.
type Attrs struct {
	Perm, UID, GID uint32
}

// attrKey addresses a catalogue node, or a numbered family of them, by
// type and path.
type attrKey struct {
	t dcache.Type
	p string
}

// exactAttrs maps every catalogue device to its mode and owner;
// familyAttrs maps each numbered family ("tty" for tty0-tty63, "ttyS",
// "loop", "input/event", ...) to the mode and owner of its first member
// in catalogue order. Built once; read-only after.
var exactAttrs, familyAttrs = buildAttrs(catalogue)

func buildAttrs(mods []Module) (exact, family map[attrKey]Attrs) {
	exact, family = map[attrKey]Attrs{}, map[attrKey]Attrs{}
	for _, m := range mods {
		for _, n := range m.Nodes {
			if n.Type != dcache.TypeChar && n.Type != dcache.TypeBlock {
				continue
			}
			a := Attrs{Perm: n.Perm, UID: n.UID, GID: n.GID}
			exact[attrKey{n.Type, n.Path}] = a
			if f, ok := familyOf(n.Path); ok {
				if _, seen := family[attrKey{n.Type, f}]; !seen {
					family[attrKey{n.Type, f}] = a
				}
			}
		}
	}
	return exact, family
}

// familyOf returns p without the decimal digits that end it, and whether
// there were any and something is left: "tty12" is of family "tty",
// "input/event3" of "input/event"; "tty" and "12" have none.
func familyOf(p string) (string, bool) {
	f := strings.TrimRight(p, "0123456789")
	if f == p || f == "" || strings.HasSuffix(f, "/") {
		return "", false
	}
	return f, true
}

// DefaultAttrs is the mode and owner the catalogue gives a device node of
// type t (CharDevice or BlockDevice) at path p, for a device source that
// learns a node's number but not its mode or owner (the kernel's, when a
// uevent has no DEVMODE, DEVUID or DEVGID). In order: the catalogue's own
// node at p of that type; else the first catalogue node of the numbered
// family p belongs to ("tty12" as tty0-tty63, "loop100" as loop0-7,
// "ttyS9" as ttyS0-3); else a block device is 0660 root:disk, as every
// block device of the catalogue is, a serial line of another driver
// ("ttyUSB0", "ttyACM1": tty, capital letters, a number) 0660 root:dialout
// as ttyS is (and as systemd-udev's default rules make them), and any
// other character device 0600 root:root, as devtmpfs makes a node its
// driver gives no mode.
func DefaultAttrs(t dcache.Type, p string) Attrs {
	if a, ok := exactAttrs[attrKey{t, p}]; ok {
		return a
	}
	if f, ok := familyOf(p); ok {
		if a, ok := familyAttrs[attrKey{t, f}]; ok {
			return a
		}
	}
	if t == dcache.TypeBlock {
		return Attrs{Perm: 0660, GID: gidDisk}
	}
	if serialTTY(p) {
		return Attrs{Perm: 0660, GID: gidDialout}
	}
	return Attrs{Perm: 0600, GID: gidRoot}
}

// serialTTY reports whether p is named as serial lines are: "tty", an
// upper-case letter, letters, and a number ("ttyUSB0", "ttyACM12",
// "ttyAMA0").
func serialTTY(p string) bool {
	rest, ok := strings.CutPrefix(p, "tty")
	if !ok || rest == "" || rest[0] < 'A' || rest[0] > 'Z' {
		return false
	}
	letters := strings.TrimRight(rest, "0123456789")
	if letters == rest {
		return false
	}
	for i := 0; i < len(letters); i++ {
		c := letters[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}
