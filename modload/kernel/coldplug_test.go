package kernel

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

// fakeMachine is a small sysfs: memory devices, an input event node in a
// subdirectory, a disk and its partition, a device without a node name,
// and two hostile devices.
func fakeMachine(t *testing.T) *fakeSys {
	f := newFakeSys(t)
	f.add("char", 1, 3, "devices/virtual/mem/null", "mem", "", "MAJOR=1", "MINOR=3", "DEVNAME=null", "DEVMODE=0666")
	f.add("char", 5, 0, "devices/virtual/tty/tty", "tty", "", "MAJOR=5", "MINOR=0", "DEVNAME=tty", "DEVMODE=0666")
	f.add("char", 4, 7, "devices/virtual/tty/tty7", "tty", "", "MAJOR=4", "MINOR=7", "DEVNAME=tty7")
	f.add("char", 13, 64, "devices/platform/i8042/serio0/input/input0/event0", "input", "", "MAJOR=13", "MINOR=64", "DEVNAME=input/event0")
	f.add("block", 254, 0, "devices/pci0000:00/0000:00:05.0/virtio2/block/vda", "block", "", "MAJOR=254", "MINOR=0", "DEVNAME=vda", "DEVTYPE=disk", "DISKSEQ=9")
	f.add("block", 254, 1, "devices/pci0000:00/0000:00:05.0/virtio2/block/vda/vda1", "block", "", "MAJOR=254", "MINOR=1", "DEVNAME=vda1", "DEVTYPE=partition", "PARTN=1")
	f.add("char", 10, 229, "devices/virtual/misc/fuse", "misc", "fuse", "MAJOR=10", "MINOR=229", "DEVNAME=fuse", "DEVMODE=0666")
	f.add("char", 245, 0, "devices/virtual/nameless/x0", "nameless", "", "MAJOR=245", "MINOR=0")
	f.add("char", 246, 0, "devices/virtual/evil/up", "evil", "", "MAJOR=246", "MINOR=0", "DEVNAME=../etc/passwd")
	f.add("char", 246, 1, "devices/virtual/evil/abs", "evil", "", "MAJOR=246", "MINOR=1", "DEVNAME=/etc/shadow")
	f.add("char", 246, 2, "devices/virtual/evil/lie", "evil", "", "MAJOR=9", "MINOR=9", "DEVNAME=lie")
	return f
}

func TestColdplugFakeSysfs(t *testing.T) {
	f := fakeMachine(t)
	r := newRig(t, Options{SysfsRoot: f.root})
	if err := r.src.Coldplug(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"null":         "char 1:3 0666 0:0",   // DEVMODE
		"tty":          "char 5:0 0666 0:5",   // DEVMODE, the catalogue's group
		"tty7":         "char 4:7 0620 0:5",   // the catalogue's tty7
		"input/event0": "char 13:64 0660 0:0", // a subdirectory; the catalogue's mode
		"input":        "dir 0:0 0755 0:0",
		"vda":          "block 254:0 0660 0:6", // any block device: disk
		"vda1":         "block 254:1 0660 0:6",
		"fuse":         "char 10:229 0666 0:0",
	} {
		if got := r.node(p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"x0", "etc", "etc/passwd", "lie", "up", "abs"} {
		if got := r.node(p); got != "" {
			t.Errorf("%s registered: %s", p, got)
		}
	}
	if _, err := r.ns.Resolve("../etc/passwd"); err == nil {
		t.Error("../etc/passwd resolves")
	}
	st := r.src.Stats()
	if st.Malformed != 3 || st.Devices != 7 || st.Registered != 7 || st.Rescans != 0 {
		t.Errorf("stats %+v; want 3 malformed (../, absolute, lying number), 7 devices, 7 registered", st)
	}
	d, registered, ok := r.src.Info("fuse")
	if !ok || !registered || d.Subsystem != "misc" || d.Driver != "fuse" || d.DevPath != "/devices/virtual/misc/fuse" ||
		d.Env["SUBSYSTEM"] != "misc" || d.Env["DEVPATH"] != d.DevPath || d.Env["DRIVER"] != "fuse" || d.Env["DEVMODE"] != "0666" {
		t.Errorf("Info(fuse) = %+v, %v, %v", d, registered, ok)
	}
	if d, _, ok := r.src.Info("vda1"); !ok || d.Env["PARTN"] != "1" || d.Driver != "" || d.Subsystem != "block" {
		t.Errorf("Info(vda1) = %+v, %v", d, ok)
	}
	if _, _, ok := r.src.Info("x0"); ok {
		t.Error("Info of a device without a node")
	}
	// Coldplug again changes nothing.
	ino := r.ino("null")
	n := len(r.evs.evs)
	if err := r.src.Coldplug(); err != nil {
		t.Fatal(err)
	}
	if r.ino("null") != ino || len(r.evs.evs) != n {
		t.Errorf("a second coldplug changed the namespace (%d events)", len(r.evs.evs)-n)
	}
}

func TestColdplugNeedsSysfs(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: t.TempDir()})
	if err := r.src.Coldplug(); err == nil {
		t.Fatal("coldplug of a directory without dev/char succeeded")
	}
}

