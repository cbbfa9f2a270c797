package kernel

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

func TestApplyUevents(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: newFakeSys(t).root})
	const hid = "/devices/pci0000:00/usb1/1-2/1-2:1.0/0003:046D:C52B.0001/hidraw/hidraw0"
	add := uev("add", hid, 10, "SUBSYSTEM", "hidraw", "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw0")
	r.src.Apply(add)
	if got := r.node("hidraw0"); got != "char 241:0 0600 0:0" {
		t.Fatalf("after add: %q", got)
	}
	ino := r.ino("hidraw0")

	// add again (a synthetic "echo add"): idempotent.
	again := uev("add", hid, 11, "SUBSYSTEM", "hidraw", "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw0", "SYNTH_UUID", "0")
	r.src.Apply(again)
	if r.ino("hidraw0") != ino || r.evs.count(dcache.KindRegister, "hidraw0") != 1 {
		t.Fatal("a second add re-registered the node")
	}
	if d, _, _ := r.src.Info("hidraw0"); d.Env["SYNTH_UUID"] != "0" || d.Seq != 11 {
		t.Errorf("Info after the second add: %+v", d)
	}

	// A stale uevent (SEQNUM not after the last) is ignored.
	r.src.Apply(uev("remove", hid, 11, "SUBSYSTEM", "hidraw", "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw0"))
	if r.ino("hidraw0") != ino || r.src.Stats().Stale != 1 {
		t.Fatalf("stale remove applied (stats %+v)", r.src.Stats())
	}

	// change raises CHANGE and keeps the node, and a user's chmod.
	n, _ := r.ns.Resolve("hidraw0")
	if _, err := n.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: 0640}, userCaller); err != nil {
		t.Fatal(err)
	}
	before := r.evs.count(dcache.KindChange, "hidraw0")
	r.src.Apply(uev("change", hid, 12, "SUBSYSTEM", "hidraw", "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw0"))
	if r.evs.count(dcache.KindChange, "hidraw0") != before+1 || r.ino("hidraw0") != ino || r.node("hidraw0") != "char 241:0 0640 0:0" {
		t.Fatalf("change: %d CHANGE events (before %d), node %q", r.evs.count(dcache.KindChange, "hidraw0"), before, r.node("hidraw0"))
	}

	// bind and unbind update DRIVER.
	r.src.Apply(uev("bind", hid, 13, "SUBSYSTEM", "hidraw", "DRIVER", "hid-generic"))
	if d, _, _ := r.src.Info("hidraw0"); d.Driver != "hid-generic" || d.Env["DRIVER"] != "hid-generic" {
		t.Errorf("after bind: %+v", d)
	}
	r.src.Apply(uev("unbind", hid, 14, "SUBSYSTEM", "hidraw"))
	if d, _, _ := r.src.Info("hidraw0"); d.Driver != "" || d.Env["DRIVER"] != "" {
		t.Errorf("after unbind: %+v", d)
	}

	// move with a new name renames: the old name goes, the new comes.
	const moved = "/devices/pci0000:00/usb1/1-3/hidraw/hidraw5"
	r.src.Apply(uev("move", moved, 15, "SUBSYSTEM", "hidraw", "DEVPATH_OLD", hid, "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw5"))
	if r.node("hidraw0") != "" || r.node("hidraw5") != "char 241:0 0600 0:0" {
		t.Fatalf("after move: hidraw0 %q hidraw5 %q", r.node("hidraw0"), r.node("hidraw5"))
	}
	if d, _, _ := r.src.Info("hidraw5"); d.DevPath != moved {
		t.Errorf("Info after move: %+v", d)
	}
	// move keeping the name re-keys the device, the node stays.
	ino5 := r.ino("hidraw5")
	const moved2 = "/devices/pci0000:00/usb1/1-4/hidraw/hidraw5"
	r.src.Apply(uev("move", moved2, 16, "SUBSYSTEM", "hidraw", "DEVPATH_OLD", moved, "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw5"))
	if r.ino("hidraw5") != ino5 {
		t.Fatal("a move that kept the name re-registered")
	}

	// remove unregisters.
	r.src.Apply(uev("remove", moved2, 17, "SUBSYSTEM", "hidraw", "MAJOR", "241", "MINOR", "0", "DEVNAME", "hidraw5"))
	if r.node("hidraw5") != "" {
		t.Fatal("remove left the node")
	}
	// A remove of a device never seen changes nothing.
	r.src.Apply(uev("remove", "/devices/virtual/misc/never", 18, "MAJOR", "10", "MINOR", "1", "DEVNAME", "never"))

	// A block device: SUBSYSTEM block.
	r.src.Apply(uev("add", "/devices/virtual/block/loop123", 19, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "123", "DEVNAME", "loop123"))
	if got := r.node("loop123"); got != "block 7:123 0660 0:6" {
		t.Errorf("loop123: %q", got)
	}
	// A change of a device never seen (an add lost) registers it.
	r.src.Apply(uev("change", "/devices/virtual/misc/uinput", 20, "MAJOR", "10", "MINOR", "223", "DEVNAME", "uinput"))
	if got := r.node("uinput"); got != "char 10:223 0600 0:0" {
		t.Errorf("uinput: %q", got)
	}
	// Hostile names are refused and counted.
	for i, name := range []string{"../escape", "/abs", "a/../../b", "x\x00y"} {
		r.src.Apply(uev("add", "/devices/virtual/misc/evil", uint64(30+i), "MAJOR", "10", "MINOR", "99", "DEVNAME", name))
	}
	if st := r.src.Stats(); st.Malformed != 4 {
		t.Errorf("malformed %d, want 4", st.Malformed)
	}
	for _, p := range []string{"escape", "abs", "b", "x"} {
		if r.node(p) != "" {
			t.Errorf("%s registered", p)
		}
	}
	st := r.src.Stats()
	if st.Received["add"] != 7 || st.Received["remove"] != 3 || st.Received["change"] != 2 ||
		st.Received["move"] != 2 || st.Received["bind"] != 1 || st.Received["unbind"] != 1 {
		t.Errorf("received %v", st.Received)
	}
}

