package control

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/devfsd/devfsd/control/wire"
)

// The answers encoded without encoding/json are the bytes json.Marshal
// writes.
func TestEncodeJSONIsJSONMarshal(t *testing.T) {
	n := func(p string) wire.Node {
		return wire.Node{Path: p, Type: "char", Mode: "0660", Uid: 1, Gid: 2, Major: 4, Minor: 64, Ino: 9, Nlink: 1,
			Mtime: "2026-12-02T05:00:00.123456789Z", Ctime: "2026-12-02T05:00:00Z"}
	}
	link := wire.Node{Path: "a/<b>&\"c\"", Target: "../x\ty", Type: "symlink", Mode: "0777", Nlink: 1}
	for _, v := range []any{
		n("null"), link,
		wire.DoneAnswer{ID: 7},
		wire.DoneAnswer{ID: 8, Registered: []wire.Node{n("tty1")}},
		wire.DoneAnswer{ID: 1 << 63, Registered: []wire.Node{n("d"), link, n("d/x")}, Late: true},
		wire.DoneAnswer{ID: 9, Registered: []wire.Node{}, Late: true},
		wire.DoneAnswer{ID: 10, Registered: []wire.Node{n("a")}, Existing: []string{"b"}}, // json.Marshal's
		wire.DoneAnswer{ID: 11, Registered: []wire.Node{n("bad\xffname")}},                // not UTF-8: json.Marshal's
		wire.ErrorBody{Error: wire.Error{Code: "exists", Field: "path", Message: "x"}},    // json.Marshal's
	} {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got := encodeJSON(v)
		if got.failed || string(got.b) != string(want)+"\n" {
			t.Errorf("%#v:\n got %s\nwant %s", v, got.b, want)
		}
	}
}

func TestOctal4(t *testing.T) {
	for _, m := range []uint32{0, 1, 07, 010, 0644, 0755, 01777, 07777, 017777} {
		if got, want := octal4(m), fmt.Sprintf("%04o", m); got != want {
			t.Errorf("octal4(%o) = %q, want %q", m, got, want)
		}
	}
}
