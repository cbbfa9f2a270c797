package client

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

// The JSON on a helper's path and a registration's, without encoding/json's
// reflection: the requests a helper and `devfsd ctl register` send, the
// node the daemon answers and the records of a stream. Each fast path
// takes only what it can read or write exactly as encoding/json would —
// strings of printable ASCII with nothing to escape, unsigned integers,
// the fields it knows — and leaves anything else to encoding/json, so the
// result is always encoding/json's (tests compare the two).

// encodeBody is body as JSON.
func encodeBody(body any) ([]byte, error) {
	switch v := body.(type) {
	case wire.RegisterRequest:
		if b, ok := appendRegister(make([]byte, 0, 128), &v); ok {
			return b, nil
		}
	case wire.DoneRequest:
		if b, ok := appendDone(make([]byte, 0, 64+128*len(v.Register)), &v); ok {
			return b, nil
		}
	}
	return json.Marshal(body)
}

// plain reports whether s is written by encoding/json as itself between
// quotes: printable ASCII but for ", \ and its HTML escapes <, >, &.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func appendStr(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendRegister appends r as json.Marshal writes it (wire's
// RegisterRequest.MarshalJSON: path, target, then the other fields), or
// reports false.
func appendRegister(b []byte, r *wire.RegisterRequest) ([]byte, bool) {
	if !plain(r.Path) || !plain(r.Type) || !plain(r.Mode) || r.Target != nil && !plain(*r.Target) {
		return b, false
	}
	b = append(b, `{"path":`...)
	b = appendStr(b, r.Path)
	if r.Target != nil {
		b = append(b, `,"target":`...)
		b = appendStr(b, *r.Target)
	}
	b = append(b, `,"type":`...)
	b = appendStr(b, r.Type)
	if r.Mode != "" {
		b = append(b, `,"mode":`...)
		b = appendStr(b, r.Mode)
	}
	for _, f := range [...]struct {
		key string
		v   *int64
	}{{`,"major":`, r.Major}, {`,"minor":`, r.Minor}, {`,"uid":`, r.Uid}, {`,"gid":`, r.Gid}} {
		if f.v != nil {
			b = append(b, f.key...)
			b = strconv.AppendInt(b, *f.v, 10)
		}
	}
	return append(b, '}'), true
}

// appendDone appends r as json.Marshal writes it, or reports false.
func appendDone(b []byte, r *wire.DoneRequest) ([]byte, bool) {
	if !plain(r.Error) {
		return b, false
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, r.ID, 10)
	if r.Error != "" {
		b = append(b, `,"error":`...)
		b = appendStr(b, r.Error)
	}
	if len(r.Register) > 0 {
		b = append(b, `,"register":[`...)
		for i := range r.Register {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = appendRegister(b, &r.Register[i]); !ok {
				return b, false
			}
		}
		b = append(b, ']')
	}
	if r.ExistOK {
		b = append(b, `,"exist_ok":true`...)
	}
	return append(b, '}'), true
}

// flat reads a JSON object whose values are plain strings (no escape,
// valid UTF-8), unsigned integers, true, or (for the key sub names) one
// such object, calling f for each member in order; it reports false at
// anything else, or when f does. Trailing whitespace is allowed.
type flatValue struct {
	str   string
	num   uint64
	isNum bool
	obj   []byte // the raw object, for the key flat was given as sub
}

func flat(b []byte, sub string, f func(key string, v flatValue) bool) bool {
	n, ok := flatPrefix(b, sub, f)
	return ok && trailing(b[n:])
}

// flatPrefix is flat for an object at the start of b, followed by
// anything: it returns the object's length.
func flatPrefix(b []byte, sub string, f func(key string, v flatValue) bool) (int, bool) {
	i := 0
	if len(b) == 0 || b[0] != '{' {
		return 0, false
	}
	i++
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		key, n, ok := flatString(b[i:])
		if !ok || i+n >= len(b) || b[i+n] != ':' {
			return 0, false
		}
		i += n + 1
		if i >= len(b) {
			return 0, false
		}
		var v flatValue
		switch c := b[i]; {
		case c == '"':
			s, n, ok := flatString(b[i:])
			if !ok {
				return 0, false
			}
			v.str = s
			i += n
		case c >= '0' && c <= '9':
			j := i
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') || j-i > 1 && b[i] == '0' {
				return 0, false
			}
			num, err := strconv.ParseUint(string(b[i:j]), 10, 64)
			if err != nil {
				return 0, false
			}
			v.num, v.isNum = num, true
			i = j
		case c == '{' && key == sub:
			j := i
			for j < len(b) && b[j] != '}' {
				j++
			}
			if j >= len(b) {
				return 0, false
			}
			v.obj = b[i : j+1]
			i = j + 1
		default:
			return 0, false
		}
		if !f(key, v) {
			return 0, false
		}
		if i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// flatString reads a plain JSON string at the start of b: its value and
// length, quotes included.
func flatString(b []byte) (string, int, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", 0, false
	}
	for j := 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[1:j]
			if !utf8.Valid(s) {
				return "", 0, false
			}
			return string(s), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		}
	}
	return "", 0, false
}

func trailing(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return true
}

