package viewpath

import (
	"strings"
	"testing"
)

func u32(v uint32) *uint32 { return &v }

// The glob rules: element-wise path.Match, a pattern covering a directory
// covers its subtree, a directory leading to an allow pattern is a
// passage, deny wins, no allow list allows everything.
func TestVerdicts(t *testing.T) {
	for _, tc := range []struct {
		allow, deny []string
		path        string
		want        Verdict
	}{
		{nil, nil, "anything/at/all", Shown},
		{nil, nil, "", Shown},
		{[]string{"snd/*"}, nil, "", Shown},
		{[]string{"snd/*"}, nil, "snd", Passage},
		{[]string{"snd/*"}, nil, "snd/pcm0", Shown},
		{[]string{"snd/*"}, nil, "snd/by-id/x", Shown}, // beneath a shown directory
		{[]string{"snd/*"}, nil, "sndx", Hidden},
		{[]string{"snd/*"}, nil, "null", Hidden},
		{[]string{"snd/*"}, []string{"snd/seq"}, "snd/seq", Hidden},
		{[]string{"snd/*"}, []string{"snd/seq"}, "snd/timer", Shown},
		{[]string{"snd/*"}, []string{"snd"}, "snd", Hidden},
		{[]string{"snd/*"}, []string{"snd"}, "snd/pcm0", Hidden},
		{[]string{"snd"}, nil, "snd/a/b/c", Shown},
		{[]string{"tty?"}, nil, "tty1", Shown},
		{[]string{"tty?"}, nil, "tty10", Hidden},
		{[]string{"tty[0-3]"}, nil, "tty3", Shown},
		{[]string{"tty[0-3]"}, nil, "tty4", Hidden},
		{[]string{"*/card*"}, nil, "dri", Passage},
		{[]string{"*/card*"}, nil, "dri/card0", Shown},
		{[]string{"*/card*"}, nil, "dri/renderD128", Hidden},
		{nil, []string{"kmsg", "mem"}, "kmsg", Hidden},
		{nil, []string{"kmsg", "mem"}, "null", Shown},
		{nil, []string{"input/*"}, "input", Shown},
		{nil, []string{"input/*"}, "input/event0", Hidden},
	} {
		v, err := Compile(Spec{Allow: tc.allow, Deny: tc.deny})
		if err != nil {
			t.Fatal(err)
		}
		if got := v.VerdictPath(tc.path); got != tc.want {
			t.Errorf("allow %q deny %q: %q is %v, want %v", tc.allow, tc.deny, tc.path, got, tc.want)
		}
	}
}

// A spec that does not compile names the offending entry.
func TestCompileRejects(t *testing.T) {
	for _, tc := range []struct {
		spec  Spec
		field string
	}{
		{Spec{Allow: []string{"ok", ""}}, "allow[1]"},
		{Spec{Allow: []string{"/snd"}}, "allow[0]"},
		{Spec{Deny: []string{"snd/"}}, "deny[0]"},
		{Spec{Deny: []string{"a//b"}}, "deny[0]"},
		{Spec{Deny: []string{"a/../b"}}, "deny[0]"},
		{Spec{Allow: []string{"snd/**"}}, "allow[0]"},
		{Spec{Allow: []string{"tty[0-"}}, "allow[0]"},
		{Spec{Overrides: []Override{{Glob: "x"}}}, "overrides[0]"},
		{Spec{Overrides: []Override{{Glob: "x", Mode: u32(010000)}}}, "overrides[0].mode"},
		{Spec{Overrides: []Override{{Glob: "[", Uid: u32(1)}}}, "overrides[0].glob"},
		{Spec{Overrides: []Override{{Glob: "x", Gid: u32(1<<32 - 1)}}}, "overrides[0].gid"},
		{Spec{Deny: []string{"a\x00b"}}, "deny[0]"},
		{Spec{Allow: []string{strings.Repeat("a", MaxPatternLen+1)}}, "allow[0]"},
		{Spec{Allow: make([]string, MaxPatterns+1)}, "allow"},
		{Spec{Overrides: make([]Override, MaxPatterns+1)}, "overrides"},
	} {
		_, err := Compile(tc.spec)
		ve, ok := err.(*Error)
		if !ok || ve.Field != tc.field {
			t.Errorf("%+v: error %v, want one on %s", tc.spec, err, tc.field)
		}
	}
}

// The first override that matches the whole path (not an ancestor)
// applies; none applies to the root; names that are not UTF-8 match what
// spells them.
func TestOverride(t *testing.T) {
	v, err := Compile(Spec{Allow: []string{"snd/*", "b\xff?"}, Overrides: []Override{
		{Glob: "snd/pcm*", Mode: u32(0o666), Gid: u32(29)},
		{Glob: "snd/*", Uid: u32(7)},
		{Glob: "snd", Mode: u32(0o700)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want Attrs
		ok   bool
	}{
		{"snd/pcm0", Attrs{Mode: 0o666, Gid: 29, SetMode: true, SetGid: true}, true},
		{"snd/timer", Attrs{Uid: 7, SetUid: true}, true},
		{"snd", Attrs{Mode: 0o700, SetMode: true}, true},
		{"snd/by-id/x", Attrs{}, false},
		{"", Attrs{}, false},
	} {
		var buf [MaxStackDepth]string
		got, ok := v.Override(Split(tc.path, buf[:0]))
		if ok != tc.ok || got != tc.want {
			t.Errorf("Override(%q) = %+v %v, want %+v %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	if !v.HasOverrides() {
		t.Error("HasOverrides false")
	}
	if got := v.VerdictPath("b\xff\xfe"); got != Shown {
		t.Errorf("a name that is not UTF-8: %v", got)
	}
	if got := v.VerdictPath("b\xfe\xfe"); got != Hidden {
		t.Errorf("another name that is not UTF-8: %v", got)
	}
}

// Split is allocation-free within MaxStackDepth elements.
func TestSplitAllocs(t *testing.T) {
	v, _ := Compile(Spec{Allow: []string{"a/*/c"}})
	if n := testing.AllocsPerRun(100, func() { v.VerdictPath("a/b/c/d/e/f") }); n != 0 {
		t.Errorf("%v allocations per VerdictPath", n)
	}
}
