package builtin

import (
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

func TestDefaultAttrs(t *testing.T) {
	c, b := dcache.TypeChar, dcache.TypeBlock
	for _, tc := range []struct {
		t    dcache.Type
		path string
		want Attrs
	}{
		{c, "null", Attrs{0666, 0, gidRoot}},      // the catalogue's own node
		{c, "tty", Attrs{0666, 0, gidTTY}},        // not of the tty0-63 family
		{c, "tty5", Attrs{0620, 0, gidTTY}},       // in the catalogue
		{c, "tty64", Attrs{0620, 0, gidTTY}},      // past it: its family
		{c, "ttyS17", Attrs{0660, 0, gidDialout}}, // family ttyS, not tty
		{b, "loop100", Attrs{0660, 0, gidDisk}},   // family loop
		{c, "loop100", Attrs{0600, 0, gidRoot}},   // a char loop100 is not of it
		{c, "input/event40", Attrs{0660, 0, gidRoot}},
		{c, "dri/card3", Attrs{0660, 0, gidVideo}},
		{b, "vda", Attrs{0660, 0, gidDisk}}, // any block device
		{b, "nvme0n1p2", Attrs{0660, 0, gidDisk}},
		{c, "hidraw0", Attrs{0600, 0, gidRoot}}, // unknown char device: devtmpfs's
		{c, "12", Attrs{0600, 0, gidRoot}},
		{c, "input/3", Attrs{0600, 0, gidRoot}},
	} {
		if got := DefaultAttrs(tc.t, tc.path); got != tc.want {
			t.Errorf("DefaultAttrs(%v, %q) = %+v, want %+v", tc.t, tc.path, got, tc.want)
		}
	}
}
