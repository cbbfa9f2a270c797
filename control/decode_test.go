package control

import (
	"strings"
	"testing"

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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
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
		if id, _, e := decodeDone(body); e == nil && id == 0 {
			t.Fatalf("decodeDone accepted id 0")
		}
	})
}
