package integration

// The real devfsd.conf files of modload/devfsdconf/testdata/confs (copied
// byte for byte from the distributions) under `devfsd helper`, against a
// running daemon: devices are registered through the socket (as a driver
// registered them with devfs), and the modes, owners, symlinks and
// EXECUTE effects are checked against what devfsd 1.3.25 did with the
// same lines. Each expectation says why devfsd did that (the rule and the
// part of devfsd.c that ran it); where this helper differs on purpose,
// the comment says so.
//
// The files name the distributions' absolute paths (/etc/devfs/perms,
// /lib/dev-state) and make links relative to /dev, where devfsd ran;
// EXECUTE programs run here with / as their working directory. So each
// test copies its file, changes the lines listed in its rewrites (and
// nothing else; rewriteConf checks that), and says why.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/wire"
)

// realConf is the path of a file of testdata/confs.
func realConf(parts ...string) string {
	p, err := filepath.Abs(filepath.Join(append([]string{"..", "..", "modload", "devfsdconf", "testdata", "confs"}, parts...)...))
	if err != nil {
		panic(err)
	}
	return p
}

// rewrite changes line Line of a file: the last Old on it (which must be
// there) becomes New.
type rewrite struct {
	Line     int
	Old, New string
}

// rewriteConf writes src with the rewrites applied to dst; a rewrite
// whose text is not on its line fails the test, so the list is exactly
// what was changed.
func rewriteConf(t *testing.T, src, dst string, rws []rewrite) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	for _, rw := range rws {
		l := lines[rw.Line-1]
		if !strings.Contains(l, rw.Old) {
			t.Fatalf("%s:%d is %q; it does not contain %q", src, rw.Line, l, rw.Old)
		}
		i := strings.LastIndex(l, rw.Old)
		lines[rw.Line-1] = l[:i] + rw.New + l[i+len(rw.Old):]
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// gidOf is devfsd's get_uid_gid for a group: the host's gid, or 0 for a
// group the host lacks ("unknown group: %s, defaulting to gid=0").
func gidOf(name string) uint32 {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0
	}
	id, _ := strconv.Atoi(g.Gid)
	return uint32(id)
}

// node reads a node through the socket (nil if it is not there).
func (d *ctlDaemon) node(t *testing.T, p string) *wire.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	n, err := d.c.Stat(ctx, p)
	if err != nil {
		return nil
	}
	return &n
}

// want is the state a node must reach: Type "" is any; Mode "" any;
// UID/GID -1 any; Target "" any (symlinks).
type want struct {
	Type, Mode string
	UID, GID   int64
	Target     string
}

func (w want) String() string {
	return fmt.Sprintf("%s %s %d:%d -> %q", w.Type, w.Mode, w.UID, w.GID, w.Target)
}

func (w want) holds(n *wire.Node) bool {
	return n != nil && (w.Type == "" || n.Type == w.Type) && (w.Mode == "" || n.Mode == w.Mode) &&
		(w.UID < 0 || int64(n.Uid) == w.UID) && (w.GID < 0 || int64(n.Gid) == w.GID) &&
		(w.Target == "" || n.Target == w.Target)
}

// waitNode waits for p to reach w.
func (d *ctlDaemon) waitNode(t *testing.T, p string, w want) {
	t.Helper()
	var last *wire.Node
	untilOr(t, p+" to be "+w.String(), func() bool { last = d.node(t, p); return w.holds(last) },
		func() string { return fmt.Sprintf("%s is %+v", p, last) })
}

// waitGone waits for p not to exist.
func (d *ctlDaemon) waitGone(t *testing.T, p string) {
	t.Helper()
	until(t, p+" to be gone", func() bool { return d.node(t, p) == nil })
}

func symlinkTo(target string) want {
	return want{Type: "symlink", UID: -1, GID: -1, Target: target}
}

