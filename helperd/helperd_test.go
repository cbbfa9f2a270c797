package helperd

import (
	"testing"

	"github.com/devfsd/devfsd/control/wire"
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

// The batch keeps registrations in order, answers for the paths it
// holds, knows the directories above them, and forgets a removed one.
func TestBatch(t *testing.T) {
	b := newBatch()
	target := "dsp"
	b.add(wire.RegisterRequest{Path: "snd/dsp", Type: "char", Mode: "0660"})
	b.add(wire.RegisterRequest{Path: "snd/audio", Type: "symlink", Target: &target})
	b.add(wire.RegisterRequest{Path: "mixer", Type: "char", Mode: "0600"})
	if req, ok := b.get("snd/audio"); !ok || *req.Target != "dsp" {
		t.Fatalf("get snd/audio: %+v %v", req, ok)
	}
	for p, want := range map[string]bool{"snd": true, "": true, "sn": false, "snd/dsp": false, "mixer": false} {
		if got := b.above(p); got != want {
			t.Errorf("above(%q) = %v, want %v", p, got, want)
		}
	}
	b.remove("snd/dsp")
	if _, ok := b.get("snd/dsp"); ok || len(b.regs) != 2 || b.regs[0].Path != "snd/audio" {
		t.Fatalf("after remove: %+v", b.regs)
	}
	if !b.above("snd") {
		t.Error("above(snd) after removing one of its two paths: false")
	}
	b.remove("snd/audio")
	if b.above("snd") || !b.above("") {
		t.Errorf("after removing snd's last path: above(snd) %v, above(\"\") %v; want false, true", b.above("snd"), b.above(""))
	}
	b.add(wire.RegisterRequest{Path: "a/b/c", Type: "char"})
	for p, want := range map[string]bool{"a": true, "a/b": true, "a/b/c": false, "b": false} {
		if got := b.above(p); got != want {
			t.Errorf("above(%q) with a/b/c = %v, want %v", p, got, want)
		}
	}
	b.remove("a/b/c")
	b.add(wire.RegisterRequest{Path: "snd/audio", Type: "symlink", Target: &target})
	if req, ok := b.get("mixer"); !ok || req.Path != "mixer" {
		t.Fatalf("index after remove: %+v %v", req, ok)
	}
	// The node the daemon would answer, defaults included.
	if n := nodeOf(wire.RegisterRequest{Path: "fd", Type: "symlink", Target: &target}); n.Mode != "0777" || n.Target != "dsp" {
		t.Fatalf("nodeOf symlink: %+v", n)
	}
	ma, mi := int64(14), int64(3)
	if n := nodeOf(wire.RegisterRequest{Path: "dsp", Type: "char", Major: &ma, Minor: &mi}); n.Mode != "0600" || n.Major != 14 || n.Minor != 3 {
		t.Fatalf("nodeOf char: %+v", n)
	}
}

// Make's registration is the one a plain register would send; a regular
// file is refused.
func TestMakeRequest(t *testing.T) {
	req, err := makeRequest("sda", devfsdconf.Stat{Mode: devfsdconf.TypeBlock | 0o640, UID: 0, GID: 6, Major: 8}, 0o640)
	if err != nil || req.Type != "block" || req.Mode != "0640" || *req.Major != 8 || *req.Minor != 0 || *req.Gid != 6 {
		t.Fatalf("block: %+v %v", req, err)
	}
	req, err = makeRequest("cdrom", devfsdconf.Stat{Mode: devfsdconf.TypeLink | 0o777, Target: "sr0"}, 0o777)
	if err != nil || req.Type != "symlink" || req.Mode != "" || *req.Target != "sr0" {
		t.Fatalf("symlink: %+v %v", req, err)
	}
	if _, err := makeRequest("f", devfsdconf.Stat{Mode: devfsdconf.TypeReg | 0o644}, 0o644); err == nil {
		t.Fatal("a regular file was accepted")
	}
}
