package builtin

import (
	"context"
	"errors"
	"path"
	"strings"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Declines is true exactly for the names Load answers ENOENT without
// registering anything: every catalogue and extension name, and the
// directories their nodes live in, are not declined.
func TestDeclinesExactlyWhatLoadCannotProvide(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	if _, err := l.SetExtensions([]Module{widgetModule()}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		dir, name string
		declined  bool
	}{
		{"", "null", false},    // base
		{"", "loop3", false},   // a catalogue module on a miss
		{"net", "tun", false},  // in a directory
		{"", "net", false},     // a directory the catalogue fills
		{"", "widget0", false}, // an extension
		{"", "widgets", false}, // an extension's directory
		{"", "nothing", true},
		{"net", "nothing", true},
		{"nowhere", "tun", true},
		{"net/", "tun", false}, // an unclean dir is cleaned as path.Join would
		{"./net", "tun", false},
		{"net", "../loop3", false},
	} {
		if got := l.Declines(tt.dir, tt.name); got != tt.declined {
			t.Errorf("Declines(%q, %q) = %v, want %v", tt.dir, tt.name, got, tt.declined)
		}
		if !tt.declined {
			continue
		}
		before := len(ns.nodes)
		err := l.Load(context.Background(), tt.dir, tt.name, dcache.Caller{})
		if !errors.Is(err, syscall.ENOENT) || len(ns.nodes) != before {
			t.Errorf("Load of declined %q/%q: %v, %d nodes registered; want ENOENT and none",
				tt.dir, tt.name, err, len(ns.nodes)-before)
		}
	}
}

// Declines is asked on every miss of a name nobody provides: for a plain
// name in a clean directory it allocates nothing.
func TestDeclinesAllocatesNothing(t *testing.T) {
	l := New(newFakeNS(), nil)
	if n := testing.AllocsPerRun(1000, func() {
		if !l.Declines("churn", "c0001234") || !l.Declines("", "c0001234") {
			t.Fatal("a name nobody provides was not declined")
		}
	}); n != 0 {
		t.Errorf("Declines allocates %.1f times per call, want 0", n)
	}
}

// No name a catalogue or extension module provides, nor any directory
// they fill, is declined, whichever way Declines decides it (the
// directory set or the index).
func TestDeclinesNoProvidedPath(t *testing.T) {
	l := New(newFakeNS(), nil)
	if _, err := l.SetExtensions([]Module{widgetModule(), {Name: "deep", Nodes: []modload.Node{
		{Path: "a/b/c/node", Type: dcache.TypeChar, Major: 240, Minor: 9, Perm: 0600},
	}}}); err != nil {
		t.Fatal(err)
	}
	paths := []string{"a", "a/b", "a/b/c", "a/b/c/node", "widgets/first"}
	for p := range index {
		paths = append(paths, p)
	}
	for _, p := range paths {
		dir, name := path.Split(p)
		if l.Declines(strings.TrimSuffix(dir, "/"), name) {
			t.Errorf("Declines(%q, %q): declined, but a module provides %s", strings.TrimSuffix(dir, "/"), name, p)
		}
	}
	for _, tt := range [][2]string{{"a/b", "nothing"}, {"a/b/c", "other"}, {"snd", "nothing"}, {"d", "c0000001"}} {
		if !l.Declines(tt[0], tt[1]) {
			t.Errorf("Declines(%q, %q) = false for a name nobody provides", tt[0], tt[1])
		}
	}
}
