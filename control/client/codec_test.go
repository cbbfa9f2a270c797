package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/devfsd/devfsd/control/wire"
)

func i64(v int64) *int64  { return &v }
func sp(s string) *string { return &s }

// The requests encoded without encoding/json are json.Marshal's bytes,
// and those it cannot write exactly are json.Marshal's.
func TestEncodeBodyIsJSONMarshal(t *testing.T) {
	regs := []wire.RegisterRequest{
		{Path: "null", Type: "char", Major: i64(1), Minor: i64(3), Mode: "0666"},
		{Path: "d", Type: "dir"},
		{Path: "d/l", Type: "symlink", Target: sp("../null")},
		{Path: "sda", Type: "block", Major: i64(8), Minor: i64(0), Uid: i64(0), Gid: i64(6), Mode: "0660"},
		{Path: "neg", Type: "char", Major: i64(-1), Minor: i64(1 << 40)},
		{Path: "a<b>&c", Type: "char"},                      // HTML escapes: json.Marshal's
		{Path: "tab\there", Type: "char"},                   // an escape
		{Path: "bad\xffname", Type: "char"},                 // not UTF-8: an array of bytes
		{Path: "é", Type: "symlink", Target: sp("ünïcode")}, // not ASCII
	}
	var bodies []any
	for _, r := range regs {
		bodies = append(bodies, r)
	}
	bodies = append(bodies,
		wire.DoneRequest{ID: 1},
		wire.DoneRequest{ID: 1 << 63, Error: "no module for it"},
		wire.DoneRequest{ID: 2, Register: regs[:4], ExistOK: true},
		wire.DoneRequest{ID: 3, Register: regs},
		wire.DoneRequest{ID: 4, Error: "quote \" in it"},
		wire.DoneRequest{ID: 5, Register: []wire.RegisterRequest{}},
	)
	for _, b := range bodies {
		want, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeBody(b)
		if err != nil || string(got) != string(want) {
			t.Errorf("%#v:\n got %s (%v)\nwant %s", b, got, err, want)
		}
	}
}

var nodeSeeds = []string{
	`{"path":"null","type":"char","mode":"0666","uid":0,"gid":0,"major":1,"minor":3,"ino":12,"nlink":1,"size":0,"mtime":"2026-12-02T05:00:00.123456789Z","ctime":"2026-12-02T05:00:00Z"}` + "\n",
	`{"path":"l","target":"../x","type":"symlink","mode":"0777","uid":4294967295,"gid":1,"ino":18446744073709551615,"nlink":1,"size":4,"mtime":"","ctime":""}`,
	`{}`, `{"path":"x"} `, `{"uid":4294967296}`, `{"uid":-1}`, `{"uid":1.5}`, `{"uid":01}`, `{"uid":1e3}`,
	`{"path":"a\"b"}`, `{"path":"\u0041"}`, `{"path":[98,255]}`, `{"path":null}`, `{"Path":"case"}`,
	`{"path":"x","extra":{"a":1}}`, `{"path":"x","path":"y"}`, `{"path":"x",}`, `{"path" :"x"}`, `{"path":"x"}}`,
	"{\"path\":\"\xff\"}", `[]`, ``, `{"path":"x"`, `{"ino":"12"}`, `{"type":true}`,
}

var recordSeeds = []string{
	`{"type":"lookup","path":"sda","id":17,"dir":"","name":"sda","caller":{"pid":1234,"uid":0,"gid":0}}`,
	`{"type":"event","seq":9,"time":"2026-12-02T05:00:00Z","kind":"REGISTER","path":"d/x","node_type":"char","mode":"0600","major":1,"minor":3,"uid":5,"gid":6,"origin":"control","pid":77}`,
	`{"type":"overrun","missed":3,"first_seq":4,"last_seq":6}`,
	`{"type":"hello","pid":1,"uid":2,"gid":3}`,
	`{"type":"lookup","caller":{"pid":1,"uid":2}}`, `{"type":"lookup","caller":{"pid":"1"}}`, `{"type":"lookup","caller":{}}`,
	`{"type":"lookup","caller":null}`, `{"type":"lookup","dir":null}`, `{"type":"lookup","caller":{"pid":1,"x":{"y":1}}}`,
	`{"type":"lookup","caller":{"pid":1},"caller":{"uid":2}}`, `{"type":"lookup","dir":"a","dir":"b"}`,
	`{"type":"lookup","name":[1,2]}`, `{"type":"x","pid":4294967296}`, `{"kind":{"a":1}}`,
}