// The compatibility rules of CRUX's and mkcdrec's files (the same three
// rules in another order):
//
//	REGISTER   .*  MKOLDCOMPAT
//	UNREGISTER .*  RMOLDCOMPAT
//	LOOKUP     .*  MODLOAD
func TestRealConfCompatOnly(t *testing.T) {
	for _, file := range []string{"nipuL+crux-core.devfsd.conf", "gdha+mkcdrec.devfsd.conf"} {
		t.Run(file, func(t *testing.T) {
			d := startCtl(t, "--loader=none", "--negative-timeout=0s")
			// Used as shipped: no line names a path.
			startConfHelperFile(t, d, realConf(file))

			// devfsd's action_compat with get_old_name: the old name is a
			// symlink (mksymlink) whose content is the devfs name,
			// relative, as devfsd wrote it in the mount point.
			regs := []struct {
				name, typ  string
				maj, min   int
				old, check string
			}{
				{"vc/1", "char", 4, 1, "tty1", "vc/1"},           // {"vc/", "tty%s"}
				{"tts/0", "char", 4, 64, "ttyS0", "tts/0"},       // {"tts/", "ttyS%s"}
				{"sound/dsp", "char", 14, 3, "dsp", "sound/dsp"}, // {"sound/", NULL}: the rest
				{"misc/psaux", "char", 10, 1, "psaux", "misc/psaux"},
				{"scsi/host0/bus0/target0/lun0/part1", "block", 8, 1, "sda1", "scsi/host0/bus0/target0/lun0/part1"}, // write_old_sd_name from 8:1
				{"ide/host0/bus0/target1/lun0/disc", "block", 3, 64, "hdb", "ide/host0/bus0/target1/lun0/disc"},     // get_old_ide_name from 3:64
				{"pty/s3", "char", 3, 3, "ttyp3", "pty/s3"},                                                         // pty/s: "%cty%c%c" t,p,3
			}
			for _, r := range regs {
				d.mustCtl(t, "register", r.name, r.typ, strconv.Itoa(r.maj), strconv.Itoa(r.min))
			}
			for _, r := range regs {
				d.waitNode(t, r.old, symlinkTo(r.check))
			}
			// A name with no old one (cdroms/cdrom0: no translate entry)
			// gets nothing; it is registered before a name that does, so
			// once that one's link is there, this one's rules have run.
			d.mustCtl(t, "register", "cdroms/cdrom0", "block", "11", "0")
			d.mustCtl(t, "register", "vc/2", "char", "4", "2")
			d.waitNode(t, "tty2", symlinkTo("vc/2"))
			if n := d.node(t, "cdrom0"); n != nil {
				t.Errorf("cdroms/cdrom0 got an old name: %+v", n)
			}
			// RMOLDCOMPAT: unregistering removes the old name.
			d.mustCtl(t, "unregister", "vc/1")
			d.mustCtl(t, "unregister", "tts/0")
			d.waitGone(t, "tty1")
			d.waitGone(t, "ttyS0")
			// LOOKUP .* MODLOAD: devfsd ran modprobe -k -C
			// /etc/modules.devfs /dev/loop0; here the built-in catalogue
			// loads its loop module (whose names are the kernel's, loop0,
			// not devfs's loop/0), and the lookup sees the node.
			st, major, minor, _ := statRdev(t, d.path("loop0"))
			if st.Mode()&os.ModeDevice == 0 || major != 7 || minor != 0 {
				t.Errorf("loop0 through MODLOAD: %v %d:%d, want block 7:0", st.Mode(), major, minor)
			}
			// A name no module provides stays missing.
			if _, err := os.Stat(d.path("no-such-device")); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("a name no module provides: %v", err)
			}
		})
	}
}

