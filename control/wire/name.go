package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/devfsd/devfsd/dcache"
)

// Name is a name or path on the wire. A Linux name is bytes; JSON strings
// are Unicode, and encoding/json silently turns bytes that are not valid
// UTF-8 into U+FFFD. So a Name is written as a JSON string when it is
// valid UTF-8, and otherwise as an array of its bytes, each a number
// 0..255 (as journald's JSON export does): "net/tun", or
// [98,97,100,255,254] for "bad\xff\xfe". Either form is read; a string
// that JSON cannot carry exactly (a lone surrogate escape such as
// "\ud800", or raw bytes that are not UTF-8) is an error, never rewritten.
//
// The wire structs keep plain string fields; their MarshalJSON and
// UnmarshalJSON methods write and read every name field (paths, symlink
// targets, directory and entry names, mountpoints, patterns) as a Name.
type Name string

// MarshalJSON writes n as a string if it is valid UTF-8, else as an
// array of its bytes.
func (n Name) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(n)) {
		return json.Marshal(string(n))
	}
	b := make([]byte, 0, 4*len(n)+2)
	b = append(b, '[')
	for i := 0; i < len(n); i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(n[i]), 10)
	}
	return append(b, ']'), nil
}

// ErrNotExact is the error of a JSON string that cannot be read exactly.
var ErrNotExact = errors.New("not valid UTF-8 (or a \\u escape of a lone surrogate): JSON cannot carry it exactly; send the name as an array of its bytes")

// UnmarshalJSON reads a string (exactly, see ExactString) or an array of
// bytes.
func (n *Name) UnmarshalJSON(raw []byte) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		b, err := ByteArray(raw)
		if err != nil {
			return err
		}
		*n = Name(b)
		return nil
	}
	s, err := ExactString(raw)
	if err != nil {
		return err
	}
	*n = Name(s)
	return nil
}

// ExactString decodes raw, one JSON string literal, if it can be decoded
// without a change: its bytes are valid UTF-8 and every \u escape is a
// character (a surrogate only as half of a pair). Otherwise the error
// wraps ErrNotExact; raw that is not a string is another error.
func ExactString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", errors.New("not a JSON string")
	}
	if !utf8.Valid(raw) {
		return "", ErrNotExact
	}
	for i := 1; i < len(raw)-1; i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			break // malformed: json.Unmarshal says so below
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF: // a low half without a high one
			return "", ErrNotExact
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return "", ErrNotExact
			}
			lo, ok := hex4(raw[i+3:])
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return "", ErrNotExact
			}
			i += 6
		}
	}
	if unescaped(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// unescaped reports whether raw, a quoted JSON string, holds no escape, no
// quote and no control character between its quotes: its content is
// then its value, byte for byte.
func unescaped(raw []byte) bool {
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c == '"' || c < 0x20 {
			return false
		}
	}
	return true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 16)
	return rune(v), err == nil
}

// ByteArray decodes raw, a JSON array of integers 0..255, into the bytes
// it lists.
func ByteArray(raw []byte) ([]byte, error) {
	var nums []json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&nums); err != nil {
		return nil, fmt.Errorf("an array of bytes: %v", err)
	}
	out := make([]byte, 0, len(nums))
	for i, num := range nums {
		v, err := strconv.ParseUint(num.String(), 10, 8)
		if err != nil {
			return nil, fmt.Errorf("an array of bytes: element %d, %s, is not an integer 0..255", i, num)
		}
		out = append(out, byte(v))
	}
	return out, nil
}

func names(ss []string) []Name {
	if ss == nil {
		return nil
	}
	out := make([]Name, len(ss))
	for i, s := range ss {
		out[i] = Name(s)
	}
	return out
}

func strs(ns []Name) []string {
	if ns == nil {
		return nil
	}
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = string(n)
	}
	return out
}

func namePtr(s *string) *Name {
	if s == nil {
		return nil
	}
	n := Name(*s)
	return &n
}

func strPtr(n *Name) *string {
	if n == nil {
		return nil
	}
	s := string(*n)
	return &s
}

// The name fields of each wire struct, as Names. Each method pair shadows
// the string fields with Name ones (the shallower field wins in
// encoding/json); the defined types ("plain") have no methods, so no
// recursion. A shadowing field is written where it stands in the
// shadowing struct: "path" stays first where it was first.

