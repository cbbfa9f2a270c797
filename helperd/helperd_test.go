package helperd

import (
	"testing"

	"github.com/devfsd/devfsd/modload/devfsdconf"
)

func TestStMode(t *testing.T) {
	tests := []struct {
		typ, mode string
		want      uint32
	}{
		{"char", "0620", devfsdconf.TypeChar | 0620},
		{"block", "0660", devfsdconf.TypeBlock | 0660},
		{"dir", "1777", devfsdconf.TypeDir | 01777},
		{"symlink", "0777", devfsdconf.TypeLink | 0777},
		{"regular", "0644", devfsdconf.TypeReg | 0644},
	}
	for _, tt := range tests {
		if got := stMode(tt.typ, tt.mode); got != tt.want {
			t.Errorf("stMode(%s, %s) = %#o, want %#o", tt.typ, tt.mode, got, tt.want)
		}
	}
}