func TestRescanConvergesAndKeepsUserNodes(t *testing.T) {
	f := fakeMachine(t)
	r := newRig(t, Options{SysfsRoot: f.root})
	// A user's node at a name the kernel will add, and one of its own.
	r.mknod("ttyUSB0", syscall.S_IFCHR|0600, 1, 3)
	r.mknod("mine", syscall.S_IFCHR|0644, 1, 5)
	must(t, r.src.Coldplug())
	// The kernel: vda1 goes, ttyUSB0 and loop0 come, tty7 changes its
	// number; a user removes null and replaces fuse by their own node.
	f.remove("block", 254, 1, "devices/pci0000:00/0000:00:05.0/virtio2/block/vda/vda1")
	f.add("char", 188, 0, "devices/pci0000:00/usb1/1-1/ttyUSB0/tty/ttyUSB0", "tty", "", "MAJOR=188", "MINOR=0", "DEVNAME=ttyUSB0")
	f.add("block", 7, 0, "devices/virtual/block/loop0", "block", "", "MAJOR=7", "MINOR=0", "DEVNAME=loop0")
	f.remove("char", 4, 7, "devices/virtual/tty/tty7")
	f.add("char", 4, 70, "devices/virtual/tty/tty7", "tty", "", "MAJOR=4", "MINOR=70", "DEVNAME=tty7")
	must(t, r.ns.Root().Unlink("null", userCaller))
	must(t, r.ns.Root().Unlink("fuse", userCaller))
	r.mknod("fuse", syscall.S_IFCHR|0600, 10, 229)
	userFuse := r.ino("fuse")

	must(t, r.src.Rescan())
	for p, want := range map[string]string{
		"vda1":    "",
		"loop0":   "block 7:0 0660 0:6",
		"tty7":    "char 4:70 0620 0:5",
		"null":    "char 1:3 0666 0:0",       // the kernel has it: back
		"ttyUSB0": "char 1:3 0600 1000:1000", // the user's, kept
		"mine":    "char 1:5 0644 1000:1000",
		"fuse":    "char 10:229 0600 1000:1000",
	} {
		if got := r.node(p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	if r.ino("fuse") != userFuse {
		t.Error("the user's fuse was replaced")
	}
	st := r.src.Stats()
	if st.Rescans != 1 || st.Collisions < 2 {
		t.Errorf("stats %+v; want 1 rescan and the collisions at ttyUSB0 and fuse counted", st)
	}
	if _, registered, ok := r.src.Info("ttyUSB0"); !ok || registered {
		t.Errorf("Info(ttyUSB0): known %v registered %v; want known, not registered", ok, registered)
	}
	// The kernel removes fuse: the user's node stays.
	f.remove("char", 10, 229, "devices/virtual/misc/fuse")
	must(t, r.src.Rescan())
	if r.ino("fuse") != userFuse {
		t.Error("the user's fuse was removed with the kernel's device")
	}
	// The user removes their ttyUSB0: a lookup of the name registers the
	// kernel's at once.
	must(t, r.ns.Root().Unlink("ttyUSB0", userCaller))
	if r.src.Declines("", "ttyUSB0") {
		t.Fatal("ttyUSB0 declined; the kernel has it")
	}
	if err := r.src.Load(t.Context(), "", "ttyUSB0", modloadCaller); err != nil {
		t.Fatal(err)
	}
	if got := r.node("ttyUSB0"); got != "char 188:0 0660 0:20" {
		t.Errorf("ttyUSB0 after Load: %q", got)
	}
	if !r.src.Declines("", "nvidia0") || !r.src.Declines("", "sda1") {
		t.Error("a name the kernel lacks is not declined")
	}
	if r.evs.count(dcache.KindUnregister, "mine") != 0 {
		t.Error("a user's node was unregistered")
	}
}

// A module loaded before (its device in sysfs, its add not seen): the
// load registers the device from sysfs once modprobe is done.
func TestAutoloadFindsADeviceAlreadyThere(t *testing.T) {
	f := newFakeSys(t)
	f.add("char", 10, 200, "devices/virtual/misc/tun", "misc", "", "MAJOR=10", "MINOR=200", "DEVNAME=net/tun", "DEVMODE=0666")
	r := newRig(t, Options{SysfsRoot: f.root, ModulesDevname: devnameFile(t, "tun net/tun c10:200"), Modprobe: "/bin/true"})
	if err := r.src.Load(t.Context(), "net", "tun", modloadCaller); err != nil {
		t.Fatal(err)
	}
	if got := r.node("net/tun"); got != "char 10:200 0666 0:0" {
		t.Fatalf("net/tun: %q", got)
	}
	if st := r.src.Stats(); st.Autoloads != 1 {
		t.Errorf("autoloads %d", st.Autoloads)
	}
}

// A rescan reflects every uevent the kernel had counted when it began:
// uevents up to that count still queued are stale, later ones apply.
func TestRescanSupersedesQueuedUevents(t *testing.T) {
	f := fakeMachine(t)
	must(t, os.MkdirAll(filepath.Join(f.root, "kernel"), 0755))
	must(t, os.WriteFile(filepath.Join(f.root, "kernel", "uevent_seqnum"), []byte("100\n"), 0644))
	r := newRig(t, Options{SysfsRoot: f.root})
	must(t, r.src.Rescan())
	// Queued before the scan: null's remove (sysfs still has null, so it
	// came back since), a change of a device sysfs no longer has.
	r.src.Apply(uev("remove", "/devices/virtual/mem/null", 99, "SUBSYSTEM", "mem", "MAJOR", "1", "MINOR", "3", "DEVNAME", "null"))
	r.src.Apply(uev("change", "/devices/virtual/misc/gone", 100, "MAJOR", "10", "MINOR", "5", "DEVNAME", "gone"))
	if r.node("null") == "" || r.node("gone") != "" {
		t.Fatalf("queued uevents older than the scan applied: null %q, gone %q", r.node("null"), r.node("gone"))
	}
	if st := r.src.Stats(); st.Stale != 2 {
		t.Errorf("stale %d, want 2", st.Stale)
	}
	r.src.Apply(uev("remove", "/devices/virtual/mem/null", 101, "SUBSYSTEM", "mem", "MAJOR", "1", "MINOR", "3", "DEVNAME", "null"))
	if r.node("null") != "" {
		t.Fatal("a uevent after the scan not applied")
	}
}

// A lookup of a directory that modules.devname's names lie in ("net" for
// net/tun) loads their modules and waits for one of them; one of a
// directory the kernel's devices lie in brings them back.
func TestAutoloadOfADirectory(t *testing.T) {
	f := newFakeSys(t)
	f.add("char", 13, 64, "devices/platform/i8042/serio0/input/input0/event0", "input", "", "MAJOR=13", "MINOR=64", "DEVNAME=input/event0")
	// The modprobe of this test makes tun's device in the fake sysfs, as
	// loading tun would.
	prog := filepath.Join(t.TempDir(), "modprobe")
	script := `#!/bin/sh
[ "$1 $2 $3" = "-q -- tun" ] || exit 2
d="` + f.root + `/devices/virtual/misc/tun"
mkdir -p "$d" "` + f.root + `/class/misc"
printf 'MAJOR=10\nMINOR=200\nDEVNAME=net/tun\nDEVMODE=0666\n' > "$d/uevent"
ln -s ../../../class/misc "$d/subsystem"
ln -s ../../devices/virtual/misc/tun "` + f.root + `/dev/char/10:200"
`
	must(t, os.WriteFile(prog, []byte(script), 0755))
	r := newRig(t, Options{SysfsRoot: f.root, Modprobe: prog,
		ModulesDevname: devnameFile(t, "tun net/tun c10:200", "dm_mod mapper/control c10:236")})
	must(t, r.src.Coldplug())
	for _, p := range []string{"net", "mapper", "input"} {
		if r.src.Declines("", p) {
			t.Errorf("%s declined", p)
		}
	}
	if !r.src.Declines("", "snd") || !r.src.Declines("input", "mice") {
		t.Error("a directory or name nothing lies in is not declined")
	}
	if err := r.src.Load(t.Context(), "", "net", modloadCaller); err != nil {
		t.Fatal(err)
	}
	if r.node("net") != "dir 0:0 0755 0:0" || r.node("net/tun") != "char 10:200 0666 0:0" {
		t.Fatalf("after loading net: net %q, net/tun %q", r.node("net"), r.node("net/tun"))
	}
	// The user removes input/ with what is in it; a lookup of input
	// brings the kernel's devices back, without modprobe.
	must(t, r.ns.Unregister("input", userCaller))
	if err := r.src.Load(t.Context(), "", "input", modloadCaller); err != nil {
		t.Fatal(err)
	}
	if got := r.node("input/event0"); got != "char 13:64 0660 0:0" {
		t.Fatalf("input/event0: %q", got)
	}
	if st := r.src.Stats(); st.Autoloads != 1 {
		t.Errorf("autoloads %d, want 1 (tun)", st.Autoloads)
	}
}
