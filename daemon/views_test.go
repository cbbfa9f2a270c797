package daemon

import (
	"strings"
	"testing"

	"github.com/devfsd/devfsd/control/wire"
)

// Values of a view from the control API are refused with the field named.
func TestViewSpecOf(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		o     wire.ViewOverride
		field string
	}{
		{wire.ViewOverride{Glob: "x", Mode: "0999"}, "overrides[0].mode"},
		{wire.ViewOverride{Glob: "x", Gid: i64(-1)}, "overrides[0].gid"},
		{wire.ViewOverride{Glob: "x", Uid: i64(4294967295)}, "overrides[0].uid"},
	} {
		v := wire.View{Mountpoint: "/d", Overrides: []wire.ViewOverride{tc.o}}
		if _, err := viewSpecOf(v); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want an error on %s", tc.o, err, tc.field)
		}
	}
}
