package wire

import (
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends r as json.Marshal writes it (the same bytes) and
// reports true, or leaves b as it was and reports false when a string of
// r is not valid UTF-8 (a name that Name writes as an array of bytes):
// the caller then uses json.Marshal. The event streams encode every
// record this way, without encoding/json's reflection and allocations.
func (r *Record) AppendJSON(b []byte) ([]byte, bool) {
	for _, s := range [...]string{r.Type, r.Time, r.Kind, r.Path, r.NodeType, r.Mode, r.Origin, r.Name} {
		if !utf8.ValidString(s) {
			return b, false
		}
	}
	if r.Dir != nil && !utf8.ValidString(*r.Dir) {
		return b, false
	}
	out := append(b, `{"type":`...)
	out = appendString(out, r.Type)
	str := func(key, v string) {
		if v != "" {
			out = append(out, key...)
			out = appendString(out, v)
		}
	}
	num := func(key string, v uint64) {
		if v != 0 {
			out = append(out, key...)
			out = strconv.AppendUint(out, v, 10)
		}
	}
	num(`,"seq":`, r.Seq)
	str(`,"time":`, r.Time)
	str(`,"kind":`, r.Kind)
	str(`,"path":`, r.Path)
	str(`,"node_type":`, r.NodeType)
	str(`,"mode":`, r.Mode)
	num(`,"major":`, uint64(r.Major))
	num(`,"minor":`, uint64(r.Minor))
	num(`,"uid":`, uint64(r.Uid))
	num(`,"gid":`, uint64(r.Gid))
	str(`,"origin":`, r.Origin)
	num(`,"pid":`, uint64(r.Pid))
	num(`,"missed":`, r.Missed)
	num(`,"first_seq":`, r.FirstSeq)
	num(`,"last_seq":`, r.LastSeq)
	num(`,"id":`, r.ID)
	if r.Dir != nil {
		out = append(out, `,"dir":`...)
		out = appendString(out, *r.Dir)
	}
	str(`,"name":`, r.Name)
	if c := r.Caller; c != nil {
		out = append(out, `,"caller":{"pid":`...)
		out = strconv.AppendUint(out, uint64(c.Pid), 10)
		out = append(out, `,"uid":`...)
		out = strconv.AppendUint(out, uint64(c.Uid), 10)
		out = append(out, `,"gid":`...)
		out = strconv.AppendUint(out, uint64(c.Gid), 10)
		out = append(out, '}')
	}
	return append(out, '}'), true
}

const hexDigits = "0123456789abcdef"

// appendString appends s, valid UTF-8, as a JSON string the way
// encoding/json does: ", \ and control characters escaped, and <, >, &,
// U+2028 and U+2029 as \u escapes (its HTML-safe default).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
