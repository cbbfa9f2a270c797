package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

// Limits of what a request may carry.
const (
	MaxBody    = 64 << 10 // bytes of a request body
	maxPath    = 4095     // bytes of a path (PATH_MAX - 1)
	maxTarget  = 4095     // bytes of a symlink target
	maxMajor   = 1<<12 - 1
	maxMinor   = 1<<20 - 1
	maxOwnerID = config.MaxID // 4294967295 is "no change" to chown(2)
)

// apiError is a rejected request: an HTTP status and a wire.Error.
type apiError struct {
	status int
	body   wire.Error
}

func (e *apiError) Error() string { return e.body.Code + ": " + e.body.Message }

// errf makes an error answer. A message is for people: a byte in it that
// is not UTF-8 (from a name that is not) is written \xNN, so that JSON
// carries the message as it was made.
func errf(status int, code, field, format string, a ...any) *apiError {
	return &apiError{status: status, body: wire.Error{Code: code, Field: field, Message: escapeInvalid(fmt.Sprintf(format, a...))}}
}

// escapeInvalid writes each byte of s that is not part of valid UTF-8 as
// \xNN.
func escapeInvalid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, "\\x%02x", s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func bad(code, field, format string, a ...any) *apiError {
	return errf(http.StatusBadRequest, code, field, format, a...)
}

// readBody reads at most MaxBody bytes of r's body.
func readBody(r *http.Request) ([]byte, *apiError) {
	if rb, ok := r.Body.(*readBodyOf); ok {
		return rb.b, nil // read whole by ServeHTTP already
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, bad(wire.CodeBadJSON, "", "reading the body: %v", err)
	}
	if len(b) > MaxBody {
		return nil, errf(http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge, "",
			"the body is over %d bytes", MaxBody)
	}
	return b, nil
}

// readBodyOf is a request body ServeHTTP has read, b, given to the
// handler again.
type readBodyOf struct {
	*bytes.Reader
	b []byte
}

func (*readBodyOf) Close() error { return nil }

// object is a decoded JSON object: each known field's raw value.
type object map[string]json.RawMessage

// decodeObject reads body as exactly one JSON object whose keys are all in
// known (matched exactly: encoding/json alone would match "PATH" to
// "path"), none twice, with nothing after it.
//
// A body that is valid JSON is split by splitObject, without encoding/json's
// token allocations (every request body comes here); any other is
// handed to decodeObjectSlow, whose errors name what is wrong.
func decodeObject(body []byte, known ...string) (object, *apiError) {
	if !json.Valid(body) {
		return decodeObjectSlow(body, known...)
	}
	obj := make(object, len(known))
	var e *apiError
	ok := splitObject(body, func(rawKey, val []byte) bool {
		key, found := knownKey(rawKey, known)
		if !found {
			var k string
			if json.Unmarshal(rawKey, &k) != nil {
				k = string(rawKey)
			}
			e = bad(wire.CodeUnknownField, k, "unknown field %q (this endpoint takes %s)", k, strings.Join(known, ", "))
			return false
		}
		if _, dup := obj[key]; dup {
			e = bad(wire.CodeDuplicateField, key, "field %q given twice", key)
			return false
		}
		obj[key] = val
		return true
	})
	if !ok && e == nil {
		return decodeObjectSlow(body, known...) // not an object
	}
	return obj, e
}

// knownKey returns the element of known that rawKey, a JSON string,
// spells, matched exactly (escapes decoded).
func knownKey(rawKey []byte, known []string) (string, bool) {
	inner := rawKey[1 : len(rawKey)-1]
	if bytes.IndexByte(inner, '\\') >= 0 {
		var k string
		if json.Unmarshal(rawKey, &k) != nil {
			return "", false
		}
		inner = []byte(k)
	}
	for _, k := range known {
		if string(inner) == k {
			return k, true
		}
	}
	return "", false
}

// splitObject calls f with each key (a JSON string, quotes included) and
// value (raw) of body, valid JSON, in order, until f returns false. It
// returns false if body is not an object or f stopped it.
func splitObject(body []byte, f func(key, val []byte) bool) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return true
	}
	for {
		kEnd := skipValue(body, i)
		key := body[i:kEnd]
		i = skipSpace(body, kEnd)
		i = skipSpace(body, i+1) // ':'
		vEnd := skipValue(body, i)
		if !f(key, body[i:vEnd]) {
			return false
		}
		i = skipSpace(body, vEnd)
		if body[i] == '}' {
			return true
		}
		i = skipSpace(body, i+1) // ','
	}
}