// The collision rule: a node a user made keeps its name when the kernel
// adds a device of that name; the device gets the name once it is free.
func TestCollisionKeepsTheUsersNode(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: newFakeSys(t).root})
	r.mknod("ttyACM0", syscall.S_IFCHR|0644, 1, 3)
	user := r.ino("ttyACM0")
	const acm = "/devices/pci0000:00/usb1/1-1/1-1:1.0/tty/ttyACM0"
	r.src.Apply(uev("add", acm, 1, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
	if r.ino("ttyACM0") != user || r.node("ttyACM0") != "char 1:3 0644 1000:1000" {
		t.Fatalf("the user's node was replaced: %q", r.node("ttyACM0"))
	}
	if st := r.src.Stats(); st.Collisions != 1 || st.Registered != 0 || st.Devices != 1 {
		t.Fatalf("stats %+v", st)
	}
	// change of the device: still the user's node, no CHANGE on it.
	before := r.evs.count(dcache.KindChange, "ttyACM0")
	r.src.Apply(uev("change", acm, 2, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
	if r.ino("ttyACM0") != user || r.evs.count(dcache.KindChange, "ttyACM0") != before {
		t.Fatal("a change touched the user's node")
	}
	// remove of the device: the user's node stays.
	r.src.Apply(uev("remove", acm, 3, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
	if r.ino("ttyACM0") != user {
		t.Fatal("the kernel's remove removed the user's node")
	}
	// The device comes back while the user's node is there, then the user
	// removes theirs: the next uevent of the device registers it.
	r.src.Apply(uev("add", acm, 4, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
	must(t, r.ns.Root().Unlink("ttyACM0", userCaller))
	r.src.Apply(uev("change", acm, 5, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
	if got := r.node("ttyACM0"); got != "char 166:0 0660 0:20" {
		t.Fatalf("after the user's node went: %q", got)
	}
	// A user who unlinks the kernel's node and makes their own is not
	// undone by the kernel's remove.
	must(t, r.ns.Root().Unlink("ttyACM0", userCaller))
	r.mknod("ttyACM0", syscall.S_IFCHR|0600, 166, 0)
	user = r.ino("ttyACM0")
	r.src.Apply(uev("remove", acm, 6, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
	if r.ino("ttyACM0") != user {
		t.Fatal("the user's replacement was removed")
	}
}

// Two kernel devices claiming one name: the first keeps it, the second
// gets it when the first goes.
func TestTwoDevicesOneName(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: newFakeSys(t).root})
	r.src.Apply(uev("add", "/devices/a/watchdog", 1, "SUBSYSTEM", "misc", "MAJOR", "10", "MINOR", "130", "DEVNAME", "watchdog"))
	r.src.Apply(uev("add", "/devices/b/watchdog", 2, "SUBSYSTEM", "watchdog", "MAJOR", "247", "MINOR", "0", "DEVNAME", "watchdog"))
	if got := r.node("watchdog"); got != "char 10:130 0600 0:0" {
		t.Fatalf("watchdog: %q", got)
	}
	r.src.Apply(uev("remove", "/devices/a/watchdog", 3, "SUBSYSTEM", "misc", "MAJOR", "10", "MINOR", "130", "DEVNAME", "watchdog"))
	if got := r.node("watchdog"); got != "char 247:0 0600 0:0" {
		t.Fatalf("watchdog after the first went: %q", got)
	}
	if d, registered, _ := r.src.Info("watchdog"); !registered || d.DevPath != "/devices/b/watchdog" {
		t.Fatalf("Info: %+v %v", d, registered)
	}
}

// The kernel may deliver two uevents raised at once swapped: each
// device's own keep their order, others apply whatever their order.
func TestSwappedUeventsOfTwoDevices(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: newFakeSys(t).root})
	r.src.Apply(uev("add", "/devices/virtual/block/loop301", 11, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "301", "DEVNAME", "loop301"))
	r.src.Apply(uev("add", "/devices/virtual/block/loop300", 10, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "300", "DEVNAME", "loop300"))
	if r.node("loop300") == "" || r.node("loop301") == "" {
		t.Fatalf("an add delivered after a later uevent of another device was dropped: loop300 %q loop301 %q", r.node("loop300"), r.node("loop301"))
	}
	// loop300's remove (seq 21) arrives before its change (seq 20): the
	// change is stale, loop300 stays removed.
	r.src.Apply(uev("remove", "/devices/virtual/block/loop300", 21, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "300", "DEVNAME", "loop300"))
	r.src.Apply(uev("change", "/devices/virtual/block/loop300", 20, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "300", "DEVNAME", "loop300"))
	if r.node("loop300") != "" {
		t.Fatal("a change older than the remove brought loop300 back")
	}
	// loop301's change (seq 31) after its add (11), then its stale add
	// (seq 30, older than the change) is ignored without harm.
	r.src.Apply(uev("change", "/devices/virtual/block/loop301", 31, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "301", "DEVNAME", "loop301"))
	r.src.Apply(uev("add", "/devices/virtual/block/loop301", 30, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "301", "DEVNAME", "loop301"))
	if d, _, _ := r.src.Info("loop301"); d.Seq != 31 {
		t.Errorf("loop301 at seq %d, want 31", d.Seq)
	}
	// A new add after the remove is applied.
	r.src.Apply(uev("add", "/devices/virtual/block/loop300", 40, "SUBSYSTEM", "block", "MAJOR", "7", "MINOR", "300", "DEVNAME", "loop300"))
	if r.node("loop300") == "" {
		t.Fatal("a new add after the remove was dropped")
	}
	if st := r.src.Stats(); st.Stale != 2 {
		t.Errorf("stale %d, want 2", st.Stale)
	}
}

func TestTombsAreBounded(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: newFakeSys(t).root, Logger: zapNop})
	for i := range maxTombs + 100 {
		r.src.Apply(uev("remove", fmt.Sprintf("/devices/x/%d", i), uint64(i+1), "SUBSYSTEM", "misc"))
	}
	r.src.mu.Lock()
	n, m := len(r.src.tombs), len(r.src.tombOrder)
	_, oldest := r.src.tombs["/devices/x/0"]
	_, newest := r.src.tombs[fmt.Sprintf("/devices/x/%d", maxTombs+99)]
	r.src.mu.Unlock()
	if n != maxTombs || m != maxTombs || oldest || !newest {
		t.Fatalf("tombs %d, order %d, oldest kept %v, newest kept %v", n, m, oldest, newest)
	}
}
