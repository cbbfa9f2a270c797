package config

import (
	"strings"
	"testing"
)

// pts, shm and shm_size: read from the file as written, validated, and
// on with 64MiB by default.
func TestSpecialsKeys(t *testing.T) {
	d := Defaults()
	if d.Pts != "on" || d.Shm != "on" || d.ShmSize != 64<<20 || d.MaxFileSize != 0 {
		t.Fatalf("defaults: pts %q shm %q shm_size %v max_file_size %v", d.Pts, d.Shm, d.ShmSize, d.MaxFileSize)
	}
	c := Defaults()
	if err := parseYAML(&c, []byte("pts: off\nshm: required\nshm_size: 128MiB\n")); err != nil {
		t.Fatal(err)
	}
	if c.Pts != "off" || c.Shm != "required" || c.ShmSize != 128<<20 {
		t.Fatalf("parsed: %q %q %v", c.Pts, c.Shm, c.ShmSize)
	}
	c.Mountpoint = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"pts: true\n", "YAML reads it as bool"},
		{"pts: maybe\n", `pts: "maybe" is not one of on, off, required`},
		{"shm: sometimes\n", `shm: "sometimes" is not one of on, off, required`},
		{"shm_size: 0\n", "shm_size: 0 is out of range"},
		{"max_file_size: 0\nmax_bytes: 1MiB\n", ""},
		{"max_file_size: 4096GiB\nmax_bytes: 1MiB\n", ""},
	} {
		c := Defaults()
		c.Mountpoint = t.TempDir()
		err := parseYAML(&c, []byte(tc.yaml))
		if err == nil {
			err = c.Validate()
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want it to say %q", tc.yaml, err, tc.want)
		}
	}
}