// splitArray returns the elements of raw, a valid JSON array.
func splitArray(raw []byte) [][]byte {
	i := skipSpace(raw, 1)
	if raw[i] == ']' {
		return nil
	}
	var out [][]byte
	for {
		end := skipValue(raw, i)
		out = append(out, raw[i:end])
		i = skipSpace(raw, end)
		if raw[i] == ']' {
			return out
		}
		i = skipSpace(raw, i+1) // ','
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value starting at b[i]; b is
// valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		for j := i + 1; ; j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '"':
				j = skipValue(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
	}
	j := i
	for j < len(b) && !strings.ContainsRune(" \t\n\r,}]", rune(b[j])) {
		j++
	}
	return j
}

// decodeObjectSlow is decodeObject through encoding/json's tokens: the
// errors of a body that is not one valid JSON object.
func decodeObjectSlow(body []byte, known ...string) (object, *apiError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, bad(wire.CodeBadJSON, "", "the body is not JSON: %v", jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, bad(wire.CodeBadJSON, "", "the body must be one JSON object")
	}
	obj := object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad(wire.CodeBadJSON, "", "the body is not JSON: %v", jsonErr(err))
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, bad(wire.CodeBadJSON, "", "the body is not JSON: %v", jsonErr(err))
		}
		if !contains(known, key) {
			return nil, bad(wire.CodeUnknownField, key, "unknown field %q (this endpoint takes %s)",
				key, strings.Join(known, ", "))
		}
		if _, dup := obj[key]; dup {
			return nil, bad(wire.CodeDuplicateField, key, "field %q given twice", key)
		}
		obj[key] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, bad(wire.CodeBadJSON, "", "the body is not JSON: %v", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad(wire.CodeBadJSON, "", "data after the JSON object")
	}
	return obj, nil
}

func jsonErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func contains(set []string, s string) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}

// str returns field k as a string; ok false if absent. The string must
// be exactly what the JSON says: one that encoding/json would rewrite
// (bytes that are not UTF-8, a lone surrogate escape) is invalid_utf8.
func (o object) str(k string) (string, bool, *apiError) {
	raw, ok := o[k]
	if !ok {
		return "", false, nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", false, bad(wire.CodeBadType, k, "%s must be a string, not %s", k, jsonKind(raw))
	}
	s, err := wire.ExactString(raw)
	if errors.Is(err, wire.ErrNotExact) {
		return "", false, bad(wire.CodeInvalidUTF8, k, "%s is not valid UTF-8, or has a \\u escape of a lone surrogate: JSON cannot carry it exactly", k)
	}
	if err != nil {
		return "", false, bad(wire.CodeBadJSON, k, "%s: %v", k, err)
	}
	return s, true, nil
}

// name returns field k, a name or path: a string (as str), or an array
// of its bytes (wire.Name); ok false if absent.
func (o object) name(k string) (string, bool, *apiError) {
	raw, ok := o[k]
	if !ok {
		return "", false, nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		if len(raw) > 0 && raw[0] != '"' {
			return "", false, bad(wire.CodeBadType, k, "%s must be a string or an array of bytes, not %s", k, jsonKind(raw))
		}
		s, ok, e := o.str(k)
		if e != nil && e.body.Code == wire.CodeInvalidUTF8 {
			e.body.Message += "; send it as an array of its bytes, [98,97,100,255]"
		}
		return s, ok, e
	}
	b, err := wire.ByteArray(raw)
	if err != nil {
		return "", false, bad(wire.CodeBadType, k, "%s: %v", k, err)
	}
	return string(b), true, nil
}

// int returns field k as an integer; ok false if absent. rangeErr is the
// code for a number outside [lo, hi].
func (o object) int(k string, lo, hi int64, rangeCode string) (int64, bool, *apiError) {
	raw, ok := o[k]
	if !ok {
		return 0, false, nil
	}
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false, bad(wire.CodeBadType, k, "%s must be an integer, not %s", k, jsonKind(raw))
	}
	if bytes.ContainsAny(raw, ".eE") {
		return 0, false, bad(wire.CodeBadType, k, "%s must be an integer, not %s", k, raw)
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, false, bad(rangeCode, k, "%s %s is out of range [%d, %d]", k, raw, lo, hi)
	}
	return v, true, nil
}

func jsonKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// checkPath validates a namespace path: relative to the root, clean, each
// element a valid name. root says whether "" (the root) is allowed.
func checkPath(field, p string, root bool) *apiError {
	if p == "" {
		if root {
			return nil
		}
		return bad(wire.CodeInvalidPath, field, "%s: the root is not allowed here", field)
	}
	if len(p) > maxPath {
		return bad(wire.CodePathTooLong, field, "%s is %d bytes, over %d", field, len(p), maxPath)
	}
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return bad(wire.CodeInvalidPath, field, "%s %q: paths are relative to the namespace root, without a leading or trailing slash", field, p)
	}
	for _, e := range strings.Split(p, "/") {
		switch {
		case e == "":
			return bad(wire.CodeInvalidPath, field, "%s %q has an empty element", field, p)
		case e == "." || e == "..":
			return bad(wire.CodeInvalidPath, field, "%s %q has a %q element", field, p, e)
		case strings.IndexByte(e, 0) >= 0:
			return bad(wire.CodeInvalidPath, field, "%s %q has a NUL byte", field, p)
		case len(e) > dcache.NameMax:
			return bad(wire.CodeNameTooLong, field, "%s: an element is %d bytes, over %d", field, len(e), dcache.NameMax)
		}
	}
	return nil
}

// parseMode reads an octal permission string with config.ParseMode; a
// refusal is an invalid_mode error naming the field.
func parseMode(field, s string) (uint32, *apiError) {
	m, err := config.ParseMode(s)
	if err != nil {
		return 0, bad(wire.CodeInvalidMode, field, "%s: %v", field, err)
	}
	return uint32(m), nil
}

func (o object) mode(k string) (uint32, bool, *apiError) {
	if raw, ok := o[k]; ok && len(raw) > 0 && raw[0] != '"' {
		return 0, false, bad(wire.CodeBadType, k, "%s must be an octal string such as \"0660\", not %s", k, jsonKind(raw))
	}
	s, ok, e := o.str(k)
	if e != nil || !ok {
		return 0, ok, e
	}
	m, e := parseMode(k, s)
	return m, e == nil, e
}

func (o object) path(k string, root bool) (string, *apiError) {
	p, ok, e := o.name(k)
	if e != nil {
		return "", e
	}
	if !ok {
		return "", bad(wire.CodeMissingField, k, "%s is required", k)
	}
	return p, checkPath(k, p, root)
}

// registration is a validated POST /v1/register.
type registration struct {
	Path string
	Spec dcache.Spec
}

// decodeRegister decodes and validates a register body.
func decodeRegister(body []byte) (registration, *apiError) {
	var reg registration
	o, e := decodeObject(body, "path", "type", "mode", "major", "minor", "uid", "gid", "target")
	if e != nil {
		return reg, e
	}
	if reg.Path, e = o.path("path", false); e != nil {
		return reg, e
	}
	ts, ok, e := o.str("type")
	if e != nil {
		return reg, e
	}
	if !ok {
		return reg, bad(wire.CodeMissingField, "type", "type is required (char, block, dir, symlink, fifo, socket)")
	}
	t, ok := dcache.ParseType(ts)
	if !ok || t == dcache.TypeRegular {
		return reg, bad(wire.CodeInvalidType, "type", "type %q is not one of char, block, dir, symlink, fifo, socket", ts)
	}
	reg.Spec.Type = t
	mode, ok, e := o.mode("mode")
	if e != nil {
		return reg, e
	}
	if !ok {
		switch t {
		case dcache.TypeChar, dcache.TypeBlock:
			mode = 0600
		case dcache.TypeDir:
			mode = 0755
		case dcache.TypeSymlink:
			mode = 0777
		default:
			mode = 0644
		}
	}
	reg.Spec.Mode = mode
	major, hasMajor, e := o.int("major", 0, maxMajor, wire.CodeInvalidDevice)
	if e != nil {
		return reg, e
	}
	minor, hasMinor, e := o.int("minor", 0, maxMinor, wire.CodeInvalidDevice)
	if e != nil {
		return reg, e
	}
	device := t.Device()
	switch {
	case device && !hasMajor:
		return reg, bad(wire.CodeMissingField, "major", "a %s device needs major", ts)
	case device && !hasMinor:
		return reg, bad(wire.CodeMissingField, "minor", "a %s device needs minor", ts)
	case !device && (hasMajor || hasMinor):
		return reg, bad(wire.CodeInvalidDevice, "major", "a %s has no device number", ts)
	}
	reg.Spec.Major, reg.Spec.Minor = uint32(major), uint32(minor)
	uid, _, e := o.int("uid", 0, maxOwnerID, wire.CodeInvalidOwner)
	if e != nil {
		return reg, e
	}
	gid, _, e := o.int("gid", 0, maxOwnerID, wire.CodeInvalidOwner)
	if e != nil {
		return reg, e
	}
	reg.Spec.Uid, reg.Spec.Gid = uint32(uid), uint32(gid)
	target, hasTarget, e := o.name("target")
	if e != nil {
		return reg, e
	}
	switch {
	case t == dcache.TypeSymlink && !hasTarget:
		return reg, bad(wire.CodeMissingField, "target", "a symlink needs target")
	case t != dcache.TypeSymlink && hasTarget:
		return reg, bad(wire.CodeInvalidTarget, "target", "a %s has no target", ts)
	case hasTarget && (target == "" || len(target) > maxTarget || strings.IndexByte(target, 0) >= 0):
		return reg, bad(wire.CodeInvalidTarget, "target", "target must be 1 to %d bytes without NUL", maxTarget)
	}
	reg.Spec.Target = target
	return reg, nil
}

