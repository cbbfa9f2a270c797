package config

import (
	"strings"
	"testing"
)

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
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
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.String() != tt.str {
			t.Errorf("Size(%d).String() = %q, want %q", got, got.String(), tt.str)
		}
	}
}

// Every value type: its parser, its String read back, and its errors.
func TestModeIDDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Mode
		err  string
	}{
		{"0600", 0600, ""}, {"600", 0600, ""}, {"7777", 07777, ""}, {"0", 0, ""},
		{"010000", 0, "10000 is outside 07777"}, {"999", 0, `invalid mode "999"`}, {"rwx", 0, `invalid mode "rwx"`}, {"", 0, "invalid mode"},
	} {
		got, err := ParseMode(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseMode(%q) = %v, %v; want %v, %q", tt.in, got, err, tt.want, tt.err)
		}
		if tt.err == "" {
			if back, err := ParseMode(got.String()); err != nil || back != got {
				t.Errorf("ParseMode(%q.String()) = %v, %v", got, back, err)
			}
		}
	}
	for _, tt := range []struct {
		in  string
		ok  bool
		out ID
	}{{"0", true, 0}, {"4294967294", true, MaxID}, {"4294967295", false, 0}, {"-1", false, 0}, {"root", false, 0}} {
		got, err := ParseID(tt.in)
		if (err == nil) != tt.ok || got != tt.out {
			t.Errorf("ParseID(%q) = %v, %v", tt.in, got, err)
		}
	}
	for _, tt := range []struct {
		in string
		ok bool
	}{{"1s", true}, {"500ms", true}, {"0", true}, {"soon", false}, {"5", false}} {
		d, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseDuration(%q) = %v, %v", tt.in, d, err)
		}
	}
}
