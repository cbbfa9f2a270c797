package devfsdconf

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Compatibility names: devfs registered devices under the "new" names of
// Linux 2.4 (vc/1, tts/0, scsi/host0/bus0/target0/lun0/part1, sound/dsp);
// MKOLDCOMPAT made the old name (tty1, ttyS0, sda1, dsp) a symlink to the
// new one, and MKNEWCOMPAT made the original devfs names for disks
// (sd/c0b0t0u0p1, ide/hd/c0b0t0u0) symlinks into the scsi/ and ide/
// trees. The classes here are devfsd's: disks, partitions and cdroms
// (SCSI and IDE, with SCSI generic), serial ports and their callout
// devices, virtual consoles and their vcs, pseudo-terminals, loop,
// floppy, ramdisk, md, frame buffers, printers, parallel ports, i2c,
// joysticks, sound, misc, v4l, isdn, netlink. Tapes (scsi/.../mt*,
// ide/.../mt) have no compatibility names here.

// prefixNames is devfsd's translate table: a new name starting with the
// prefix becomes the old name prefix+rest (rest being what follows). More
// specific prefixes come first.
var prefixNames = []struct{ prefix, old string }{
	{"sound/", ""},
	{"printers/", "lp"},
	{"v4l/", ""},
	{"parports/", "parport"},
	{"fb/", "fb"},
	{"netlink/", ""},
	{"loop/", "loop"},
	{"floppy/", "fd"},
	{"rd/", "ram"},
	{"md/", "md"},
	{"vc/", "tty"},
	{"misc/", ""},
	{"isdn/", ""},
	{"pg/", "pg"},
	{"i2c/", "i2c-"},
	{"staliomem/", "staliomem"},
	{"tts/E", "ttyE"},
	{"cua/E", "cue"},
	{"tts/R", "ttyR"},
	{"cua/R", "cur"},
	{"ip2/", "ip2"},
	{"tts/F", "ttyF"},
	{"cua/F", "cuf"},
	{"tts/C", "ttyC"},
	{"cua/C", "cub"},
	{"tts/", "ttyS"},
	{"cua/", "cua"},
	{"input/js", "js"},
}

// hostName matches the scsi/ and ide/ trees of devfs.
var hostName = regexp.MustCompile(`^(scsi|ide)/host([0-9]+)/bus([0-9]+)/target([0-9]+)/lun([0-9]+)/(generic|disc|cd|part([0-9]+)|mt.*)$`)

var numbered = regexp.MustCompile(`^(sbp|vcc|pty/[ms])/?([0-9]+)$`)

// ideMajors are the IDE interfaces' block majors (devices.txt), two
// drives each.
var ideMajors = []uint32{3, 22, 33, 34, 56, 57, 88, 89, 90, 91}

// OldName returns the old (pre-devfs) name of the devfs name devname,
// with its device number (needed for disks), or "" if it has none.
func OldName(devname string, major, minor uint32) string {
	for _, t := range prefixNames {
		if rest, ok := strings.CutPrefix(devname, t.prefix); ok {
			if rest == "" || strings.Contains(rest, "/") {
				return ""
			}
			return t.old + rest
		}
	}
	if m := hostName.FindStringSubmatch(devname); m != nil {
		leaf, part := m[6], m[7]
		if m[1] == "scsi" {
			switch {
			case leaf == "generic":
				return fmt.Sprintf("sg%d", minor)
			case leaf == "cd":
				return fmt.Sprintf("sr%d", minor)
			case leaf == "disc":
				return scsiDiskName(major, minor, "")
			case part != "":
				return scsiDiskName(major, minor, part)
			}
			return ""
		}
		switch {
		case leaf == "disc", leaf == "cd":
			if l := ideLetter(major, minor); l != 0 {
				return "hd" + string(l)
			}
		case part != "":
			if l := ideLetter(major, minor); l != 0 {
				return "hd" + string(l) + part
			}
		}
		return ""
	}
	if m := numbered.FindStringSubmatch(devname); m != nil {
		n, err := strconv.Atoi(m[2])
		if err != nil {
			return ""
		}
		switch m[1] {
		case "sbp":
			return fmt.Sprintf("sbpcd%d", minor)
		case "vcc":
			if n == 0 {
				return "vcs"
			}
			return "vcs" + m[2]
		default: // pty/m (masters, ptyXY) and pty/s (slaves, ttyXY)
			if n > 255 {
				return ""
			}
			c := byte('t')
			if m[1] == "pty/m" {
				c = 'p'
			}
			return string([]byte{c, 't', 'y', "pqrstuvwxyzabcde"[n>>4], "0123456789abcdef"[n&15]})
		}
	}
	return ""
}

// scsiDiskName is the old sd name of a SCSI disk (or its partition part)
// from its device number: majors 8 and 65-71, 16 minors a disk.
func scsiDiskName(major, minor uint32, part string) string {
	var idx uint32
	switch {
	case major == 8:
		idx = minor >> 4
	case major > 64 && major < 72:
		idx = (major-64)<<4 + minor>>4
	default:
		return ""
	}
	if idx < 26 {
		return "sd" + string(rune('a'+idx)) + part
	}
	return "sd" + string(rune('a'+idx/26-1)) + string(rune('a'+idx%26)) + part
}

// ideLetter is the old hdX letter of an IDE drive, 0 if major is not IDE.
func ideLetter(major, minor uint32) byte {
	for i, m := range ideMajors {
		if m == major {
			l := byte('a' + 2*i)
			if minor > 63 {
				l++
			}
			return l
		}
	}
	return 0
}

// NewName returns the original devfs name (sd/c0b0t0u0p1, ide/hd/...)
// of a name in devfs's scsi/ or ide/ tree, and the symlink target that
// points from it back to devname; "" if there is none.
func NewName(devname string) (name, target string) {
	m := hostName.FindStringSubmatch(devname)
	if m == nil {
		return "", ""
	}
	hbtu := fmt.Sprintf("c%sb%st%su%s", m[2], m[3], m[4], m[5])
	leaf, part := m[6], m[7]
	if m[1] == "scsi" {
		target = "../" + devname
		switch {
		case leaf == "generic":
			return "sg/" + hbtu, target
		case leaf == "disc":
			return "sd/" + hbtu, target
		case leaf == "cd":
			return "sr/" + hbtu, target
		case part != "":
			return "sd/" + hbtu + "p" + part, target
		}
		return "", ""
	}
	target = "../" + strings.TrimPrefix(devname, "ide/")
	switch {
	case leaf == "disc":
		return "ide/hd/" + hbtu, target
	case leaf == "cd":
		return "ide/cd/" + hbtu, target
	case part != "":
		return "ide/hd/" + hbtu + "p" + part, target
	}
	return "", ""
}
