package kernel

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// The directories the source makes for its nodes go with their last
// device, as devtmpfs's do; a user's never.

// dirAdd and dirRemove are synthetic uevents of a char device named
// devname (13:minor) at DEVPATH /devices/virtual/test/ID.
func dirAdd(id string, seq uint64, minor int, devname string) Uevent {
	return uev("add", "/devices/virtual/test/"+id, seq, "MAJOR", "13", "MINOR", fmt.Sprint(minor), "DEVNAME", devname)
}

func dirRemove(id string, seq uint64, minor int, devname string) Uevent {
	return uev("remove", "/devices/virtual/test/"+id, seq, "MAJOR", "13", "MINOR", fmt.Sprint(minor), "DEVNAME", devname)
}

func TestDirectoriesGoWithTheirLastDevice(t *testing.T) {
	r := newRig(t, Options{SysfsRoot: newFakeSys(t).root})
	var seq uint64
	next := func() uint64 { seq++; return seq }

	// input/ holds two devices: it goes with the second.
	r.src.Apply(dirAdd("e0", next(), 64, "input/event0"))
	r.src.Apply(dirAdd("e1", next(), 65, "input/event1"))
	r.src.Apply(dirRemove("e0", next(), 64, "input/event0"))
	if r.node("input") == "" || r.node("input/event1") == "" {
		t.Fatal("input/ or input/event1 gone with event0")
	}
	r.src.Apply(dirRemove("e1", next(), 65, "input/event1"))
	if r.node("input") != "" {
		t.Fatal("input/ stays after its last device")
	}
	if n := r.evs.count(dcache.KindUnregister, "input"); n != 1 {
		t.Errorf("%d UNREGISTER of input, want 1", n)
	}

	// Nested: every directory the source made goes, deepest first.
	r.src.Apply(dirAdd("usb", next(), 1, "bus/usb/001/002"))
	r.src.Apply(dirRemove("usb", next(), 1, "bus/usb/001/002"))
	for _, d := range []string{"bus/usb/001", "bus/usb", "bus"} {
		if r.node(d) != "" {
			t.Errorf("%s stays", d)
		}
	}

	// A directory a user made stays; the source's below it go.
	if _, err := r.ns.Root().Mkdir("dri", 0755, userCaller); err != nil {
		t.Fatal(err)
	}
	r.src.Apply(dirAdd("card", next(), 2, "dri/by-path/card0"))
	r.src.Apply(dirRemove("card", next(), 2, "dri/by-path/card0"))
	if r.node("dri/by-path") != "" || r.node("dri") == "" {
		t.Fatalf("dri/by-path %q (the source's), dri %q (the user's)", r.node("dri/by-path"), r.node("dri"))
	}

	// A directory of the source's with a user's node in it stays.
	r.src.Apply(dirAdd("snd", next(), 3, "snd/pcm"))
	snd, err := r.ns.Resolve("snd")
	must(t, err)
	if _, err := snd.Mknod("mine", syscall.S_IFREG|0644, 0, 0, userCaller); err != nil {
		t.Fatal(err)
	}
	r.src.Apply(dirRemove("snd", next(), 3, "snd/pcm"))
	if r.node("snd") == "" || r.node("snd/mine") == "" {
		t.Fatal("snd/ or the user's snd/mine removed")
	}
	// ... and goes with the next device of its that goes once it is empty.
	must(t, snd.Unlink("mine", userCaller))
	r.src.Apply(dirAdd("snd", next(), 3, "snd/pcm"))
	r.src.Apply(dirRemove("snd", next(), 3, "snd/pcm"))
	if r.node("snd") != "" {
		t.Fatal("snd/ stays once empty")
	}

	// A directory of the source's that a user replaced is the user's.
	r.src.Apply(dirAdd("hid", next(), 4, "hid/raw0"))
	hid, err := r.ns.Resolve("hid")
	must(t, err)
	must(t, hid.Unlink("raw0", userCaller))
	must(t, r.ns.Root().Rmdir("hid", userCaller))
	if _, err := r.ns.Root().Mkdir("hid", 0700, userCaller); err != nil {
		t.Fatal(err)
	}
	r.src.Apply(dirRemove("hid", next(), 4, "hid/raw0"))
	if r.node("hid") == "" {
		t.Fatal("the user's hid/ removed")
	}

	// The user removed the node: its directory still goes with the
	// device.
	r.src.Apply(dirAdd("tpm", next(), 5, "tpm/tpm0"))
	tpm, err := r.ns.Resolve("tpm")
	must(t, err)
	must(t, tpm.Unlink("tpm0", userCaller))
	r.src.Apply(dirRemove("tpm", next(), 5, "tpm/tpm0"))
	if r.node("tpm") != "" {
		t.Fatal("tpm/ stays after its device and node went")
	}
	if st := r.src.Stats(); st.Devices != 0 || st.Registered != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A rescan that finds a device gone removes its directories too.
func TestRescanRemovesTheDirectoriesOfGoneDevices(t *testing.T) {
	f := newFakeSys(t)
	f.add("char", 13, 64, "devices/platform/i8042/serio0/input/input0/event0", "input", "", "MAJOR=13", "MINOR=64", "DEVNAME=input/event0")
	r := newRig(t, Options{SysfsRoot: f.root})
	must(t, r.src.Coldplug())
	if r.node("input/event0") == "" {
		t.Fatal("input/event0 not registered")
	}
	f.remove("char", 13, 64, "devices/platform/i8042/serio0/input/input0/event0")
	must(t, r.src.Rescan())
	if r.node("input") != "" {
		t.Fatal("input/ stays after a rescan found its device gone")
	}
}

// A remove uevent never removes a node a user made at the device's name,
// whenever the user makes it: the source adds and removes a device at x
// while a user unlinks x and makes a node of their own there, all the
// time; no UNREGISTER may name a node the source did not register.
func TestHammerUnregisterKeepsTheUsersNode(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			var users sync.Map // inode numbers of the user's nodes
			var removedUsers atomic.Uint64
			ns := dcache.New(dcache.Options{NegativeTTL: -1, Sink: sinkOf(func(ev dcache.Event) {
				if ev.Kind == dcache.KindUnregister {
					if _, ok := users.Load(ev.Ino); ok {
						removedUsers.Add(1)
					}
				}
			})})
			src, err := New(Options{Namespace: DcacheNamespace{NS: ns, Caller: kernelCaller}, SysfsRoot: newFakeSys(t).root,
				ModulesDevname: filepath.Join(t.TempDir(), "no-modules.devname"), Logger: zapNop})
			must(t, err)
			stop := time.Now().Add(time.Second)
			var wg sync.WaitGroup
			var adds atomic.Uint64
			wg.Add(2)
			go func() {
				defer wg.Done()
				var seq uint64
				for time.Now().Before(stop) && removedUsers.Load() == 0 {
					seq++
					src.Apply(uev("add", "/devices/virtual/test/x", seq, "MAJOR", "10", "MINOR", "200", "DEVNAME", "x"))
					seq++
					src.Apply(uev("remove", "/devices/virtual/test/x", seq, "MAJOR", "10", "MINOR", "200", "DEVNAME", "x"))
					adds.Add(1)
				}
			}()
			go func() {
				defer wg.Done()
				root := ns.Root()
				for time.Now().Before(stop) && removedUsers.Load() == 0 {
					_ = root.Unlink("x", userCaller) // the source's node, or the user's own
					runtime.Gosched()
					if n, err := root.Mknod("x", syscall.S_IFCHR|0600, 1, 3, userCaller); err == nil {
						users.Store(n.Ino(), true)
					}
					runtime.Gosched()
				}
			}()
			wg.Wait()
			if n := removedUsers.Load(); n != 0 {
				t.Fatalf("a remove uevent removed the user's node at x (%d times)", n)
			}
			t.Logf("%d adds and removes", adds.Load())
		})
	}
}

// sinkOf adapts a function to a dcache.Sink.
type sinkOf func(dcache.Event)

func (f sinkOf) Event(ev dcache.Event) { f(ev) }
