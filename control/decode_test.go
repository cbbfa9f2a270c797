package control

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

func TestDecodeRegister(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tt := range []struct {
		name, body, code string
	}{
		{"char", `{"path":"net/tun","type":"char","major":10,"minor":200,"mode":"0666"}`, ""},
		{"dir default mode", `{"path":"d","type":"dir"}`, ""},
		{"symlink", `{"path":"fd","type":"symlink","target":"/proc/self/fd"}`, ""},
		{"255-byte name", `{"path":"` + long[:255] + `","type":"fifo"}`, ""},
		{"max device numbers", `{"path":"x","type":"block","major":4095,"minor":1048575}`, ""},
		{"empty body", ``, wire.CodeBadJSON},
		{"not JSON", `{path:x}`, wire.CodeBadJSON},
		{"array", `[]`, wire.CodeBadJSON},
		{"truncated", `{"path":"x"`, wire.CodeBadJSON},
		{"trailing data", `{"path":"x","type":"dir"} {}`, wire.CodeBadJSON},
		{"unknown field", `{"path":"x","type":"dir","color":"red"}`, wire.CodeUnknownField},
		{"case-folded field", `{"PATH":"x","type":"dir"}`, wire.CodeUnknownField},
		{"duplicate field", `{"path":"x","path":"y","type":"dir"}`, wire.CodeDuplicateField},
		{"missing path", `{"type":"dir"}`, wire.CodeMissingField},
		{"missing type", `{"path":"x"}`, wire.CodeMissingField},
		{"path a number", `{"path":5,"type":"dir"}`, wire.CodeBadType},
		{"path null", `{"path":null,"type":"dir"}`, wire.CodeBadType},
		{"major a string", `{"path":"x","type":"char","major":"10","minor":1}`, wire.CodeBadType},
		{"major fractional", `{"path":"x","type":"char","major":1.5,"minor":1}`, wire.CodeBadType},
		{"major exponent", `{"path":"x","type":"char","major":1e2,"minor":1}`, wire.CodeBadType},
		{"mode a number", `{"path":"x","type":"dir","mode":420}`, wire.CodeBadType},
		{"dotdot", `{"path":"a/../b","type":"dir"}`, wire.CodeInvalidPath},
		{"dot", `{"path":"./b","type":"dir"}`, wire.CodeInvalidPath},
		{"only dotdot", `{"path":"..","type":"dir"}`, wire.CodeInvalidPath},
		{"absolute", `{"path":"/etc/x","type":"dir"}`, wire.CodeInvalidPath},
		{"trailing slash", `{"path":"x/","type":"dir"}`, wire.CodeInvalidPath},
		{"double slash", `{"path":"a//b","type":"dir"}`, wire.CodeInvalidPath},
		{"NUL", `{"path":"a\u0000b","type":"dir"}`, wire.CodeInvalidPath},
		{"root", `{"path":"","type":"dir"}`, wire.CodeInvalidPath},
		{"256-byte name", `{"path":"` + long + `","type":"dir"}`, wire.CodeNameTooLong},
		{"path too long", `{"path":"` + strings.Repeat("a/", 2100) + `a","type":"dir"}`, wire.CodePathTooLong},
		{"bad type", `{"path":"x","type":"regular"}`, wire.CodeInvalidType},
		{"negative major", `{"path":"x","type":"char","major":-1,"minor":0}`, wire.CodeInvalidDevice},
		{"major 4096", `{"path":"x","type":"char","major":4096,"minor":0}`, wire.CodeInvalidDevice},
		{"minor 1<<20", `{"path":"x","type":"char","major":1,"minor":1048576}`, wire.CodeInvalidDevice},
		{"huge major", `{"path":"x","type":"char","major":99999999999999999999999,"minor":0}`, wire.CodeInvalidDevice},
		{"device number on a dir", `{"path":"x","type":"dir","major":1}`, wire.CodeInvalidDevice},
		{"char without minor", `{"path":"x","type":"char","major":1}`, wire.CodeMissingField},
		{"mode with type bits", `{"path":"x","type":"dir","mode":"020755"}`, wire.CodeInvalidMode},
		{"mode not octal", `{"path":"x","type":"dir","mode":"0999"}`, wire.CodeInvalidMode},
		{"mode empty", `{"path":"x","type":"dir","mode":""}`, wire.CodeInvalidMode},
		{"negative uid", `{"path":"x","type":"dir","uid":-1}`, wire.CodeInvalidOwner},
		{"uid 2^32-1", `{"path":"x","type":"dir","uid":4294967295}`, wire.CodeInvalidOwner},
		{"symlink without target", `{"path":"x","type":"symlink"}`, wire.CodeMissingField},
		{"empty target", `{"path":"x","type":"symlink","target":""}`, wire.CodeInvalidTarget},
		{"target on a dir", `{"path":"x","type":"dir","target":"y"}`, wire.CodeInvalidTarget},
		{"path not UTF-8", "{\"path\":\"\xff\xfe\",\"type\":\"dir\"}", wire.CodeInvalidUTF8},
		{"path element not UTF-8", "{\"path\":\"net/t\xc3\",\"type\":\"dir\"}", wire.CodeInvalidUTF8},
		{"path a lone surrogate", `{"path":"\ud800","type":"dir"}`, wire.CodeInvalidUTF8},
		{"path a lone low surrogate", `{"path":"a\udfffb","type":"dir"}`, wire.CodeInvalidUTF8},
		{"target not UTF-8", "{\"path\":\"l\",\"type\":\"symlink\",\"target\":\"\x80\"}", wire.CodeInvalidUTF8},
		{"type not UTF-8", "{\"path\":\"x\",\"type\":\"dir\xff\"}", wire.CodeInvalidUTF8},
		{"path as bytes", `{"path":[100,255,254],"type":"dir"}`, ""},
		{"path as bytes, a byte over 255", `{"path":[100,256],"type":"dir"}`, wire.CodeBadType},
		{"path as bytes, a string in it", `{"path":["d"],"type":"dir"}`, wire.CodeBadType},
		{"path as bytes with dotdot", `{"path":[46,46],"type":"dir"}`, wire.CodeInvalidPath},
		{"path as bytes with NUL", `{"path":[97,0],"type":"dir"}`, wire.CodeInvalidPath},
		{"path as empty bytes", `{"path":[],"type":"dir"}`, wire.CodeInvalidPath},
		{"surrogate pair", `{"path":"\ud83d\ude00","type":"dir"}`, ""},
		{"a real U+FFFD", `{"path":"\ufffd","type":"dir"}`, ""},
		{"type as bytes", `{"path":"x","type":[100,105,114]}`, wire.CodeBadType},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, e := decodeRegister([]byte(tt.body))
			got := ""
			if e != nil {
				got = e.body.Code
				if e.status != 400 || e.body.Message == "" {
					t.Errorf("status %d message %q", e.status, e.body.Message)
				}
			}
			if got != tt.code {
				t.Fatalf("code %q (%v), want %q", got, e, tt.code)
			}
		})
	}
}

