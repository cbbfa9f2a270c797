package daemon

import (
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
		str  string
	}{
		{"0", 0, true, "0"},
		{"1000", 1000, true, "1000"},
		{"1024", 1024, true, "1KiB"},
		{"16MiB", 16 << 20, true, "16MiB"},
		{"3 GiB", 3 << 30, true, "3GiB"},
		{"512KiB", 512 << 10, true, "512KiB"},
		{"7B", 7, true, "7"},
		{"-1", 0, false, ""},
		{"1.5MiB", 0, false, ""},
		{"1MB", 0, false, ""},
		{"", 0, false, ""},
		{"99999999999GiB", 0, false, ""},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.String() != tt.str {
			t.Errorf("ByteSize(%d).String() = %q, want %q", got, got.String(), tt.str)
		}
	}
}

// A reload may change the reloadable keys; any other change is refused
// whole, naming the key.
func TestDiffConfig(t *testing.T) {
	old := Defaults()
	next := old
	next.NegativeTimeout = 0
	next.Loader = "none"
	changed, err := DiffConfig(old, next)
	if err != nil || strings.Join(changed, ",") != "loader,negative_timeout" {
		t.Fatalf("changed %q, %v", changed, err)
	}
	next.MaxNodes = 7
	next.StateDir = "/var/lib/devfsd"
	if _, err := DiffConfig(old, next); err == nil || !strings.Contains(err.Error(), "max_nodes") ||
		!strings.Contains(err.Error(), "state_dir") {
		t.Fatalf("unreloadable change: %v", err)
	}
}
