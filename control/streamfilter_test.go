package control

import (
	"os"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

// Changes the helper (this process) makes through the mount are not
// streamed to it; a stranger's, interleaved with them in one batch, are,
// in order.
func TestHelperStreamLeavesOutTheHelpersOwnMountChanges(t *testing.T) {
	r := newHelperRig(t, 0)
	self := dcache.Caller{Pid: uint32(os.Getpid()), Origin: dcache.OriginFUSE}
	stranger := dcache.Caller{Pid: 1, Origin: dcache.OriginFUSE}
	spec := dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}
	order := []struct {
		name string
		c    dcache.Caller
	}{{"own1", self}, {"own2", self}, {"str1", stranger}, {"own3", self}, {"str2", stranger}, {"str3", stranger}, {"own4", self}}
	for _, o := range order {
		if _, err := r.ns.Register(o.name, spec, o.c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.ns.Register("marker", spec, dcache.Caller{Origin: dcache.OriginControl}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		rec, err := r.hs.Next()
		if err != nil {
			t.Fatalf("helper stream: %v", err)
		}
		if rec.Type != "event" {
			continue
		}
		if rec.Path == "marker" {
			break
		}
		got = append(got, rec.Path)
	}
	if g := strings.Join(got, " "); g != "str1 str2 str3" {
		t.Fatalf("streamed to the helper: %q, want the stranger's changes only, %q", g, "str1 str2 str3")
	}
}
