package modload

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

func TestNodeValidate(t *testing.T) {
	tests := []struct {
		n  Node
		ok bool
	}{
		{Node{Path: "null", Type: dcache.TypeChar, Major: 1, Minor: 3, Perm: 0666}, true},
		{Node{Path: "loop0", Type: dcache.TypeBlock, Major: 7, Perm: 0660, GID: 6}, true},
		{Node{Path: "net/tun", Type: dcache.TypeChar, Major: 10, Minor: 200, Perm: 0666}, true},
		{Node{Path: "shm", Type: dcache.TypeDir, Perm: 01777}, true},
		{Node{Path: "fd", Type: dcache.TypeSymlink, Perm: 0777, Target: "/proc/self/fd"}, true},
		{Node{Path: "x", Type: dcache.TypeChar, Perm: 0}, true}, // mode 0000 is a mode
		{Node{Path: "", Type: dcache.TypeDir, Perm: 0755}, false},
		{Node{Path: "/null", Type: dcache.TypeChar, Major: 1, Minor: 3}, false},
		{Node{Path: "a/../b", Type: dcache.TypeChar}, false},
		{Node{Path: "a//b", Type: dcache.TypeChar}, false},
		{Node{Path: "a/", Type: dcache.TypeChar}, false},
		{Node{Path: "./a", Type: dcache.TypeChar}, false},
		{Node{Path: "..", Type: dcache.TypeDir}, false},
		{Node{Path: "a\x00b", Type: dcache.TypeChar}, false},
		{Node{Path: "null", Perm: 0666}, false},                                                   // no type
		{Node{Path: "null", Type: dcache.Type(9)}, false},                                         // bad type
		{Node{Path: "null", Type: dcache.TypeChar, Perm: 0100666}, false},                         // type bits in Perm
		{Node{Path: "null", Type: dcache.TypeChar, Target: "x"}, false},                           // device with target
		{Node{Path: "null", Type: dcache.TypeChar, Major: 4096}, false},                           // 12-bit major
		{Node{Path: "null", Type: dcache.TypeChar, Minor: 1 << 20}, false},                        // 20-bit minor
		{Node{Path: "d", Type: dcache.TypeDir, Major: 1}, false},                                  // dir with number
		{Node{Path: "l", Type: dcache.TypeSymlink}, false},                                        // symlink without target
		{Node{Path: "l", Type: dcache.TypeSymlink, Target: "x", Minor: 1}, false},                 // symlink with number
		{Node{Path: "d", Type: dcache.TypeDir, Target: "x"}, false},                               // dir with target
		{Node{Path: "ok/deep/path", Type: dcache.TypeBlock, Major: 4095, Minor: 1<<20 - 1}, true}, // limits
	}
	for _, tt := range tests {
		err := tt.n.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tt.n, err, tt.ok)
		}
	}
}

func TestIgnoreExist(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{nil, nil},
		{syscall.EEXIST, nil},
		{fmt.Errorf("dcache: null: %w", syscall.EEXIST), nil},
		{syscall.ENOTDIR, syscall.ENOTDIR},
		{fmt.Errorf("x: %w", fs.ErrExist), nil},
		{fs.ErrNotExist, fs.ErrNotExist},
	}
	for _, tt := range tests {
		if got := IgnoreExist(tt.err); !errors.Is(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("IgnoreExist(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestNodeString(t *testing.T) {
	tests := []struct {
		n    Node
		want string
	}{
		{Node{Path: "null", Type: dcache.TypeChar, Major: 1, Minor: 3, Perm: 0666}, "char 1:3 0666 0:0 null"},
		{Node{Path: "sda1", Type: dcache.TypeBlock, Major: 8, Minor: 1, Perm: 0660, GID: 6}, "block 8:1 0660 0:6 sda1"},
		{Node{Path: "fd", Type: dcache.TypeSymlink, Target: "/proc/self/fd"}, "symlink fd -> /proc/self/fd"},
		{Node{Path: "shm", Type: dcache.TypeDir, Perm: 01777}, "dir 1777 0:0 shm"},
	}
	for _, tt := range tests {
		if got := tt.n.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestValidateLookup(t *testing.T) {
	for _, tt := range []struct {
		dir, name string
		ok        bool
	}{
		{"", "null", true}, {"input", "event0", true},
		{"", "", false}, {"", ".", false}, {"", "..", false}, {"", "a/b", false}, {"", "a\x00", false},
		{"/input", "x", false}, {"a/../b", "x", false}, {"a//b", "x", false},
	} {
		err := ValidateLookup(tt.dir, tt.name)
		if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("ValidateLookup(%q, %q) = %v, want ok=%v (else EINVAL)", tt.dir, tt.name, err, tt.ok)
		}
	}
}