// Debian's tree: /etc/devfs/devfsd.conf INCLUDEs /etc/devfs/perms (224
// PERMISSIONS rules) and /etc/devfs/dir.conf; /etc/modutils/devfsd is its
// modules.devfs, given as --aliases.
func TestRealConfDebian(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	// Lines 25 and 28 name /etc/devfs/...: they point into the copy.
	rewriteConf(t, realConf("classilla+dclinux", "etc", "devfs", "devfsd.conf"), filepath.Join(etc, "devfs", "devfsd.conf"), []rewrite{
		{25, "/etc/devfs/perms", etc + "/devfs/perms"},
		{28, "/etc/devfs/dir.conf", etc + "/devfs/dir.conf"},
	})
	rewriteConf(t, realConf("classilla+dclinux", "etc", "devfs", "perms"), filepath.Join(etc, "devfs", "perms"), nil)
	rewriteConf(t, realConf("classilla+dclinux", "etc", "devfs", "dir.conf"), filepath.Join(etc, "devfs", "dir.conf"), nil)
	rewriteConf(t, realConf("classilla+dclinux", "etc", "modutils", "devfsd"), filepath.Join(etc, "modutils", "devfsd"), nil)

	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startConfHelperFile(t, d, filepath.Join(etc, "devfs", "devfsd.conf"), "--aliases="+filepath.Join(etc, "modutils", "devfsd"))
	h.waitLog("the configuration read", `"rules":227`)

	root0, tty, cdrom, kmem, floppy := int64(0), int64(gidOf("tty")), int64(gidOf("cdrom")), int64(gidOf("kmem")), int64(gidOf("floppy"))
	// The start-up scan (devfsd's dir_operation(SERVICE)): a REGISTER for
	// every node there, every matching line in order, so the last wins.
	for p, w := range map[string]want{
		"null":    {"char", "0666", 0, root0, ""},  // ^null root.root 0666
		"urandom": {"char", "0444", 0, root0, ""},  // ^urandom root.root 0444
		"random":  {"char", "0666", 0, root0, ""},  // ^random 0444, then ^random 0666
		"console": {"char", "0600", 0, tty, ""},    // ^console root.tty 0600
		"tty":     {"char", "0666", 0, tty, ""},    // ^tty, then ^tty[^/]*: root.tty 0666
		"ptmx":    {"char", "0666", 0, tty, ""},    // ^ptmx root.tty 0666
		"kmsg":    {"char", "0644", 0, root0, ""},  // no line: as registered
		"full":    {"char", "0666", 0, root0, ""},  // ^full root.root 0666
		"stdin":   {"symlink", "", -1, -1, "fd/0"}, // no line
	} {
		d.waitNode(t, p, w)
	}
	// Registered through the socket, as drivers registered with devfs.
	d.mustCtl(t, "register", "--mode", "0666", "ide/host0/bus1/target0/lun0/cd", "block", "22", "0")
	d.mustCtl(t, "register", "--mode", "0666", "isdninfo", "char", "45", "255")
	d.mustCtl(t, "register", "--mode", "0666", "fd0", "block", "2", "0")
	d.mustCtl(t, "register", "--mode", "0666", "mem", "char", "1", "1")
	d.mustCtl(t, "register", "--mode", "0666", "--gid", "7", "vcsa1", "char", "7", "129")
	for p, w := range map[string]want{
		// .*/cd$ root.cdrom 0660 (unanchored at the front); MKOLDCOMPAT
		// makes hdc (get_old_ide_name: major 22, minor 0).
		"ide/host0/bus1/target0/lun0/cd": {"block", "0660", 0, cdrom, ""},
		"hdc":                            symlinkTo("ide/host0/bus1/target0/lun0/cd"),
		"isdninfo":                       {"char", "0600", 0, root0, ""}, // root.dialout 0660, then root.root 0600
		"fd0":                            {"block", "0660", 0, floppy, ""},
		"mem":                            {"char", "0640", 0, kmem, ""},
		"vcsa1":                          {"char", "0600", 0, root0, ""}, // ^vcsa[^/]* root.root 0600
	} {
		d.waitNode(t, p, w)
	}
	// LOOKUP .* MODLOAD with Debian's modules.devfs: "alias /dev/ttyS1
	// serial" loads the catalogue's serial module (ttyS0-3, registered
	// 0660 root:dialout), and the REGISTER rules run before the lookup
	// answers: ^ttyS[^/]* root.dialout 0660, then ^tty[^/]* root.tty
	// 0666, so devfsd left them crw-rw-rw- root:tty.
	if _, err := os.Stat(d.path("ttyS1")); err != nil {
		t.Fatalf("ttyS1 through MODLOAD and alias /dev/ttyS1 serial: %v", err)
	}
	for _, p := range []string{"ttyS0", "ttyS1", "ttyS3"} {
		if n := d.node(t, p); !(want{"char", "0666", 0, tty, ""}).holds(n) {
			t.Errorf("%s loaded by MODLOAD: %+v, want crw-rw-rw- root:tty", p, n)
		}
	}
	// probe /dev/fd1 fd1 floppy: neither is a catalogue module (devfsd's
	// modprobe would have loaded floppy); the lookup answers ENOENT.
	if _, err := os.Stat(d.path("fd1")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("fd1: %v, want ENOENT (no catalogue module for floppy)", err)
	}
}