// decodeNode and decodeRecord are json.Unmarshal: the same value, and an
// error where it has one.
func checkDecode[T any](t *testing.T, in []byte, fast func([]byte, *T) error) {
	var got, want T
	gerr, werr := fast(in, &got), json.Unmarshal(in, &want)
	if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
		t.Errorf("%q:\n got %#v, %v\nwant %#v, %v", in, got, gerr, want, werr)
	}
}

func TestDecodeIsJSONUnmarshal(t *testing.T) {
	for _, s := range nodeSeeds {
		checkDecode(t, []byte(s), decodeNode)
	}
	for _, s := range recordSeeds {
		checkDecode(t, []byte(s), decodeRecord)
	}
}

func FuzzDecodeNode(f *testing.F) {
	for _, s := range nodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, decodeNode) })
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range recordSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, decodeRecord) })
}

var headSeeds = []string{
	"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nDate: Wed, 02 Dec 2026 05:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 007\r\n\r\n1234567",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 204 No Content\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nbody to the end",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab",
}

// plainHead reads what http.ReadResponse reads: where it takes an answer,
// the same status, body and connection verdict.
func FuzzPlainHead(f *testing.F) {
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), len(in)+16)
		br.Peek(1)
		h, ok := plainHead(br)
		if !ok {
			return
		}
		br.Discard(h.n)
		body := make([]byte, h.length)
		_, ferr := io.ReadFull(br, body)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), nil)
		if err != nil {
			t.Fatalf("%q: plainHead took it, http.ReadResponse: %v", in, err)
		}
		want, werr := io.ReadAll(resp.Body)
		if (ferr == nil) != (werr == nil) || ferr == nil && !bytes.Equal(body, want) ||
			h.status != resp.StatusCode || h.close != resp.Close {
			t.Fatalf("%q:\n plainHead %+v body %q (%v)\n ReadResponse %d close %v body %q (%v)", in, h, body, ferr, resp.StatusCode, resp.Close, want, werr)
		}
	})
}

func TestPlainHeadTakesTheDaemonsAnswers(t *testing.T) {
	for i, s := range headSeeds[:4] {
		br := bufio.NewReader(bytes.NewReader([]byte(s)))
		br.Peek(1)
		if _, ok := plainHead(br); !ok {
			t.Errorf("seed %d: not taken", i)
		}
	}
}

var doneAnswerSeeds = []string{
	`{"id":7}` + "\n",
	`{"id":8,"registered":[` + nodeSeeds[0][:len(nodeSeeds[0])-1] + `]}` + "\n",
	`{"id":9,"registered":[` + nodeSeeds[0][:len(nodeSeeds[0])-1] + `,` + nodeSeeds[1] + `],"late":true}`,
	`{"id":10,"late":true}`, `{"id":11,"registered":[]}`, `{"id":12,"existing":["a"]}`,
	`{"id":13,"registered":[{"path":"a"},]}`, `{"id":01}`, `{"id":-1}`, `{"id":1,"late":false}`, `{"late":true,"id":3}`,
	`{"id":18446744073709551616}`, `{"id":1}x`, `{"id":1,"registered":[{"path":"a\"b"}]}`,
}

func TestDecodeDoneAnswerIsJSONUnmarshal(t *testing.T) {
	for _, s := range doneAnswerSeeds {
		checkDecode(t, []byte(s), decodeDoneAnswer)
	}
	var a wire.DoneAnswer
	if err := decodeDoneAnswer([]byte(doneAnswerSeeds[2]), &a); err != nil || !fastDoneAnswer([]byte(doneAnswerSeeds[2]), &wire.DoneAnswer{}) ||
		len(a.Registered) != 2 || !a.Late || a.ID != 9 || a.Registered[1].Target != "../x" {
		t.Fatalf("the daemon's form: %+v %v", a, err)
	}
}

func FuzzDecodeDoneAnswer(f *testing.F) {
	for _, s := range doneAnswerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, decodeDoneAnswer) })
}
