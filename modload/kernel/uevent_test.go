package kernel

import (
	"errors"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// msg builds a netlink uevent message from its fields.
func msg(fields ...string) []byte { return []byte(strings.Join(fields, "\x00") + "\x00") }

// addLoopEvent is a well-formed add of loop device minor.
func addLoopEvent(seq string) []string {
	return []string{"add@/devices/virtual/block/loop9", "ACTION=add", "DEVPATH=/devices/virtual/block/loop9",
		"SUBSYSTEM=block", "MAJOR=7", "MINOR=9", "DEVNAME=loop9", "DEVTYPE=disk", "DISKSEQ=12", "SEQNUM=" + seq}
}

func TestParseUevent(t *testing.T) {
	huge := make([]string, 0, 3000)
	huge = append(huge, addLoopEvent("1")...)
	for len(strings.Join(huge, "\x00")) <= MaxUevent {
		huge = append(huge, "X"+strings.Repeat("A", 20)+"=1")
	}
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"add", msg(addLoopEvent("1")...), true},
		{"no NUL at all", []byte("add@/devices/x"), false},
		{"no final NUL", msg(addLoopEvent("1")...)[:len(msg(addLoopEvent("1")...))-1], false},
		{"empty", nil, false},
		{"header without @", msg(append([]string{"add/devices/x"}, addLoopEvent("1")[1:]...)...), false},
		{"header disagrees with ACTION", msg(append([]string{"remove@/devices/virtual/block/loop9"}, addLoopEvent("1")[1:]...)...), false},
		{"header disagrees with DEVPATH", msg(append([]string{"add@/devices/virtual/block/loop8"}, addLoopEvent("1")[1:]...)...), false},
		{"variable without =", msg(append(addLoopEvent("1"), "JUNK")...), false},
		{"key twice", msg(append(addLoopEvent("1"), "MAJOR=7")...), false},
		{"bad key", msg(append(addLoopEvent("1"), "A-B=1")...), false},
		{"empty key", msg(append(addLoopEvent("1"), "=1")...), false},
		{"no SEQNUM", msg(addLoopEvent("1")[:9]...), false},
		{"SEQNUM not a number", msg(addLoopEvent("12x")...), false},
		{"SEQNUM signed", msg(addLoopEvent("+12")...), false},
		{"unknown action", msg("eat@/devices/x", "ACTION=eat", "DEVPATH=/devices/x", "SUBSYSTEM=mem", "SEQNUM=3"), false},
		{"no SUBSYSTEM", msg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SEQNUM=3"), false},
		{"relative DEVPATH", msg("add@devices/x", "ACTION=add", "DEVPATH=devices/x", "SUBSYSTEM=mem", "SEQNUM=3"), false},
		{"DEVPATH with ..", msg("add@/devices/../x", "ACTION=add", "DEVPATH=/devices/../x", "SUBSYSTEM=mem", "SEQNUM=3"), false},
		{"DEVPATH not UTF-8", msg("add@/devices/\xff", "ACTION=add", "DEVPATH=/devices/\xff", "SUBSYSTEM=mem", "SEQNUM=3"), false},
		{"DEVPATH_OLD with ..", msg(append(addLoopEvent("1"), "DEVPATH_OLD=/devices/../../etc")...), false},
		{"huge", msg(huge...), false},
		{"non-UTF-8 value elsewhere is kept", msg(append(addLoopEvent("1"), "ID_MODEL=\xff\xfe")...), true},
		{"device without node", msg("add@/module/fuse", "ACTION=add", "DEVPATH=/module/fuse", "SUBSYSTEM=module", "SEQNUM=77"), true},
		{"libudev message", append([]byte("libudev\x00\xfe\xed\xca\xfe"), msg(addLoopEvent("1")...)...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := ParseUevent(tc.in)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if ev.Action == "" || ev.DevPath == "" || ev.Seq == 0 {
					t.Fatalf("parsed %+v", ev)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", ev)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestParseUeventFields(t *testing.T) {
	ev, err := ParseUevent(msg(addLoopEvent("4711")...))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "add" || ev.DevPath != "/devices/virtual/block/loop9" || ev.Seq != 4711 ||
		ev.Env["DISKSEQ"] != "12" || ev.Env["SUBSYSTEM"] != "block" || len(ev.Env) != 9 {
		t.Fatalf("parsed %+v", ev)
	}
}

func TestParseUeventFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int // variables; -1: refused
	}{
		{"null", "MAJOR=1\nMINOR=3\nDEVNAME=null\nDEVMODE=0666\n", 4},
		{"no final newline", "MAJOR=1\nMINOR=3\nDEVNAME=null", 3},
		{"empty", "", 0},
		{"NUL inside", "MAJOR=1\x00\nMINOR=3\n", -1},
		{"line without =", "MAJOR=1\nnonsense\n", -1},
		{"empty line", "MAJOR=1\n\nMINOR=3\n", -1},
		{"key twice", "MAJOR=1\nMAJOR=2\n", -1},
		{"huge", strings.Repeat("A=1\n", MaxUevent), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := ParseUeventFile([]byte(tc.in))
			if tc.want < 0 {
				if err == nil || !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %v, %v; want ErrMalformed", env, err)
				}
				return
			}
			if err != nil || len(env) != tc.want {
				t.Fatalf("got %v, %v; want %d variables", env, err, tc.want)
			}
		})
	}
}