// busybox's example (examples/devfsd.conf, 2007): compatibility names,
// PERMISSIONS with -1, IGNORE, COPY/RESTORE to /lib/dev-state, links made
// by EXECUTE /bin/ln, \1 in EXECUTE arguments, and an INCLUDE of a
// directory that does not exist.
func TestRealConfBusybox(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "dev-state")
	conf := filepath.Join(dir, "devfsd.conf")
	// /lib/dev-state is the host's: it becomes a directory of the test.
	// The links devfsd made relative to its working directory, the mount
	// point, are written under $mntpnt: EXECUTE runs in / here, so as
	// shipped these lines are left out (they would change /cdrom).
	rewriteConf(t, realConf("mirror+busybox.examples.devfsd.conf"), conf, []rewrite{
		{53, "/lib/dev-state", state}, {54, "/lib/dev-state", state}, {55, "/lib/dev-state", state},
		{58, "/lib/dev-state", state}, {60, "/lib/dev-state", state},
		{67, " cdrom", " $mntpnt/cdrom"}, {68, " cdrom", " $mntpnt/cdrom"},
		{75, " video", " $mntpnt/video"}, {76, " video", " $mntpnt/video"},
		{77, " radio", " $mntpnt/radio"}, {78, " radio", " $mntpnt/radio"},
		{98, " usbmouse", " $mntpnt/usbmouse"}, {99, " usbmouse", " $mntpnt/usbmouse"},
		{122, " ost/", " $mntpnt/ost/"}, {123, " ost/", " $mntpnt/ost/"},
	})
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startConfHelperFile(t, d, conf)
	// Line 128, INCLUDE /etc/devfs/busybox/, names nothing: reported with
	// its file and line, and the rest runs (busybox's own devfsd exited).
	h.waitLog("the missing INCLUDE reported", `devfsd.conf:128: INCLUDE /etc/devfs/busybox/: no such file or directory`)
	h.waitLog("the rest loaded", `"rules":34`)
	tty, video := int64(gidOf("tty")), int64(gidOf("video"))

	// Line 36: REGISTER ^pty/s.* PERMISSIONS -1.tty 0600 (the owner
	// stays); line 9 MKOLDCOMPAT ran first: ttyp0 -> pty/s0.
	d.mustCtl(t, "register", "--mode", "0666", "--uid", "7", "pty/s0", "char", "3", "0")
	d.waitNode(t, "pty/s0", want{"char", "0600", 7, tty, ""})
	d.waitNode(t, "ttyp0", symlinkTo("pty/s0"))

	// Line 67: ln -sf $devname cdrom makes cdrom -> cdroms/cdrom0
	// through the mount. (devfs sent no event for what devfsd's children
	// did, is_devfsd_or_child, so devfsd's line 54 never saved it; the
	// daemon here tells a program of the helper's from others by its
	// process, which a program that has already exited no longer shows,
	// so whether the CREATE reaches the helper is not asserted.)
	d.mustCtl(t, "register", "cdroms/cdrom0", "block", "11", "0")
	d.waitNode(t, "cdrom", symlinkTo("cdroms/cdrom0"))
	// Line 55: a chmod through the mount is a CHANGE, saved with its
	// mode.
	if err := os.Chmod(d.path("cdroms/cdrom0"), 0o640); err != nil {
		t.Fatal(err)
	}
	until(t, "cdroms/cdrom0 saved as brw-r-----", func() bool {
		var st unix.Stat_t
		return unix.Lstat(filepath.Join(state, "cdroms", "cdrom0"), &st) == nil && st.Mode == unix.S_IFBLK|0o640 &&
			unix.Major(st.Rdev) == 11
	})
	// Lines 41-44: log is ignored for CREATE, so a fifo made there is not
	// saved; one made after it is, with devfsd's sticky marker (CREATE).
	if err := unix.Mkfifo(d.path("log"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(d.path("initfifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	until(t, "initfifo saved with the sticky marker", func() bool {
		var st unix.Stat_t
		return unix.Lstat(filepath.Join(state, "initfifo"), &st) == nil && st.Mode == unix.S_IFIFO|unix.S_ISVTX|0o600
	})
	if _, err := os.Lstat(filepath.Join(state, "log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log was saved despite CREATE ^log$ IGNORE: %v", err)
	}
	// Line 58: DELETE .* EXECUTE /bin/rm -f STATE/$devname.
	if err := os.Remove(d.path("initfifo")); err != nil {
		t.Fatal(err)
	}
	until(t, "the saved initfifo removed", func() bool {
		_, err := os.Lstat(filepath.Join(state, "initfifo"))
		return errors.Is(err, os.ErrNotExist)
	})

	// Lines 75, 77, 98: links by ln; 9: MKOLDCOMPAT video0 -> v4l/video0.
	d.mustCtl(t, "register", "v4l/video0", "char", "81", "0")
	d.mustCtl(t, "register", "radio0", "char", "81", "64")
	d.mustCtl(t, "register", "input/mice", "char", "13", "63")
	d.waitNode(t, "video", symlinkTo("v4l/video0"))
	d.waitNode(t, "video0", symlinkTo("v4l/video0"))
	d.waitNode(t, "radio", symlinkTo("radio0"))
	d.waitNode(t, "usbmouse", symlinkTo("input/mice"))
	// Line 76: UNREGISTER rm -f video.
	d.mustCtl(t, "unregister", "v4l/video0")
	d.waitGone(t, "video")
	d.waitGone(t, "video0") // RMOLDCOMPAT

	// Line 117: REGISTER ^dvb/card[0-9]+/[^/]+$ PERMISSIONS root.video
	// 0660. Line 122: ln -sf /dev/$devname ost/\2\1 = ost/demux0, in a
	// directory that does not exist, so ln fails, as it did for devfsd
	// (nothing made ost/); the failure is logged with its line.
	d.mustCtl(t, "register", "--mode", "0666", "dvb/card0/demux0", "char", "250", "0")
	d.waitNode(t, "dvb/card0/demux0", want{"char", "0660", 0, video, ""})
	h.waitLog("the failing ln of line 122", `devfsd.conf:122: EXECUTE dvb/card0/demux0`)
	h.waitLog("line 122's argv", `"argv":["/bin/ln","-sf","/dev/dvb/card0/demux0","`+d.mnt+`/ost/demux0"]`)

	// Lines 104, 108, 110 and 114: \1 in EXECUTE arguments, on LOOKUP.
	// The dd reads a name that does not exist (ENOENT, as in devfs
	// without the disk); what is checked is the argv devfsd would have
	// run. A lookup asks for the first missing component, so sd/ and
	// ide/hd/ are made first, as MKNEWCOMPAT had made them on a devfsd
	// system with disks.
	d.mustCtl(t, "register", "sd", "dir")
	d.mustCtl(t, "register", "ide/hd", "dir")
	for _, c := range []struct{ name, arg string }{
		{"sd/c0b0t0u0p1", "if=" + d.mnt + "/sd/c0b0t0u0"},
		{"ide/hd/c0b0t0u0p2", "if=" + d.mnt + "/ide/hd/c0b0t0u0"},
		{"hda1", "if=" + d.mnt + "/hda"},
		{"scd0", "if=" + d.mnt + "/scd"},
	} {
		if _, err := os.Stat(d.path(c.name)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s: %v, want ENOENT", c.name, err)
		}
		h.waitLog("the dd for "+c.name, `"argv":["/bin/dd","`+c.arg+`","of=/dev/null","count=1"]`)
	}
}

// busybox's example as first committed (2003-10-09), with Mandrake's
// conf.d content inline: links by ln through PATH, programs that are not
// there (/etc/dynamic/scripts/...), a rule that can never match (^$).
//
// As in TestRealConfBusybox, /lib/dev-state becomes the test's, and the
// links made relative to devfsd's working directory (the mount point) are
// written under $mntpnt: as shipped those lines are left out (see
// modload/devfsdconf's TestRealConfsLoad), since here they would change /.
func TestRealConfBusybox2003(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "dev-state")
	conf := filepath.Join(dir, "devfsd.conf")
	rewriteConf(t, realConf("mirror+busybox.examples.devfsd.conf.2003-10-09"), conf, []rewrite{
		{54, "/lib/dev-state", state}, {55, "/lib/dev-state", state}, {56, "/lib/dev-state", state},
		{59, "/lib/dev-state", state}, {61, "/lib/dev-state", state},
		{68, " cdrom", " $mntpnt/cdrom"}, {69, " cdrom", " $mntpnt/cdrom"},
		{77, " video", " $mntpnt/video"}, {78, " video", " $mntpnt/video"},
		{79, " radio", " $mntpnt/radio"}, {80, " radio", " $mntpnt/radio"},
		{95, " usbmouse", " $mntpnt/usbmouse"}, {96, " usbmouse", " $mntpnt/usbmouse"},
		{118, " ost/", " $mntpnt/ost/"}, {119, " ost/", " $mntpnt/ost/"},
		{131, " dvd", " $mntpnt/dvd"}, {132, " dvd", " $mntpnt/dvd"},
		{158, " modem", " $mntpnt/modem"}, {159, " modem", " $mntpnt/modem"},
		{164, " mouse", " $mntpnt/mouse"}, {165, " mouse", " $mntpnt/mouse"},
		{170, " psaux", " $mntpnt/psaux"}, {171, " psaux", " $mntpnt/psaux"},
		{180, " ttyS0", " $mntpnt/ttyS0"}, {181, " ttyS0", " $mntpnt/ttyS0"},
	})
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startConfHelperFile(t, d, conf)
	h.waitLog("the configuration read", `"rules":57`)

	// tts/0: MKOLDCOMPAT ttyS0 (line 9), then ln -sf $devname modem (158)
	// and ln -sf $devname ttyS0 (180, over the same link).
	d.mustCtl(t, "register", "tts/0", "char", "4", "64")
	d.waitNode(t, "modem", symlinkTo("tts/0"))
	d.waitNode(t, "ttyS0", symlinkTo("tts/0"))
	// misc/psaux: MKOLDCOMPAT psaux ({"misc/", NULL}), ln mouse and psaux.
	d.mustCtl(t, "register", "misc/psaux", "char", "10", "1")
	d.waitNode(t, "mouse", symlinkTo("misc/psaux"))
	d.waitNode(t, "psaux", symlinkTo("misc/psaux"))
	// The IDE cd: MKOLDCOMPAT hdd (major 22, minor 64), MKNEWCOMPAT
	// ide/cd/c0b1t1u0, ln dvd (131); rawdevice.script (line 174) is not
	// there: that EXECUTE fails, logged with its line, the rest runs.
	cd := "ide/host0/bus1/target1/lun0/cd"
	d.mustCtl(t, "register", cd, "block", "22", "64")
	d.waitNode(t, "hdd", symlinkTo(cd))
	d.waitNode(t, "ide/cd/c0b1t1u0", symlinkTo("../host0/bus1/target1/lun0/cd"))
	d.waitNode(t, "dvd", symlinkTo(cd))
	h.waitLog("the missing rawdevice.script", `devfsd.conf:174: EXECUTE `+cd)
	// Line 159: UNREGISTER ^$ never matches (no name is empty), so modem
	// stays when tts/0 goes, as with devfsd; ttyS0 goes (RMOLDCOMPAT,
	// and line 181's rm -f).
	d.mustCtl(t, "unregister", "tts/0")
	d.waitGone(t, "ttyS0")
	if n := d.node(t, "modem"); !symlinkTo("tts/0").holds(n) {
		t.Errorf("modem after tts/0 went: %+v, want it left (UNREGISTER ^$ never matches)", n)
	}
}

// modules.devfs's probeall loads every module it names, probe the first
// that loads (modutils' modprobe; devfsd's MODLOAD ran it): through
// --aliases, the catalogue's serial and loop modules.
func TestConfModulesProbeAll(t *testing.T) {
	dir := t.TempDir()
	aliases := filepath.Join(dir, "modules.devfs")
	if err := os.WriteFile(aliases, []byte("probeall /dev/both serial loop\nprobe /dev/first serial loop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	startConfHelper(t, d, "LOOKUP .* MODLOAD\n", "--aliases="+aliases)
	// A name no module registers: the lookup is ENOENT, but the loads
	// it caused stay.
	if _, err := os.Stat(d.path("first")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("first: %v, want ENOENT", err)
	}
	d.waitNode(t, "ttyS0", want{"char", "", -1, -1, ""})
	if n := d.node(t, "loop0"); n != nil { // asked of the socket: no lookup, no load
		t.Fatalf("loop0 after probe /dev/first serial loop: %+v, want none (probe stops at serial)", n)
	}
	if _, err := os.Stat(d.path("both")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("both: %v, want ENOENT", err)
	}
	d.waitNode(t, "loop0", want{"block", "", -1, -1, ""})
}
