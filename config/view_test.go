package config

import (
	"fmt"
	"strings"
	"testing"
)

// A view file is read strictly; scalars are taken as written.
func TestParseViewYAML(t *testing.T) {
	v, err := ParseView([]byte(`
mountpoint: /srv/box/dev
allow: [null, zero, "snd/*", 0]
deny:
  - snd/seq
overrides:
  - {glob: "snd/*", mode: 0660, gid: 29}
  - glob: tty
    uid: 5
`))
	if err != nil {
		t.Fatal(err)
	}
	if v.Mountpoint != "/srv/box/dev" || fmt.Sprint(v.Allow) != "[null zero snd/* 0]" || fmt.Sprint(v.Deny) != "[snd/seq]" {
		t.Fatalf("parsed %+v", v)
	}
	if len(v.Overrides) != 2 || *v.Overrides[0].Mode != 0660 || *v.Overrides[0].GID != 29 || v.Overrides[0].UID != nil ||
		*v.Overrides[1].UID != 5 {
		t.Fatalf("overrides %+v", v.Overrides)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty", ``, "empty"},
		{"no mountpoint", `allow: [x]`, "mountpoint: missing"},
		{"unknown key", "mountpoint: /d\ncolour: red", `line 2: unknown key "colour"`},
		{"twice", "mountpoint: /d\nmountpoint: /e", "line 2"},
		{"allow a scalar", "mountpoint: /d\nallow: x", "line 2: allow: want a list"},
		{"pattern a list", "mountpoint: /d\nallow: [[x]]", "allow[0]: want a single value"},
		{"override unknown key", "mountpoint: /d\noverrides: [{glob: x, owner: 1}]", `unknown key "owner"`},
		{"override without glob", "mountpoint: /d\noverrides: [{mode: '0600'}]", "overrides[0].glob: missing"},
		{"uid not a number", "mountpoint: /d\noverrides: [{glob: x, uid: root}]", "overrides[0].uid"},
		{"two documents", "mountpoint: /d\n---\nmountpoint: /e", "second YAML document"},
	} {
		_, err := ParseView([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// Values the file cannot type-check are refused with the field named.
func TestParseViewValues(t *testing.T) {
	for _, tc := range []struct{ yaml, field string }{
		{"mountpoint: /d\noverrides: [{glob: x, mode: '0999'}]", "overrides[0].mode"},
		{"mountpoint: /d\noverrides: [{glob: x, gid: -1}]", "overrides[0].gid"},
		{"mountpoint: /d\noverrides: [{glob: x, uid: 4294967295}]", "overrides[0].uid"},
	} {
		if _, err := ParseView([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%q: %v, want an error on %s", tc.yaml, err, tc.field)
		}
	}
}