// MarshalJSON implements json.Marshaler (see Name).
func (n Node) MarshalJSON() ([]byte, error) {
	type plain Node
	return json.Marshal(struct {
		Path   Name `json:"path"`
		Target Name `json:"target,omitempty"`
		plain
	}{Name(n.Path), Name(n.Target), plain(n)})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (n *Node) UnmarshalJSON(b []byte) error {
	type plain Node
	aux := struct {
		*plain
		Path   Name `json:"path"`
		Target Name `json:"target"`
	}{plain: (*plain)(n)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	n.Path, n.Target = string(aux.Path), string(aux.Target)
	return nil
}

// MarshalJSON implements json.Marshaler (see Name).
func (l List) MarshalJSON() ([]byte, error) {
	type plain List
	return json.Marshal(struct {
		Path Name `json:"path"`
		plain
	}{Name(l.Path), plain(l)})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (l *List) UnmarshalJSON(b []byte) error {
	type plain List
	aux := struct {
		*plain
		Path Name `json:"path"`
	}{plain: (*plain)(l)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	l.Path = string(aux.Path)
	return nil
}

// recordJSON is Record with its names as Names, its fields in Record's
// order ("type" first, "path" where it was); TestRecordJSONFields keeps
// the two field lists equal.
type recordJSON struct {
	Type     string         `json:"type"`
	Seq      uint64         `json:"seq,omitempty"`
	Time     string         `json:"time,omitempty"`
	Kind     string         `json:"kind,omitempty"`
	Path     Name           `json:"path,omitempty"`
	NodeType string         `json:"node_type,omitempty"`
	Mode     string         `json:"mode,omitempty"`
	Major    uint32         `json:"major,omitempty"`
	Minor    uint32         `json:"minor,omitempty"`
	Uid      uint32         `json:"uid,omitempty"`
	Gid      uint32         `json:"gid,omitempty"`
	Origin   string         `json:"origin,omitempty"`
	Pid      uint32         `json:"pid,omitempty"`
	Missed   uint64         `json:"missed,omitempty"`
	FirstSeq uint64         `json:"first_seq,omitempty"`
	LastSeq  uint64         `json:"last_seq,omitempty"`
	ID       uint64         `json:"id,omitempty"`
	Dir      *Name          `json:"dir,omitempty"`
	Name     Name           `json:"name,omitempty"`
	Caller   *dcache.Caller `json:"caller,omitempty"`
}

// MarshalJSON implements json.Marshaler (see Name).
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(recordJSON{r.Type, r.Seq, r.Time, r.Kind, Name(r.Path), r.NodeType, r.Mode,
		r.Major, r.Minor, r.Uid, r.Gid, r.Origin, r.Pid, r.Missed, r.FirstSeq, r.LastSeq, r.ID,
		namePtr(r.Dir), Name(r.Name), r.Caller})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (r *Record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Record{j.Type, j.Seq, j.Time, j.Kind, string(j.Path), j.NodeType, j.Mode, j.Major, j.Minor,
		j.Uid, j.Gid, j.Origin, j.Pid, j.Missed, j.FirstSeq, j.LastSeq, j.ID, strPtr(j.Dir), string(j.Name), j.Caller}
	return nil
}

// MarshalJSON implements json.Marshaler (see Name).
func (r RegisterRequest) MarshalJSON() ([]byte, error) {
	type plain RegisterRequest
	return json.Marshal(struct {
		Path   Name  `json:"path"`
		Target *Name `json:"target,omitempty"`
		plain
	}{Name(r.Path), namePtr(r.Target), plain(r)})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (r *RegisterRequest) UnmarshalJSON(b []byte) error {
	type plain RegisterRequest
	aux := struct {
		*plain
		Path   Name  `json:"path"`
		Target *Name `json:"target"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.Path, r.Target = string(aux.Path), strPtr(aux.Target)
	return nil
}

// MarshalJSON implements json.Marshaler (see Name).
func (r PathRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Path Name `json:"path"`
	}{Name(r.Path)})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (r *PathRequest) UnmarshalJSON(b []byte) error {
	var aux struct {
		Path Name `json:"path"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.Path = string(aux.Path)
	return nil
}

// MarshalJSON implements json.Marshaler (see Name).
func (r ChmodRequest) MarshalJSON() ([]byte, error) {
	type plain ChmodRequest
	return json.Marshal(struct {
		Path Name `json:"path"`
		plain
	}{Name(r.Path), plain(r)})
}

// MarshalJSON implements json.Marshaler (see Name).
func (r ChownRequest) MarshalJSON() ([]byte, error) {
	type plain ChownRequest
	return json.Marshal(struct {
		Path Name `json:"path"`
		plain
	}{Name(r.Path), plain(r)})
}
