package builtin

import (
	"fmt"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Group ids used in the catalogue. These groups are static in Debian's
// base-passwd (and the same in Fedora's setup package), so their numbers are
// portable. Groups that distributions allocate dynamically at install time
// (kvm, input, render) have no portable number: their nodes stay owned by
// root with the mode a systemd-udev host gives them.
const (
	gidRoot    = 0
	gidTTY     = 5
	gidDisk    = 6
	gidDialout = 20
	gidAudio   = 29
	gidVideo   = 44
)

// BaseModule is the name of the module registered at start: the nodes every
// /dev has (DESIGN.md section 5, "a base set at start").
const BaseModule = "base"

// Module is one loadable unit of the catalogue: a name and the nodes it
// registers when loaded, in order.
type Module struct {
	Name        string
	Description string
	Nodes       []modload.Node
}

// The helpers below keep the catalogue a table: one line per device or per
// numbered family of devices. Every number here is checked by
// catalogue_test.go against a table transcribed from the kernel's
// Documentation/admin-guide/devices.txt.

func dev(t dcache.Type, path string, major, minor, perm, gid uint32) modload.Node {
	return modload.Node{Path: path, Type: t, Major: major, Minor: minor, Perm: perm, GID: gid}
}

func chr(path string, major, minor, perm, gid uint32) modload.Node {
	return dev(dcache.TypeChar, path, major, minor, perm, gid)
}

func blk(path string, major, minor, perm, gid uint32) modload.Node {
	return dev(dcache.TypeBlock, path, major, minor, perm, gid)
}

func dir(path string, perm uint32) modload.Node {
	return modload.Node{Path: path, Type: dcache.TypeDir, Perm: perm}
}

func symlink(path, target string) modload.Node {
	return modload.Node{Path: path, Type: dcache.TypeSymlink, Perm: 0777, Target: target}
}

// devSeq is the family fmt.Sprintf(pattern, i) for i in [0, n) of type t,
// numbered major:(minor0+i).
func devSeq(t dcache.Type, pattern string, n int, major, minor0, perm, gid uint32) []modload.Node {
	nodes := make([]modload.Node, 0, n)
	for i := 0; i < n; i++ {
		nodes = append(nodes, dev(t, fmt.Sprintf(pattern, i), major, minor0+uint32(i), perm, gid))
	}
	return nodes
}

func chrSeq(pattern string, n int, major, minor0, perm, gid uint32) []modload.Node {
	return devSeq(dcache.TypeChar, pattern, n, major, minor0, perm, gid)
}

func blkSeq(pattern string, n int, major, minor0, perm, gid uint32) []modload.Node {
	return devSeq(dcache.TypeBlock, pattern, n, major, minor0, perm, gid)
}

// scsiDisk is the module for the disk sdX (X = 'a'+i): the whole disk and
// partitions 1..15. Disks a..p are block major 8, q..af major 65; 16 minors
// each (devices.txt, majors 8 and 65).
func scsiDisk(i int) Module {
	name := fmt.Sprintf("sd%c", 'a'+i)
	major, base := uint32(8), uint32(16*i)
	if i >= 16 {
		major, base = 65, uint32(16*(i-16))
	}
	nodes := []modload.Node{blk(name, major, base, 0660, gidDisk)}
	for p := uint32(1); p <= 15; p++ {
		nodes = append(nodes, blk(fmt.Sprintf("%s%d", name, p), major, base+p, 0660, gidDisk))
	}
	return Module{Name: name, Description: fmt.Sprintf("SCSI disk %s and its partitions 1-15", name), Nodes: nodes}
}

func cat(parts ...[]modload.Node) []modload.Node {
	var out []modload.Node
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(n ...modload.Node) []modload.Node { return n }

// catalogue is the built-in module table. Names of device and symlink nodes
// never collide between modules (checked at init and by the tests); a
// directory may be shared. A module lists its directories before their
// contents, so they are 0755 root:root as devtmpfs makes them, whatever
// owner the Registrar would give a parent it creates.
var catalogue = buildCatalogue()

func buildCatalogue() []Module {
	mods := []Module{
		{Name: BaseModule, Description: "memory devices, tty, console, ptmx, kmsg, fd links, pts/ and shm/", Nodes: one(
			chr("null", 1, 3, 0666, gidRoot),
			chr("zero", 1, 5, 0666, gidRoot),
			chr("full", 1, 7, 0666, gidRoot),
			chr("random", 1, 8, 0666, gidRoot),
			chr("urandom", 1, 9, 0666, gidRoot),
			chr("kmsg", 1, 11, 0644, gidRoot),
			chr("tty", 5, 0, 0666, gidTTY),
			chr("console", 5, 1, 0600, gidRoot),
			chr("ptmx", 5, 2, 0666, gidTTY),
			// devices.txt, "Compulsory links".
			symlink("fd", "/proc/self/fd"),
			symlink("stdin", "fd/0"),
			symlink("stdout", "fd/1"),
			symlink("stderr", "fd/2"),
			dir("pts", 0755),
			dir("shm", 01777),
		)},
		{Name: "loop", Description: "loop block devices 0-7 and loop-control", Nodes: cat(
			blkSeq("loop%d", 8, 7, 0, 0660, gidDisk),
			one(chr("loop-control", 10, 237, 0660, gidDisk)),
		)},
		{Name: "vt", Description: "virtual consoles tty0-tty63", Nodes: chrSeq("tty%d", 64, 4, 0, 0620, gidTTY)},
		{Name: "serial", Description: "8250 UART serial ports ttyS0-ttyS3", Nodes: chrSeq("ttyS%d", 4, 4, 64, 0660, gidDialout)},
		{Name: "tun", Description: "TUN/TAP network device", Nodes: one(dir("net", 0755), chr("net/tun", 10, 200, 0666, gidRoot))},
		{Name: "kvm", Description: "kernel-based virtual machine", Nodes: one(chr("kvm", 10, 232, 0666, gidRoot))},
		{Name: "vhost-net", Description: "host kernel accelerator for virtio net", Nodes: one(chr("vhost-net", 10, 238, 0666, gidRoot))},
		{Name: "vhost-vsock", Description: "host kernel driver for virtio vsock", Nodes: one(chr("vhost-vsock", 10, 241, 0666, gidRoot))},
		{Name: "fuse", Description: "filesystem in user space", Nodes: one(chr("fuse", 10, 229, 0666, gidRoot))},
		{Name: "cuse", Description: "character device in user space", Nodes: one(chr("cuse", 10, 203, 0600, gidRoot))},
		{Name: "input", Description: "input core: the unified mouse and event queues 0-31", Nodes: cat(
			one(dir("input", 0755), chr("input/mice", 13, 63, 0660, gidRoot)),
			chrSeq("input/event%d", 32, 13, 64, 0660, gidRoot),
		)},
		// devices.txt names 10:223 /dev/input/uinput; the kernel has
		// registered it as /dev/uinput for years, which is where every
		// user of it looks.
		{Name: "uinput", Description: "user level driver support for input", Nodes: one(chr("uinput", 10, 223, 0600, gidRoot))},
		{Name: "dri", Description: "direct rendering: card0 and its render node", Nodes: one(
			dir("dri", 0755),
			chr("dri/card0", 226, 0, 0660, gidVideo),
			chr("dri/renderD128", 226, 128, 0666, gidRoot),
		)},
		{Name: "fb", Description: "first frame buffer", Nodes: one(chr("fb0", 29, 0, 0660, gidVideo))},
		{Name: "nvidia", Description: "Nvidia cards 0-7 and the control device", Nodes: cat(
			chrSeq("nvidia%d", 8, 195, 0, 0666, gidRoot),
			one(chr("nvidiactl", 195, 255, 0666, gidRoot)),
		)},
		// devices.txt gives ALSA major 116 without minors; these are the
		// static minors of include/sound/minors.h for card 0, device 0.
		{Name: "snd", Description: "ALSA card 0: control, pcm, hwdep, midi, sequencer, timer", Nodes: one(
			dir("snd", 0755),
			chr("snd/controlC0", 116, 0, 0660, gidAudio),
			chr("snd/seq", 116, 1, 0660, gidAudio),
			chr("snd/hwC0D0", 116, 4, 0660, gidAudio),
			chr("snd/midiC0D0", 116, 8, 0660, gidAudio),
			chr("snd/pcmC0D0p", 116, 16, 0660, gidAudio),
			chr("snd/pcmC0D0c", 116, 24, 0660, gidAudio),
			chr("snd/timer", 116, 33, 0660, gidAudio),
		)},
		// The Open Sound System's card 0 (devices.txt, major 14), what
		// ALSA's OSS emulation (snd-pcm-oss, snd-mixer-oss, snd-seq-oss)
		// registers and what devfsd.conf files of the 2.4 era name.
		{Name: "sound", Description: "OSS sound card 0: mixer, sequencer, midi00, dsp, audio, sequencer2", Nodes: one(
			chr("mixer", 14, 0, 0660, gidAudio),
			chr("sequencer", 14, 1, 0660, gidAudio),
			chr("midi00", 14, 2, 0660, gidAudio),
			chr("dsp", 14, 3, 0660, gidAudio),
			chr("audio", 14, 4, 0660, gidAudio),
			chr("sequencer2", 14, 8, 0660, gidAudio),
		)},
		{Name: "i2c-dev", Description: "I2C adapters 0-15", Nodes: chrSeq("i2c-%d", 16, 89, 0, 0600, gidRoot)},
		{Name: "watchdog", Description: "watchdog timer", Nodes: one(chr("watchdog", 10, 130, 0600, gidRoot))},
		{Name: "hwrng", Description: "hardware random number generator", Nodes: one(chr("hwrng", 10, 183, 0600, gidRoot))},
		{Name: "dm", Description: "device-mapper control", Nodes: one(dir("mapper", 0755), chr("mapper/control", 10, 236, 0600, gidRoot))},
		{Name: "btrfs", Description: "btrfs control device", Nodes: one(chr("btrfs-control", 10, 234, 0600, gidRoot))},
		{Name: "autofs", Description: "autofs control device", Nodes: one(chr("autofs", 10, 235, 0600, gidRoot))},
		{Name: "uhid", Description: "user-space I/O driver support for HID", Nodes: one(chr("uhid", 10, 239, 0600, gidRoot))},
		{Name: "rfkill", Description: "radio transmission switches", Nodes: one(chr("rfkill", 10, 242, 0664, gidRoot))},
		{Name: "vfio", Description: "VFIO container", Nodes: one(dir("vfio", 0755), chr("vfio/vfio", 10, 196, 0666, gidRoot))},
		{Name: "ppp", Description: "device independent PPP interface", Nodes: one(chr("ppp", 108, 0, 0600, gidRoot))},
	}
	for i := 0; i < 26; i++ {
		mods = append(mods, scsiDisk(i))
	}
	return mods
}