// A name is carried exactly: a string as it is, an array as its bytes;
// nothing is ever turned into U+FFFD.
func TestDecodeNamesExactly(t *testing.T) {
	for _, tt := range []struct{ body, path, target string }{
		{`{"path":[100,255,47,254],"type":"dir"}`, "d\xff/\xfe", ""},
		{`{"path":"snd/\u00e9","type":"dir"}`, "snd/\u00e9", ""},
		{`{"path":"l","type":"symlink","target":[47,255]}`, "l", "/\xff"},
		{`{"path":"\ud83d\ude00","type":"dir"}`, "\U0001F600", ""},
	} {
		reg, e := decodeRegister([]byte(tt.body))
		if e != nil || reg.Path != tt.path || reg.Spec.Target != tt.target {
			t.Errorf("%s: %q %q %v; want %q %q", tt.body, reg.Path, reg.Spec.Target, e, tt.path, tt.target)
		}
	}
	for _, body := range []string{"{\"path\":\"\xff\"}", `{"path":"\udc80"}`} {
		if p, e := decodePath([]byte(body)); e == nil || e.body.Code != wire.CodeInvalidUTF8 || e.body.Field != "path" {
			t.Errorf("unregister %q: %q %v; want invalid_utf8 on path", body, p, e)
		} else if !utf8.ValidString(e.body.Message) {
			t.Errorf("message not UTF-8: %q", e.body.Message)
		}
	}
	if p, _, e := decodeChmod([]byte(`{"path":[255],"mode":"0600"}`)); e != nil || p != "\xff" {
		t.Errorf("chmod of bytes: %q %v", p, e)
	}
	if c, e := decodeChown([]byte("{\"path\":\"\xfe\",\"uid\":1}")); e == nil || e.body.Code != wire.CodeInvalidUTF8 {
		t.Errorf("chown of raw bytes: %+v %v", c, e)
	}
	if _, e := decodeDone([]byte("{\"id\":1,\"error\":\"no \xff\"}")); e == nil || e.body.Code != wire.CodeInvalidUTF8 {
		t.Errorf("done with a message not UTF-8: %v", e)
	}
	// A message that quotes a name that is not UTF-8 stays UTF-8, with the
	// bytes written \xNN.
	if e := checkPath("path", "\xff/", false); e == nil || e.body.Message != `path "\xff/": paths are relative to the namespace root, without a leading or trailing slash` {
		t.Errorf("message %v", e)
	}
	if got := escapeInvalid("a\xffb\u00e9"); got != `a\xffb`+"\u00e9" {
		t.Errorf("escapeInvalid = %q", got)
	}
}