// num32 stores v in *p if it is a number that fits 32 bits.
func num32(p *uint32, v flatValue) bool {
	if !v.isNum || v.num > 1<<32-1 {
		return false
	}
	*p = uint32(v.num)
	return true
}

func num64(p *uint64, v flatValue) bool {
	if !v.isNum {
		return false
	}
	*p = v.num
	return true
}

func str(p *string, v flatValue) bool {
	if v.isNum || v.obj != nil {
		return false
	}
	*p = v.str
	return true
}

// decodeNode decodes a node answer into n.
func decodeNode(b []byte, n *wire.Node) error {
	var x wire.Node
	if !flat(b, "", nodeField(&x)) {
		return json.Unmarshal(b, n)
	}
	*n = x
	return nil
}

// nodeField is flat's f for a wire.Node.
func nodeField(x *wire.Node) func(k string, v flatValue) bool {
	return func(k string, v flatValue) bool {
		switch k {
		case "path":
			return str(&x.Path, v)
		case "type":
			return str(&x.Type, v)
		case "mode":
			return str(&x.Mode, v)
		case "target":
			return str(&x.Target, v)
		case "mtime":
			return str(&x.Mtime, v)
		case "ctime":
			return str(&x.Ctime, v)
		case "uid":
			return num32(&x.Uid, v)
		case "gid":
			return num32(&x.Gid, v)
		case "major":
			return num32(&x.Major, v)
		case "minor":
			return num32(&x.Minor, v)
		case "nlink":
			return num32(&x.Nlink, v)
		case "ino":
			return num64(&x.Ino, v)
		case "size":
			return num64(&x.Size, v)
		}
		return false
	}
}

// decodeDoneAnswer decodes a done's answer into a: the plain form the
// daemon writes, {"id":N,"registered":[nodes],"late":true} with the
// last two optional, without reflection; any other through encoding/json.
func decodeDoneAnswer(b []byte, a *wire.DoneAnswer) error {
	var x wire.DoneAnswer
	if !fastDoneAnswer(b, &x) {
		return json.Unmarshal(b, a)
	}
	*a = x
	return nil
}

func fastDoneAnswer(b []byte, x *wire.DoneAnswer) bool {
	const id, reg, late = `{"id":`, `,"registered":[`, `,"late":true`
	if !bytes.HasPrefix(b, []byte(id)) {
		return false
	}
	i := len(id)
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == i || j-i > 1 && b[i] == '0' || j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return false
	}
	n, err := strconv.ParseUint(string(b[i:j]), 10, 64)
	if err != nil {
		return false
	}
	x.ID = n
	i = j
	if bytes.HasPrefix(b[i:], []byte(reg)) {
		i += len(reg)
		for {
			var nd wire.Node
			k, ok := flatPrefix(b[i:], "", nodeField(&nd))
			if !ok {
				return false
			}
			x.Registered = append(x.Registered, nd)
			i += k
			if i < len(b) && b[i] == ',' {
				i++
				continue
			}
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			return false
		}
	}
	if bytes.HasPrefix(b[i:], []byte(late)) {
		x.Late = true
		i += len(late)
	}
	return i < len(b) && b[i] == '}' && trailing(b[i+1:])
}

// decodeRecord decodes a stream's record into r.
func decodeRecord(b []byte, r *wire.Record) error {
	var x wire.Record
	ok := flat(b, "caller", func(k string, v flatValue) bool {
		switch k {
		case "type":
			return str(&x.Type, v)
		case "time":
			return str(&x.Time, v)
		case "kind":
			return str(&x.Kind, v)
		case "path":
			return str(&x.Path, v)
		case "node_type":
			return str(&x.NodeType, v)
		case "mode":
			return str(&x.Mode, v)
		case "origin":
			return str(&x.Origin, v)
		case "name":
			return str(&x.Name, v)
		case "dir":
			var d string
			if !str(&d, v) {
				return false
			}
			x.Dir = &d
			return true
		case "seq":
			return num64(&x.Seq, v)
		case "missed":
			return num64(&x.Missed, v)
		case "first_seq":
			return num64(&x.FirstSeq, v)
		case "last_seq":
			return num64(&x.LastSeq, v)
		case "id":
			return num64(&x.ID, v)
		case "major":
			return num32(&x.Major, v)
		case "minor":
			return num32(&x.Minor, v)
		case "uid":
			return num32(&x.Uid, v)
		case "gid":
			return num32(&x.Gid, v)
		case "pid":
			return num32(&x.Pid, v)
		case "caller":
			if v.obj == nil {
				return false
			}
			c := x.Caller // a repeated key fills the same one, as encoding/json does
			if c == nil {
				c = new(dcache.Caller)
			}
			if !flat(v.obj, "", func(k string, v flatValue) bool {
				switch k {
				case "pid":
					return num32(&c.Pid, v)
				case "uid":
					return num32(&c.Uid, v)
				case "gid":
					return num32(&c.Gid, v)
				}
				return false
			}) {
				return false
			}
			x.Caller = c
			return true
		}
		return false
	})
	if !ok {
		return json.Unmarshal(b, r)
	}
	*r = x
	return nil
}