func noDefaults(dcache.Type, string) (uint32, uint32, uint32) { return 0600, 0, 0 }

func TestNodeOf(t *testing.T) {
	c, b := dcache.TypeChar, dcache.TypeBlock
	base := func(kv ...string) map[string]string {
		env := map[string]string{"MAJOR": "13", "MINOR": "64", "DEVNAME": "input/event0"}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<none>" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		return env
	}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		t      dcache.Type
		want   modload.Node
		noNode bool
		bad    bool
	}{
		{name: "subdirectory", env: base(), t: c, want: modload.Node{Path: "input/event0", Type: c, Major: 13, Minor: 64, Perm: 0600}},
		{name: "mode and owner", env: base("DEVMODE", "0660", "DEVUID", "7", "DEVGID", "44"), t: c,
			want: modload.Node{Path: "input/event0", Type: c, Major: 13, Minor: 64, Perm: 0660, UID: 7, GID: 44}},
		{name: "mode 0000 stays", env: base("DEVMODE", "0000"), t: b, want: modload.Node{Path: "input/event0", Type: b, Major: 13, Minor: 64, Perm: 0}},
		{name: "no node", env: map[string]string{"SUBSYSTEM": "module"}, t: c, noNode: true},
		{name: "number without DEVNAME", env: base("DEVNAME", "<none>"), t: c, noNode: true},
		{name: "no MINOR", env: base("MINOR", "<none>"), t: c, bad: true},
		{name: "DEVNAME ../x", env: base("DEVNAME", "../x"), t: c, bad: true},
		{name: "DEVNAME a/../../x", env: base("DEVNAME", "a/../../x"), t: c, bad: true},
		{name: "DEVNAME absolute", env: base("DEVNAME", "/etc/passwd"), t: c, bad: true},
		{name: "DEVNAME ..", env: base("DEVNAME", ".."), t: c, bad: true},
		{name: "DEVNAME a//b", env: base("DEVNAME", "a//b"), t: c, bad: true},
		{name: "DEVNAME trailing slash", env: base("DEVNAME", "input/"), t: c, bad: true},
		{name: "DEVNAME empty", env: base("DEVNAME", ""), t: c, bad: true},
		{name: "DEVNAME not UTF-8", env: base("DEVNAME", "tty\xff"), t: c, bad: true},
		{name: "DEVNAME newline", env: base("DEVNAME", "tty\n0"), t: c, bad: true},
		{name: "DEVNAME element too long", env: base("DEVNAME", strings.Repeat("a", 256)), t: c, bad: true},
		{name: "MAJOR out of range", env: base("MAJOR", "4096"), t: c, bad: true},
		{name: "MINOR out of range", env: base("MINOR", "1048576"), t: c, bad: true},
		{name: "MAJOR negative", env: base("MAJOR", "-1"), t: c, bad: true},
		{name: "MAJOR hex", env: base("MAJOR", "0x10"), t: c, bad: true},
		{name: "DEVMODE not octal", env: base("DEVMODE", "0999"), t: c, bad: true},
		{name: "DEVMODE file type bits", env: base("DEVMODE", "020666"), t: c, bad: true},
		{name: "DEVUID too big", env: base("DEVUID", "4294967296"), t: c, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, ok, err := NodeOf(tc.env, tc.t, noDefaults)
			switch {
			case tc.bad:
				if err == nil || !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %v, %v, %v; want ErrMalformed", n, ok, err)
				}
			case tc.noNode:
				if err != nil || ok {
					t.Fatalf("got %v, %v, %v; want no node", n, ok, err)
				}
			default:
				if err != nil || !ok || n != tc.want {
					t.Fatalf("got %v, %v, %v; want %v", n, ok, err, tc.want)
				}
			}
		})
	}
}

func TestParseModulesDevname(t *testing.T) {
	good := "# Device nodes to trigger on-demand module loading.\n" +
		"fuse fuse c10:229\ncuse cuse c10:203\nbtrfs btrfs-control c10:234\nloop loop-control c10:237\n" +
		"tun net/tun c10:200\nppp_generic ppp c108:0\nuinput uinput c10:223\n\nbrd ram0 b1:0\n"
	tab, err := ParseModulesDevname(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != 8 || tab["net/tun"] != (DevnameEntry{Name: "net/tun", Module: "tun", Type: dcache.TypeChar, Major: 10, Minor: 200}) ||
		tab["ram0"] != (DevnameEntry{Name: "ram0", Module: "brd", Type: dcache.TypeBlock, Major: 1, Minor: 0}) {
		t.Fatalf("parsed %v", tab)
	}
	for _, bad := range []string{
		"fuse fuse\n",
		"fuse fuse c10:229 extra\n",
		"fuse fuse x10:229\n",
		"fuse fuse c10\n",
		"fuse fuse c10:abc\n",
		"fuse fuse c4096:0\n",
		"-fuse fuse c10:229\n",
		"fu$e fuse c10:229\n",
		"fuse ../fuse c10:229\n",
		"fuse /dev/fuse c10:229\n",
		"fuse fuse c10:229\ncuse fuse c10:203\n",
	} {
		if tab, err := ParseModulesDevname(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted: %v", bad, tab)
		}
	}
}