// validRegistration checks what decodeRegister promises of what it
// accepts.
func validRegistration(t *testing.T, reg registration) {
	t.Helper()
	if e := checkPath("path", reg.Path, false); e != nil {
		t.Fatalf("accepted path %q: %v", reg.Path, e)
	}
	s := reg.Spec
	if s.Mode > dcache.PermMask || s.Major > maxMajor || s.Minor > maxMinor || s.Uid > maxOwnerID || s.Gid > maxOwnerID {
		t.Fatalf("accepted %+v", s)
	}
	if (s.Type == dcache.TypeSymlink) != (s.Target != "") || strings.IndexByte(s.Target, 0) >= 0 {
		t.Fatalf("accepted target %q for %v", s.Target, s.Type)
	}
	for _, e := range strings.Split(reg.Path, "/") {
		if dcache.CheckName(e) != nil {
			t.Fatalf("accepted element %q", e)
		}
	}
}

// FuzzDecode feeds every request decoder arbitrary bodies: none may panic,
// and what the register decoder accepts must be valid. The seed corpus
// runs with every `go test`; a bounded fuzz run:
//
//	go test ./control -run '^$' -fuzz '^FuzzDecode$' -fuzztime 30s
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"path":"net/tun","type":"char","major":10,"minor":200,"mode":"0666"}`,
		`{"path":"fd","type":"symlink","target":"/proc/self/fd"}`,
		`{"path":"a/../b","type":"dir"}`,
		`{"path":"x","type":"char","major":-1,"minor":1e3}`,
		`{"path":"x","uid":1,"gid":2}`,
		`{"path":"x","mode":"7777"}`,
		`{"id":12,"error":"no such module"}`,
		`{"path":"a\u0000b"}`,
		`{"PATH":"x","path":"y"}`,
		`[1,2,3]`, `{`, `null`, `"x"`, ``,
		"{\"path\":\"\xff\xfe\",\"type\":\"dir\"}",
		`{"path":"\ud800","type":"fifo"}`,
		`{"path":"a\udc00","mode":"0600"}`,
		`{"path":"\ud83d\ude00","type":"dir"}`,
		`{"path":[100,255,254],"type":"dir"}`,
		`{"path":[256],"uid":1}`,
		`{"path":"l","type":"symlink","target":[47,128]}`,
		"{\"id\":3,\"error\":\"\xc3\"}",
		`{"path":"\ufffd","type":"socket"}`,
	} {
		f.Add([]byte(s))
	}
	// rewritten reports whether s has a U+FFFD that body does not spell:
	// a name was changed on the way in.
	rewritten := func(body []byte, s string) bool {
		return strings.Contains(s, "\uFFFD") && !bytes.Contains(body, []byte("\ufffd")) &&
			!bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if reg, e := decodeRegister(body); e == nil && (rewritten(body, reg.Path) || rewritten(body, reg.Spec.Target)) {
			t.Fatalf("decodeRegister rewrote a name: %q %q", reg.Path, reg.Spec.Target)
		}
		if p, e := decodePath(body); e == nil && rewritten(body, p) {
			t.Fatalf("decodePath rewrote %q", p)
		}
		if e := func() *apiError { _, _, e := decodeView(body); return e }(); e != nil && !utf8.ValidString(e.body.Message) {
			t.Fatalf("a message that is not UTF-8: %q", e.body.Message)
		}
		if reg, e := decodeRegister(body); e == nil {
			validRegistration(t, reg)
		} else if e.body.Code == "" || e.status < 400 {
			t.Fatalf("error without a code: %+v", e)
		}
		if p, e := decodePath(body); e == nil && checkPath("path", p, false) != nil {
			t.Fatalf("decodePath accepted %q", p)
		}
		if p, m, e := decodeChmod(body); e == nil && (checkPath("path", p, true) != nil || m > dcache.PermMask) {
			t.Fatalf("decodeChmod accepted %q %o", p, m)
		}
		if c, e := decodeChown(body); e == nil && (c.Uid == nil && c.Gid == nil) {
			t.Fatalf("decodeChown accepted no owner")
		}
		if d, e := decodeDone(body); e == nil {
			if d.ID == 0 {
				t.Fatalf("decodeDone accepted id 0")
			}
			for _, reg := range d.Regs {
				validRegistration(t, reg)
			}
		}
	})
}

// decodeObject's split of a valid body agrees with encoding/json's
// tokens (decodeObjectSlow): the same fields with the same raw values,
// or the same refusal.
func FuzzDecodeObjectAgrees(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { "path" : "a" , "type":"dir" } `, `{"path":"a","path":"b"}`, `{"PATH":"a"}`,
		`{"p\u0061th":"a"}`, `{"path":{"x":[1,{"y":"]}"}]},"mode":"0644"}`, `{"path":"a\"}\\"}`,
		`[1]`, `"x"`, `{"path":"x"} {}`, `{"colour":1}`, `{"id":7,"register":[{"path":"a","type":"dir"}, {}]}`,
		"{\"path\":\"\xff\"}", `{"mode":-1.5e3,"uid":null,"gid":true}`,
	} {
		f.Add([]byte(s))
	}
	known := []string{"path", "type", "mode", "uid", "gid", "id", "register"}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ge := decodeObject(body, known...)
		want, we := decodeObjectSlow(body, known...)
		if (ge == nil) != (we == nil) {
			t.Fatalf("%q: split %v, tokens %v", body, ge, we)
		}
		if ge != nil {
			if ge.body.Code != we.body.Code || ge.body.Field != we.body.Field {
				t.Fatalf("%q: split %v (%s), tokens %v (%s)", body, ge, ge.body.Field, we, we.body.Field)
			}
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%q: split %d fields, tokens %d", body, len(got), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Fatalf("%q: field %s split %q, tokens %q", body, k, got[k], v)
			}
		}
		if raw, ok := got["register"]; ok && len(raw) > 0 && raw[0] == '[' {
			var elems []json.RawMessage
			if err := json.Unmarshal(raw, &elems); err != nil {
				t.Fatal(err)
			}
			split := splitArray(raw)
			if len(split) != len(elems) {
				t.Fatalf("%q: splitArray %d elements, encoding/json %d", raw, len(split), len(elems))
			}
			for i := range elems {
				if !bytes.Equal(split[i], elems[i]) {
					t.Fatalf("%q: element %d split %q, encoding/json %q", raw, i, split[i], elems[i])
				}
			}
		}
	})
}
