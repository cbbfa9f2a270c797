package dcache

import "testing"

func TestOriginNames(t *testing.T) {
	for o, want := range map[Origin]string{OriginBuiltin: "builtin", OriginFUSE: "fuse",
		OriginLoader: "loader", OriginControl: "control", OriginKernel: "kernel", OriginKernel + 1: "invalid"} {
		if got := o.String(); got != want {
			t.Errorf("Origin(%d).String() = %q, want %q", o, got, want)
		}
	}
}