// decodePath decodes {"path": P} (unregister).
func decodePath(body []byte) (string, *apiError) {
	o, e := decodeObject(body, "path")
	if e != nil {
		return "", e
	}
	return o.path("path", false)
}

// decodeChmod decodes {"path": P, "mode": "0660"}.
func decodeChmod(body []byte) (string, uint32, *apiError) {
	o, e := decodeObject(body, "path", "mode")
	if e != nil {
		return "", 0, e
	}
	p, e := o.path("path", true)
	if e != nil {
		return "", 0, e
	}
	m, ok, e := o.mode("mode")
	if e != nil {
		return "", 0, e
	}
	if !ok {
		return "", 0, bad(wire.CodeMissingField, "mode", "mode is required")
	}
	return p, m, nil
}

// chown is a validated chown request; a nil owner is left unchanged.
type chown struct {
	Path     string
	Uid, Gid *uint32
}

// decodeChown decodes {"path": P, "uid": U, "gid": G}, one of uid and gid
// at least.
func decodeChown(body []byte) (chown, *apiError) {
	var c chown
	o, e := decodeObject(body, "path", "uid", "gid")
	if e != nil {
		return c, e
	}
	if c.Path, e = o.path("path", true); e != nil {
		return c, e
	}
	uid, hasUid, e := o.int("uid", 0, maxOwnerID, wire.CodeInvalidOwner)
	if e != nil {
		return c, e
	}
	gid, hasGid, e := o.int("gid", 0, maxOwnerID, wire.CodeInvalidOwner)
	if e != nil {
		return c, e
	}
	if !hasUid && !hasGid {
		return c, bad(wire.CodeMissingField, "uid", "give uid, gid or both")
	}
	if hasUid {
		u := uint32(uid)
		c.Uid = &u
	}
	if hasGid {
		g := uint32(gid)
		c.Gid = &g
	}
	return c, nil
}

// done is a validated POST /v1/helper/done.
type done struct {
	ID      uint64
	Msg     string
	Regs    []registration // each validated as decodeRegister does
	ExistOK bool
}

// decodeDone decodes {"id": N, "error": "...", "register": [...],
// "exist_ok": B}. An error in a registration names it: field
// "register[I].FIELD", message "register[I]: ...".
func decodeDone(body []byte) (done, *apiError) {
	var d done
	o, e := decodeObject(body, "id", "error", "register", "exist_ok")
	if e != nil {
		return d, e
	}
	id, ok, e := o.int("id", 1, 1<<62, wire.CodeInvalidArgument)
	if e != nil {
		return d, e
	}
	if !ok {
		return d, bad(wire.CodeMissingField, "id", "id is required")
	}
	d.ID = uint64(id)
	msg, _, e := o.str("error")
	if e != nil {
		return d, e
	}
	if len(msg) > 4096 {
		return d, bad(wire.CodeInvalidArgument, "error", "error is over 4096 bytes")
	}
	d.Msg = msg
	if raw, ok := o["exist_ok"]; ok {
		switch string(raw) {
		case "true":
			d.ExistOK = true
		case "false":
		default:
			return d, bad(wire.CodeBadType, "exist_ok", "exist_ok must be true or false, not %s", jsonKind(raw))
		}
	}
	raw, ok := o["register"]
	if !ok {
		return d, nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		return d, bad(wire.CodeBadType, "register", "register must be an array of registrations, not %s", jsonKind(raw))
	}
	elems := splitArray(raw) // raw is valid JSON: decodeObject checked the body
	if len(elems) > wire.MaxDoneRegister {
		return d, bad(wire.CodeInvalidArgument, "register", "register has %d registrations, over %d", len(elems), wire.MaxDoneRegister)
	}
	d.Regs = make([]registration, 0, len(elems))
	for i, el := range elems {
		reg, e := decodeRegister(el)
		if e != nil {
			return d, inRegistration(i, e)
		}
		d.Regs = append(d.Regs, reg)
	}
	return d, nil
}

// inRegistration names registration i of a done in e.
func inRegistration(i int, e *apiError) *apiError {
	f := fmt.Sprintf("register[%d]", i)
	if e.body.Field != "" {
		f += "." + e.body.Field
	}
	e.body.Field = f
	e.body.Message = fmt.Sprintf("register[%d]: %s", i, e.body.Message)
	return e
}
