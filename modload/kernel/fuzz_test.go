package kernel

import (
	"strings"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

// Whatever a message holds, parsing never panics, and a node it yields
// is one the Registrar takes: a clean relative path in the mount.
func FuzzParseUevent(f *testing.F) {
	f.Add(msg(addLoopEvent("1")...))
	f.Add(msg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=mem", "SEQNUM=1", "MAJOR=1", "MINOR=3", "DEVNAME=../x"))
	f.Add(msg("move@/devices/y", "ACTION=move", "DEVPATH=/devices/y", "DEVPATH_OLD=/devices/x", "SUBSYSTEM=tty", "SEQNUM=2", "MAJOR=4", "MINOR=1", "DEVNAME=tty1", "DEVMODE=0620"))
	f.Add([]byte("libudev\x00\xfe\xed\xca\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseUevent(b)
		if err != nil {
			return
		}
		if ev.Env["ACTION"] != ev.Action || !strings.HasPrefix(ev.DevPath, "/") {
			t.Fatalf("accepted %+v", ev)
		}
		n, ok, err := NodeOf(ev.Env, dcache.TypeChar, noDefaults)
		if err != nil || !ok {
			return
		}
		if err := n.Validate(); err != nil || strings.HasPrefix(n.Path, "/") {
			t.Fatalf("node %v accepted: %v", n, err)
		}
	})
}

func FuzzParseUeventFile(f *testing.F) {
	f.Add([]byte("MAJOR=1\nMINOR=3\nDEVNAME=null\nDEVMODE=0666\n"))
	f.Add([]byte("MAJOR=13\nMINOR=64\nDEVNAME=input/../../etc\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := ParseUeventFile(b)
		if err != nil {
			return
		}
		n, ok, err := NodeOf(env, dcache.TypeBlock, noDefaults)
		if err == nil && ok {
			if err := n.Validate(); err != nil {
				t.Fatalf("node %v accepted: %v", n, err)
			}
		}
	})
}
