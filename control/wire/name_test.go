package wire

import (
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/dcache"
)

// A name is written as a string when it is valid UTF-8, else as its
// bytes, and read back exactly either way.
func TestNameRoundTrip(t *testing.T) {
	for _, tc := range []struct{ name, json string }{
		{"net/tun", `"net/tun"`},
		{"", `""`},
		{"snd/\u00e9", `"snd/é"`},
		{"\ufffd", `"�"`}, // a real U+FFFD is a string like any other
		{"bad\xff\xfe", `[98,97,100,255,254]`},
		{"a\xc3", `[97,195]`},             // a truncated sequence
		{"\xed\xa0\x80", `[237,160,128]`}, // a surrogate encoded in UTF-8 is not UTF-8
	} {
		b, err := json.Marshal(Name(tc.name))
		if err != nil || string(b) != tc.json {
			t.Errorf("Marshal(%q) = %s, %v; want %s", tc.name, b, err, tc.json)
		}
		var back Name
		if err := json.Unmarshal(b, &back); err != nil || string(back) != tc.name {
			t.Errorf("Unmarshal(%s) = %q, %v; want %q", b, back, err, tc.name)
		}
	}
}

// What JSON cannot carry exactly is refused, never rewritten.
func TestNameRefusesInexact(t *testing.T) {
	for _, raw := range []string{
		"\"bad\xff\xfe\"", // raw bytes that are not UTF-8
		`"\ud800"`,        // a lone high surrogate
		`"x\udc00y"`,      // a lone low surrogate
		`"\ud800\u0041"`,  // a high surrogate not followed by a low one
		`"\ud800x"`,       // ... nor by an escape
	} {
		var n Name
		err := json.Unmarshal([]byte(raw), &n)
		if !errors.Is(err, ErrNotExact) {
			t.Errorf("Unmarshal(%s) = %q, %v; want ErrNotExact", raw, n, err)
		}
	}
	for _, raw := range []string{`"\ud83d\ude00"`, `"\\ud800"`, `"\u00e9"`} { // a pair; an escaped backslash; a character
		var n Name
		if err := json.Unmarshal([]byte(raw), &n); err != nil {
			t.Errorf("Unmarshal(%s): %v", raw, err)
		}
	}
	for _, raw := range []string{`[256]`, `[-1]`, `[1.5]`, `["a"]`, `[1e2]`} {
		var n Name
		if err := json.Unmarshal([]byte(raw), &n); err == nil {
			t.Errorf("Unmarshal(%s) = %q, want an error", raw, n)
		}
	}
}

// Every wire struct writes and reads its name fields as Names, and keeps
// its other fields.
func TestStructsCarryNamesExactly(t *testing.T) {
	bad := "d\xff/n\xfe"
	tgt := "t\x80"
	uid := int64(7)
	for _, v := range []any{
		&Node{Path: bad, Type: "symlink", Mode: "0777", Target: tgt, Ino: 9, Mtime: "m"},
		&List{Path: bad, Nodes: []Node{{Path: bad + "/x", Type: "dir"}}},
		&Record{Type: "lookup", ID: 3, Path: bad, Dir: &bad, Name: "n\xfe", Caller: &dcache.Caller{Pid: 1}},
		&RegisterRequest{Path: bad, Type: "symlink", Target: &tgt, Uid: &uid},
		&PathRequest{Path: bad},
		&View{Mountpoint: "/srv/\xff", Allow: []string{"a\xff*"}, Deny: []string{"ok"},
			Overrides: []ViewOverride{{Glob: "g\xff", Mode: "0660", Uid: &uid}}},
		&ViewInfo{View: View{Mountpoint: "/m\xff", Allow: []string{"x"}}, Main: true, KnownNodes: 4,
			LiveRequests: 5, NotifySent: 6, NotifyDropped: 7},
		&MountpointRequest{Mountpoint: "/m\xff"},
		&Wait{Node: Node{Path: bad, Type: "char"}, Elapsed: "1s"},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%T: %v", v, err)
		}
		if strings.Contains(string(b), `\ufffd`) || strings.Contains(string(b), "\ufffd") {
			t.Errorf("%T written with U+FFFD: %s", v, b)
		}
		back := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := json.Unmarshal(b, back); err != nil {
			t.Fatalf("%T: reading %s: %v", v, b, err)
		}
		if !reflect.DeepEqual(back, v) {
			t.Errorf("%T: %s read back as %+v, want %+v", v, b, back, v)
		}
	}
	// The request types the server decodes are written exactly too.
	for _, v := range []any{ChmodRequest{Path: bad, Mode: "0600"}, ChownRequest{Path: bad, Uid: &uid}} {
		b, _ := json.Marshal(v)
		if !strings.Contains(string(b), `"path":[100,255,47,110,254]`) {
			t.Errorf("%T: %s", v, b)
		}
	}
}

func jsonKeys(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			out = append(out, jsonKeys(f.Type)...)
			continue
		}
		out = append(out, strings.Split(f.Tag.Get("json"), ",")[0])
	}
	sort.Strings(out)
	return out
}

// viewInfoJSON lists ViewInfo's fields, with the same JSON keys.
func TestViewInfoJSONFields(t *testing.T) {
	want, got := jsonKeys(reflect.TypeOf(ViewInfo{})), jsonKeys(reflect.TypeOf(viewInfoJSON{}))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("viewInfoJSON keys %v, ViewInfo's %v", got, want)
	}
}

// recordJSON lists Record's fields, in its order, with the same JSON
// keys.
func TestRecordJSONFields(t *testing.T) {
	rt, jt := reflect.TypeOf(Record{}), reflect.TypeOf(recordJSON{})
	if rt.NumField() != jt.NumField() {
		t.Fatalf("Record has %d fields, recordJSON %d", rt.NumField(), jt.NumField())
	}
	for i := 0; i < rt.NumField(); i++ {
		if rt.Field(i).Name != jt.Field(i).Name || rt.Field(i).Tag != jt.Field(i).Tag {
			t.Errorf("field %d: Record's %s %s, recordJSON's %s %s", i, rt.Field(i).Name, rt.Field(i).Tag, jt.Field(i).Name, jt.Field(i).Tag)
		}
	}
	b, _ := json.Marshal(Record{Type: "event", Seq: 1, Kind: "REGISTER", Path: "p", NodeType: "char"})
	if string(b) != `{"type":"event","seq":1,"kind":"REGISTER","path":"p","node_type":"char"}` {
		t.Errorf("order: %s", b)
	}
}
