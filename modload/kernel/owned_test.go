package kernel

import (
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"
)

// A successor daemon's source (an upgrade hands it the namespace) takes
// the nodes its predecessor's source registered as its own (Owned): no
// collision, and the kernel's remove removes them. Without Owned they
// would be a user's nodes, kept.
func TestOwnedNodesOfAPredecessor(t *testing.T) {
	for _, handed := range []bool{true, false} {
		r := newRig(t, Options{SysfsRoot: newFakeSys(t).root})
		const acm = "/devices/pci0000:00/usb1/1-1/1-1:1.0/tty/ttyACM0"
		add := uev("add", acm, 1, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0")
		r.src.Apply(add)
		ino := r.ino("ttyACM0")
		owned := r.src.Owned()
		if owned["ttyACM0"] != ino || len(owned) != 1 {
			t.Fatalf("Owned = %v, want ttyACM0 -> %d", owned, ino)
		}
		opts := Options{Namespace: r.src.opts.Namespace, SysfsRoot: newFakeSys(t).root, Logger: zaptest.NewLogger(t),
			ModulesDevname: filepath.Join(t.TempDir(), "none")}
		if handed {
			opts.Owned = owned
		}
		succ, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { succ.Close() })
		succ.Apply(add) // its coldplug of the same device
		st := succ.Stats()
		if handed && (st.Collisions != 0 || st.Registered != 1) || !handed && st.Collisions != 1 {
			t.Fatalf("handed over %v: stats %+v", handed, st)
		}
		succ.Apply(uev("remove", acm, 2, "SUBSYSTEM", "tty", "MAJOR", "166", "MINOR", "0", "DEVNAME", "ttyACM0"))
		if gone := r.node("ttyACM0") == ""; gone != handed {
			t.Fatalf("handed over %v: after the kernel's remove the node is %q", handed, r.node("ttyACM0"))
		}
	}
}
