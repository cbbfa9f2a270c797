package wire

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/devfsd/devfsd/dcache"
)

// AppendJSON writes what json.Marshal writes, byte for byte, or declines.
func FuzzRecordAppendJSON(f *testing.F) {
	f.Add("event", uint64(7), "2026-12-02T02:00:00.1Z", "REGISTER", "snd/dsp", "char", "0660", uint32(14), uint32(3), uint32(0), uint32(29), "loader", uint32(42), uint64(0), uint64(0), uint64(0), uint64(0), false, "", "", false)
	f.Add("lookup", uint64(0), "", "", "a<b>&\"c\\\n\u2028\u2029\x01", "", "", uint32(0), uint32(0), uint32(0), uint32(0), "", uint32(0), uint64(0), uint64(0), uint64(0), uint64(9), true, "", "c", true)
	f.Add("overrun", uint64(0), "", "", "", "", "", uint32(0), uint32(0), uint32(0), uint32(0), "", uint32(0), uint64(5), uint64(1), uint64(5), uint64(0), false, "", "", false)
	f.Add("lookup", uint64(0), "", "", "bad\xff", "", "", uint32(0), uint32(0), uint32(0), uint32(0), "", uint32(0), uint64(0), uint64(0), uint64(0), uint64(1), true, "d\xfe", "n", true)
	f.Fuzz(func(t *testing.T, typ string, seq uint64, tm, kind, path, nodeType, mode string, major, minor, uid, gid uint32,
		origin string, pid uint32, missed, first, last, id uint64, hasDir bool, dir, name string, hasCaller bool) {
		r := Record{Type: typ, Seq: seq, Time: tm, Kind: kind, Path: path, NodeType: nodeType, Mode: mode,
			Major: major, Minor: minor, Uid: uid, Gid: gid, Origin: origin, Pid: pid, Missed: missed,
			FirstSeq: first, LastSeq: last, ID: id, Name: name}
		if hasDir {
			r.Dir = &dir
		}
		if hasCaller {
			r.Caller = &dcache.Caller{Pid: pid, Uid: uid, Gid: gid}
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := r.AppendJSON([]byte("x"))
		if !ok {
			if string(got) != "x" {
				t.Fatalf("declined but changed b: %q", got)
			}
			strs := []string{typ, tm, kind, path, nodeType, mode, origin, name}
			if hasDir {
				strs = append(strs, dir)
			}
			for _, s := range strs {
				if !utf8.ValidString(s) {
					return // json.Marshal's to write (as bytes, or with U+FFFD)
				}
			}
			t.Fatalf("declined %+v, which json.Marshal writes as %s", r, want)
		}
		if !bytes.Equal(got[1:], want) {
			t.Fatalf("AppendJSON\n%s\njson.Marshal\n%s", got[1:], want)
		}
	})
}
